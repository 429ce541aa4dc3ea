"""Chapter 04 exercises 1 and 2: random-window batches (``get_batch``) and a stable
cross-entropy from logits (``cross_entropy``), checked against ``F.cross_entropy``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmlab.course.checks import CheckFailed, exercise, expect_close, expect_shape, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch04._common import noise, pair_of, rng
from llmlab.training import objectives

# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.training


def reference_get_batch(data: torch.Tensor, batch_size: int, block_size: int,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``data (N,)``: inputs ``x`` and targets ``y``, each
    ``(batch_size, block_size)``, ``y`` being ``x`` shifted left by one token.

    Window starts are drawn with ``torch.randint(N - block_size, (batch_size,),
    generator=generator)``: every start from 0 to ``N - block_size - 1``, the last one
    included (its target ends on the last token).

    >>> x, y = reference_get_batch(torch.arange(10), 2, 4, torch.Generator().manual_seed(0))
    >>> x
    tensor([[2, 3, 4, 5],
            [3, 4, 5, 6]])
    >>> y
    tensor([[3, 4, 5, 6],
            [4, 5, 6, 7]])
    """
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        raise ValueError(f"data must be a 1-D tensor of token ids; got "
                         f"{getattr(data, 'shape', type(data).__name__)}")
    if len(data) <= block_size:
        raise ValueError(f"need more than block_size={block_size} tokens; got {len(data)}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    positions = starts[:, None] + torch.arange(block_size)
    return data[positions], data[positions + 1]


def reference_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                            ignore_index: int = -100) -> torch.Tensor:
    """Mean of ``-log softmax(logits)[target]`` over rows whose target is not
    ``ignore_index``; llmlab.training.objectives.cross_entropy.

    >>> reference_cross_entropy(torch.tensor([[1000.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1]))
    tensor(0.3466)
    """
    return objectives.cross_entropy(logits, targets, ignore_index)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


def _batch_with(data, batch_size, block_size, generator, *, shift=1, last=0, use_gen=True):
    high = len(data) - block_size + last
    starts = (torch.randint(high, (batch_size,), generator=generator) if use_gen
              else torch.randint(high, (batch_size,)))
    x = torch.stack([data[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([data[s + shift:s + shift + block_size] for s in starts.tolist()])
    return x, y


def _batch_targets_not_shifted(data, batch_size, block_size, generator):
    return _batch_with(data, batch_size, block_size, generator, shift=0)


def _batch_misses_last_window(data, batch_size, block_size, generator):
    return _batch_with(data, batch_size, block_size, generator, last=-1)


def _batch_runs_past_the_end(data, batch_size, block_size, generator):
    return _batch_with(data, batch_size, block_size, generator, last=1)


def _batch_ignores_generator(data, batch_size, block_size, generator):
    return _batch_with(data, batch_size, block_size, generator, use_gen=False)


def _ce_naive(logits, targets, ignore_index=-100):  # exp overflows for large logits
    keep = targets != ignore_index
    probs = logits.exp() / logits.exp().sum(-1, keepdim=True)
    picked = probs[keep].gather(1, targets[keep][:, None]).squeeze(1)
    return -picked.log().mean()


def _ce_mean_over_all_rows(logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    nll = -logits.log_softmax(-1)[keep].gather(1, targets[keep][:, None]).squeeze(1)
    return nll.sum() / len(targets)


def _ce_softmax_over_batch(logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    return -logits.log_softmax(0)[keep].gather(1, targets[keep][:, None]).mean()


def _ce_sum(logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    return -logits.log_softmax(-1)[keep].gather(1, targets[keep][:, None]).sum()


# --------------------------------------------------------------------------------------------
# 1. Random-window batches


def _batch_cases() -> list[tuple[str, torch.Tensor, int, int, int]]:
    return [
        ("data = 0..9, batch_size=2, block_size=4 (the worked example)", torch.arange(10), 2,
         4, 0),
        ("data = 0..99, batch_size=8, block_size=16", torch.arange(100), 8, 16, 1),
        ("a batch of one window", torch.arange(50), 1, 7, 2),
        ("block_size = len(data) - 1: one window fits, the whole of data", torch.arange(12),
         3, 11, 3),
        ("block_size = len(data) - 2: only starts 0 and 1 fit", torch.arange(12), 64, 10, 5),
        ("real token ids (with repeats), batch_size=4, block_size=6",
         torch.randint(65, (40,), generator=rng(4)), 4, 6, 4),
    ]


@exercise("ch04.get_batch", title="random-window batches", reference=reference_get_batch,
          wrong_answers=[_batch_targets_not_shifted, _batch_misses_last_window,
                         _batch_runs_past_the_end, _batch_ignores_generator])
def check_get_batch(answer) -> None:
    require_callable(answer, "get_batch")
    for what, data, batch_size, block_size, seed in _batch_cases():
        call = f"get_batch for {what}"
        x, y = pair_of(_call(answer, call, data.clone(), batch_size, block_size, rng(seed)),
                     call, "x, y")
        expected_x, expected_y = reference_get_batch(data, batch_size, block_size, rng(seed))
        for name, got in (("x", x), ("y", y)):
            expect_shape(got, expected_x.shape, f"{call}: {name}")
            if got.dtype != data.dtype:
                raise CheckFailed(f"{call}: {name} has dtype {got.dtype}, expected {data.dtype} "
                                  "(token ids, as in data)")
        if torch.equal(x, y):
            raise CheckFailed(f"{call}: y equals x. The target of position t is the NEXT token: "
                              "y = data[s + 1 : s + 1 + block_size].")
        if not torch.equal(x[:, 1:], y[:, :-1]):
            raise CheckFailed(f"{call}: y[:, :-1] should equal x[:, 1:] (y is x shifted left "
                              f"by one token); got x[0] = {x[0].tolist()}, y[0] = "
                              f"{y[0].tolist()}.")
        if data.equal(torch.arange(len(data))):  # values are positions: check the windows
            starts = x[:, 0]
            if not torch.equal(x, starts[:, None] + torch.arange(block_size)):
                raise CheckFailed(f"{call}: each row of x must be one contiguous window "
                                  f"data[s : s + block_size]; got x[0] = {x[0].tolist()}")
            last_start = len(data) - block_size - 1
            if int(starts.max()) > last_start or int(starts.min()) < 0:
                raise CheckFailed(f"{call}: a window starts at {int(starts.max())}, but the last "
                                  f"start that leaves room for y's extra token is {last_start}.")
            if batch_size == 64 and set(starts.tolist()) != {0, 1}:
                seen = sorted(set(starts.tolist()))
                raise CheckFailed(f"{call}: 64 windows all started at {seen}"
                                  f"; starts 0 and 1 both fit. Draw from all of 0.."
                                  f"{last_start}: torch.randint(len(data) - block_size, ...) "
                                  "(randint's upper bound is exclusive).")
        if not (torch.equal(x, expected_x) and torch.equal(y, expected_y)):
            again = _call(answer, call, data.clone(), batch_size, block_size, rng(seed))
            if isinstance(again, (tuple, list)) and not torch.equal(again[0], x):
                hint = ("Two calls with generators seeded alike gave different batches: pass "
                        "generator=generator to torch.randint.")
            elif torch.equal(x, _batch_misses_last_window(data, batch_size, block_size,
                                                           rng(seed))[0]):
                hint = ("The starts are drawn from 0..len(data) - block_size - 2: randint's "
                        "upper bound is exclusive, so torch.randint(len(data) - block_size, "
                        "...) already reaches the last window.")
            else:
                hint = ("Draw the starts with torch.randint(len(data) - block_size, "
                        "(batch_size,), generator=generator), once per batch.")
            raise CheckFailed(
                f"{call}: the windows are valid but not the ones expected with this generator "
                f"(x[0] = {x[0].tolist()}, expected {expected_x[0].tolist()}). {hint}")
    x1, _ = pair_of(_call(answer, "get_batch twice with the same seed", torch.arange(1000), 4, 8,
                        rng(7)), "get_batch", "x, y")
    x2, _ = pair_of(_call(answer, "get_batch twice with the same seed", torch.arange(1000), 4, 8,
                        rng(7)), "get_batch", "x, y")
    if not torch.equal(x1, x2):
        raise CheckFailed("get_batch twice with generators seeded alike gave different batches: "
                          "pass generator=generator to torch.randint.")


# --------------------------------------------------------------------------------------------
# 2. Cross-entropy from logits


def _ce_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    mixed_targets = torch.randint(10, (16,), generator=rng(12))
    mixed_targets[::3] = -100
    pad_targets = torch.randint(1, 7, (9,), generator=rng(14))
    pad_targets[-4:] = 0
    return [
        ("logits [[2, 0, -1]], target 0", torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]),
         -100),
        ("8 rows of random logits over 5 classes", noise(10, 8, 5), torch.randint(
            5, (8,), generator=rng(11)), -100),
        ("uniform logits (the loss is ln(vocab))", torch.zeros(4, 65),
         torch.arange(4), -100),
        ("extreme logits (+-1000: exp overflows float32)",
         torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0], [-1000.0, -1000.0, 0.0]]),
         torch.tensor([0, 2, 1]), -100),
        ("large random logits (x 200)", noise(13, 6, 50, scale=200.0),
         torch.randint(50, (6,), generator=rng(13)), -100),
        ("every third target is -100 (ignored)", noise(12, 16, 10), mixed_targets, -100),
        ("one row only, not ignored among ignored ones", noise(15, 3, 4),
         torch.tensor([-100, 2, -100]), -100),
        ("ignore_index=0 (padding id 0)", noise(14, 9, 7), pad_targets, 0),
    ]


@exercise("ch04.cross_entropy", title="stable cross-entropy from logits",
          reference=reference_cross_entropy,
          wrong_answers=[_ce_naive, _ce_mean_over_all_rows, _ce_softmax_over_batch, _ce_sum])
def check_cross_entropy(answer) -> None:
    require_callable(answer, "cross_entropy")
    for what, logits, targets, ignore_index in _ce_cases():
        call = f"cross_entropy for {what}"
        got = _call(answer, call, logits.clone(), targets.clone(), ignore_index=ignore_index)
        expected = F.cross_entropy(logits, targets, ignore_index=ignore_index)
        if isinstance(got, torch.Tensor) and got.dim() != 0:
            raise CheckFailed(f"{call}: got a tensor of shape {tuple(got.shape)}, expected one "
                              "number (a 0-dim tensor): the mean over the kept rows.")
        args = (logits, targets, ignore_index)
        hint = "mean over kept rows of logsumexp(row) - row[target]."
        for wrong, wrong_hint in (
            (_ce_mean_over_all_rows, "Ignored rows must not count: divide by the number of "
             "rows whose target is not ignore_index, not by all rows."),
            (_ce_softmax_over_batch, "The softmax runs over the vocabulary (dim=-1), one "
             "distribution per row, not over the batch."),
            (_ce_sum, "Take the mean over the kept rows, not the sum."),
        ):
            if isinstance(got, torch.Tensor) and torch.allclose(got.float(), wrong(*args),
                                                                atol=1e-5):
                hint = wrong_hint
        if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
            hint = ("exp() of large logits overflows to inf. Subtract each row's maximum m "
                    "first: logsumexp(z) = m + log(sum(exp(z - m))).")
        expect_close(got, expected, call, atol=1e-4, hint=hint)
    logits = noise(16, 5, 8).requires_grad_()
    targets = torch.tensor([1, -100, 7, 0, 3])
    loss = _call(answer, "cross_entropy(...).backward()", logits, targets)
    if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
        raise CheckFailed("cross_entropy must stay differentiable: compute it with torch "
                          "operations on logits (no .item(), no .detach(), no numpy).")
    (grad,) = torch.autograd.grad(loss, logits)
    library_logits = logits.detach().clone().requires_grad_()
    F.cross_entropy(library_logits, targets).backward()
    expect_close(grad, library_logits.grad, "the gradient of your loss with respect to the "
                 "logits, compared with F.cross_entropy's", atol=1e-5,
                 hint="Per kept row it is (softmax(row) - one_hot(target)) / n_kept.")


