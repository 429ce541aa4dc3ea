"""Chapter 04 exercise 1: a stable cross-entropy from logits (``cross_entropy``), checked
against ``F.cross_entropy``; and ``reference_get_batch``, the random-window batches the lab
gives learners (no longer an exercise: its brief was its answer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmlab.course.checks import CheckFailed, exercise, expect_close, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch04._common import noise, rng
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
# 1. Cross-entropy from logits


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


