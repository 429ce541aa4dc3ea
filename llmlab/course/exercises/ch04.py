"""Chapter 04 (training) exercises: the pieces of a pretraining loop, checked against
llmlab.training and against PyTorch's own (``F.cross_entropy``, ``torch.optim.AdamW``,
``LinearLR`` + ``CosineAnnealingLR``, ``clip_grad_norm_``).

1. ``get_batch``: random windows of a token array, targets shifted by one;
2. ``cross_entropy``: the loss from logits, stable for any logit size, with ``ignore_index``;
3. ``adamw_step``: one AdamW update of one tensor, written out;
4. ``lr_at``: linear warm-up then cosine decay to ``min_lr``;
5. ``clip_grad_norm``: one factor for every gradient, from their global norm;
6. ``training_step``: the five pieces in the one order that works (train mode, zero the
   gradients, forward, loss, backward, clip, ``optimizer.step(lr)``);
7. ``mask_tokens``: BERT's masked-LM inputs and labels (15%, then 80/10/10).

Each check runs several cases, including awkward ones (a batch of one, ``block_size =
len(data) - 1``, logits that overflow a naive ``exp``, zero gradients, a warm-up of 0 steps,
steps past the end, gradients left over from an earlier backward, a model left in eval
mode), says which case failed with the expected and the actual value, and names the
classic mistake when the answer matches one.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.course.checks import CheckFailed, exercise, expect_close, expect_shape, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.model import GPT, ModelConfig
from llmlab.training import objectives, optim

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


def reference_adamw_step(
    param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
    step: int, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdamW update of ``param``; ``step`` counts updates from 1 (this one included).
    Returns new ``(param, exp_avg, exp_avg_sq)`` and leaves the inputs unchanged.

    Runs llmlab.training.optim.AdamW on a copy, so it is the same arithmetic.

    >>> p, m, v = reference_adamw_step(torch.tensor([1.0]), torch.tensor([5.0]),
    ...                                torch.zeros(1), torch.zeros(1), 1, lr=0.1,
    ...                                weight_decay=0.0)
    >>> p                                  # the first Adam step moves by lr, whatever g's size
    tensor([0.9000])
    """
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step counts updates from 1; got {step!r}")
    copy = nn.Parameter(param.detach().clone())
    copy.grad = grad.detach().clone()
    opt = optim.AdamW([copy], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    opt.state[copy] = {"step": step - 1, "exp_avg": exp_avg.detach().clone(),
                       "exp_avg_sq": exp_avg_sq.detach().clone()}
    opt.step()
    state = opt.state[copy]
    return copy.detach(), state["exp_avg"], state["exp_avg_sq"]


def reference_lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int,
                    total_steps: int) -> float:
    """Linear warm-up ``max_lr * (step + 1) / (warmup_steps + 1)``, then half a cosine from
    ``max_lr`` (at ``warmup_steps``) to ``min_lr`` (at ``total_steps``), then ``min_lr``.

    >>> [round(reference_lr_at(s, 1.0, 0.0, 3, 7), 3) for s in range(9)]
    [0.25, 0.5, 0.75, 1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """
    return optim.WarmupCosine(max_lr, min_lr, warmup_steps, total_steps)(step)


def reference_clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float
                             ) -> torch.Tensor:
    """Scale every ``.grad`` by one factor so that their global L2 norm is at most
    ``max_norm``; return the norm before clipping (llmlab.training.optim.clip_grad_norm).

    >>> a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    >>> a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    >>> reference_clip_grad_norm([a, b], 1.0)
    tensor(5.)
    """
    return optim.clip_grad_norm(parameters, max_norm)


def reference_training_step(model: nn.Module, optimizer: Any, inputs: torch.Tensor,
                            targets: torch.Tensor, lr: float, max_norm: float = 1.0
                            ) -> tuple[float, float]:
    """One optimizer step of a causal LM on one batch. Returns ``(loss, norm)`` as Python
    floats: the batch's loss and the global gradient norm before clipping.

    The order: train mode (dropout on), zero the gradients, forward, cross-entropy of
    ``model(inputs) (B, T, vocab)`` against ``targets (B, T)`` (already shifted by one;
    ``-100`` ignored), backward, clip by global norm, ``optimizer.step(lr)``. ``optimizer``
    is anything whose ``step(lr)`` updates the parameters from their ``.grad``, like the
    lab's ``ScratchAdamW``.

    >>> model = nn.Embedding(4, 4)        # a bigram model: logits (B, T, 4) from ids (B, T)
    >>> _ = nn.init.zeros_(model.weight)  # uniform predictions: the loss is ln 4
    >>> class SGD:
    ...     def step(self, lr):
    ...         with torch.no_grad():
    ...             model.weight -= lr * model.weight.grad
    >>> loss, norm = reference_training_step(model, SGD(), torch.tensor([[0, 1]]),
    ...                                      torch.tensor([[1, 2]]), lr=1.0)
    >>> round(loss, 4), round(norm, 4)
    (1.3863, 0.6124)
    """
    if not (isinstance(inputs, torch.Tensor) and isinstance(targets, torch.Tensor)
            and inputs.dim() == 2 and inputs.shape == targets.shape):
        raise ValueError(f"expected inputs and targets of one shape (batch, time); got "
                         f"{getattr(inputs, 'shape', type(inputs).__name__)} and "
                         f"{getattr(targets, 'shape', type(targets).__name__)}")
    model.train()  # the model may come from an evaluation, with dropout off
    model.zero_grad(set_to_none=True)
    loss = objectives.causal_lm_loss(model(inputs), targets)
    loss.backward()
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    optimizer.step(lr)
    return loss.item(), float(norm)


def reference_mask_tokens(
    ids: torch.Tensor, vocab_size: int, mask_id: int, generator: torch.Generator,
    mlm_probability: float = 0.15, special_ids: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: choose each non-special token with ``mlm_probability``; a chosen token
    becomes ``mask_id`` (80%), a random id (10%) or stays (10%). Labels: the original id
    where chosen, -100 elsewhere (llmlab.training.objectives.mask_tokens).

    >>> ids = torch.tensor([[1, 7, 8, 9, 2]])
    >>> inputs, labels = reference_mask_tokens(ids, 10, mask_id=3, special_ids=[1, 2],
    ...     mlm_probability=0.5, generator=torch.Generator().manual_seed(0))
    >>> labels
    tensor([[-100, -100,    8,    9, -100]])
    """
    return objectives.mask_tokens(ids, vocab_size, mask_id, generator, mlm_probability,
                                  special_ids)


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


def _adamw_with(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999), eps=1e-8,
                weight_decay=0.01, *, coupled=False, bias_correction=True, eps_inside=False,
                decay_without_lr=False):
    beta1, beta2 = betas
    if coupled:  # L2 regularisation: the decay goes through Adam's normalisation
        grad = grad + weight_decay * param
    elif decay_without_lr:
        param = param * (1 - weight_decay)
    else:
        param = param * (1 - lr * weight_decay)
    m = beta1 * exp_avg + (1 - beta1) * grad
    v = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1**step) if bias_correction else m
    v_hat = v / (1 - beta2**step) if bias_correction else v
    denom = (v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps
    return param - lr * m_hat / denom, m, v


def _adamw_coupled_l2(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999),
                      eps=1e-8, weight_decay=0.01):
    return _adamw_with(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay,
                       coupled=True)


def _adamw_no_bias_correction(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999),
                              eps=1e-8, weight_decay=0.01):
    return _adamw_with(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay,
                       bias_correction=False)


def _adamw_eps_inside_sqrt(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999),
                           eps=1e-8, weight_decay=0.01):
    return _adamw_with(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay,
                       eps_inside=True)


def _adamw_decay_without_lr(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.01):
    return _adamw_with(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay,
                       decay_without_lr=True)


def _lr_with(step, max_lr, min_lr, warmup_steps, total_steps, *, use_min=True, clamp=True,
             warm_from_zero=False, decay_from_zero=False):
    if step < warmup_steps:
        return max_lr * (step if warm_from_zero else step + 1) / (
            warmup_steps if warm_from_zero else warmup_steps + 1)
    if decay_from_zero:
        progress = step / total_steps
    else:
        progress = (step - warmup_steps) / (total_steps - warmup_steps)
    if clamp:
        progress = min(progress, 1.0)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return min_lr + (max_lr - min_lr) * cosine if use_min else max_lr * cosine


def _lr_ignores_min_lr(step, max_lr, min_lr, warmup_steps, total_steps):
    return _lr_with(step, max_lr, min_lr, warmup_steps, total_steps, use_min=False)


def _lr_not_clamped(step, max_lr, min_lr, warmup_steps, total_steps):
    return _lr_with(step, max_lr, min_lr, warmup_steps, total_steps, clamp=False)


def _lr_warmup_from_zero(step, max_lr, min_lr, warmup_steps, total_steps):
    return _lr_with(step, max_lr, min_lr, warmup_steps, total_steps, warm_from_zero=True)


def _lr_decay_counts_warmup(step, max_lr, min_lr, warmup_steps, total_steps):
    return _lr_with(step, max_lr, min_lr, warmup_steps, total_steps, decay_from_zero=True)


def _clip_each_tensor(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.stack([g.norm() for g in grads]).norm() if grads else torch.tensor(0.0)
    for g in grads:
        g.mul_((max_norm / (g.norm() + 1e-6)).clamp(max=1.0))
    return total


def _clip_always_rescales(parameters, max_norm):  # also scales small gradients up
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.stack([g.norm() for g in grads]).norm()
    for g in grads:
        g.mul_(max_norm / (total + 1e-6))
    return total


def _clip_returns_clipped_norm(parameters, max_norm):
    parameters = list(parameters)
    reference_clip_grad_norm(parameters, max_norm)
    return torch.stack([p.grad.norm() for p in parameters if p.grad is not None]).norm()


def _clip_divides_by_zero(parameters, max_norm):  # no guard: 0 / 0 = NaN on zero gradients
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.stack([g.norm() for g in grads]).norm()
    scale = min(max_norm / total.item(), 1.0) if total > 0 else float("nan")
    for g in grads:
        g.mul_(scale)
    return total


def _mask_with(ids, vocab_size, mask_id, generator, mlm_probability=0.15, special_ids=(), *,
               always_mask=False, labels_everywhere=False, mask_specials=False,
               use_gen=True):
    gen = generator if use_gen else None
    special = torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype))
    chosen = torch.rand(ids.shape, generator=gen) < mlm_probability
    if not mask_specials:
        chosen &= ~special
    draw = torch.rand(ids.shape, generator=gen)
    to_mask = chosen & ((draw < 0.8) | always_mask)
    to_random = chosen & ~to_mask & (draw < 0.9)
    random_ids = torch.randint(vocab_size, ids.shape, generator=gen, dtype=ids.dtype)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = ids.clone() if labels_everywhere else torch.where(chosen, ids, -100)
    return inputs, labels


def _mask_always_mask_token(ids, vocab_size, mask_id, generator, mlm_probability=0.15,
                            special_ids=()):
    return _mask_with(ids, vocab_size, mask_id, generator, mlm_probability, special_ids,
                      always_mask=True)


def _mask_labels_everywhere(ids, vocab_size, mask_id, generator, mlm_probability=0.15,
                            special_ids=()):
    return _mask_with(ids, vocab_size, mask_id, generator, mlm_probability, special_ids,
                      labels_everywhere=True)


def _mask_special_tokens_too(ids, vocab_size, mask_id, generator, mlm_probability=0.15,
                             special_ids=()):
    return _mask_with(ids, vocab_size, mask_id, generator, mlm_probability, special_ids,
                      mask_specials=True)


def _mask_ignores_generator(ids, vocab_size, mask_id, generator, mlm_probability=0.15,
                            special_ids=()):
    return _mask_with(ids, vocab_size, mask_id, generator, mlm_probability, special_ids,
                      use_gen=False)


def _lm_loss(model, inputs, targets):
    return objectives.causal_lm_loss(model(inputs), targets)


def _step_without_zero_grad(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.train()
    loss = _lm_loss(model, inputs, targets)
    loss.backward()  # adds to whatever .grad already held
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    optimizer.step(lr)
    return loss.item(), float(norm)


def _step_zeroes_after_backward(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.train()
    loss = _lm_loss(model, inputs, targets)
    loss.backward()
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    model.zero_grad(set_to_none=True)
    optimizer.step(lr)
    return loss.item(), float(norm)


def _step_clips_after_update(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.train()
    model.zero_grad(set_to_none=True)
    loss = _lm_loss(model, inputs, targets)
    loss.backward()
    optimizer.step(lr)
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    return loss.item(), float(norm)


def _step_without_clipping(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.train()
    model.zero_grad(set_to_none=True)
    loss = _lm_loss(model, inputs, targets)
    loss.backward()
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    optimizer.step(lr)
    return loss.item(), float(norm)


def _step_updates_before_backward(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.train()
    model.zero_grad(set_to_none=True)
    loss = _lm_loss(model, inputs, targets)
    optimizer.step(lr)
    loss.backward()
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    return loss.item(), float(norm)


def _step_returns_loss_tensor(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.train()
    model.zero_grad(set_to_none=True)
    loss = _lm_loss(model, inputs, targets)
    loss.backward()
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    optimizer.step(lr)
    return loss, float(norm)


def _step_returns_loss_after_update(model, optimizer, inputs, targets, lr, max_norm=1.0):
    norm = reference_training_step(model, optimizer, inputs, targets, lr, max_norm)[1]
    with torch.no_grad():
        return _lm_loss(model, inputs, targets).item(), norm


def _step_without_train_mode(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.zero_grad(set_to_none=True)  # whatever mode the model came in, it stays in
    loss = _lm_loss(model, inputs, targets)
    loss.backward()
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    optimizer.step(lr)
    return loss.item(), float(norm)


def _step_in_eval_mode(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.eval()  # "for a deterministic loss": dropout is off while training
    return _step_without_train_mode(model, optimizer, inputs, targets, lr, max_norm)


def _step_shifts_targets_again(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(inputs)
    loss = objectives.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten())
    loss.backward()
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    optimizer.step(lr)
    return loss.item(), float(norm)


def _step_targets_are_inputs(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.train()
    return _step_without_train_mode(model, optimizer, inputs, inputs, lr, max_norm)


def _step_averages_over_ignored(model, optimizer, inputs, targets, lr, max_norm=1.0):
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(inputs).flatten(0, 1)
    loss = F.cross_entropy(logits, targets.flatten(), reduction="none").mean()  # 0 per -100
    loss.backward()
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    optimizer.step(lr)
    return loss.item(), float(norm)

# --------------------------------------------------------------------------------------------
# Helpers for the checks



def _pair(got: Any, what: str, names: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(got, (tuple, list)) and len(got) == 2
            and all(isinstance(t, torch.Tensor) for t in got)):
        raise CheckFailed(f"{what} returned {type(got).__name__}, expected a tuple of two "
                          f"tensors ({names})")
    return got[0], got[1]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=_gen(seed))


def _as_float(got: Any, what: str) -> float:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        return float(got)
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return float(got)
    raise CheckFailed(f"{what} returned {type(got).__name__}, expected a number")


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
         torch.randint(65, (40,), generator=_gen(4)), 4, 6, 4),
    ]


@exercise("ch04.get_batch", title="random-window batches", reference=reference_get_batch,
          wrong_answers=[_batch_targets_not_shifted, _batch_misses_last_window,
                         _batch_runs_past_the_end, _batch_ignores_generator])
def check_get_batch(answer) -> None:
    require_callable(answer, "get_batch")
    for what, data, batch_size, block_size, seed in _batch_cases():
        call = f"get_batch for {what}"
        x, y = _pair(_call(answer, call, data.clone(), batch_size, block_size, _gen(seed)),
                     call, "x, y")
        expected_x, expected_y = reference_get_batch(data, batch_size, block_size, _gen(seed))
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
            again = _call(answer, call, data.clone(), batch_size, block_size, _gen(seed))
            if isinstance(again, (tuple, list)) and not torch.equal(again[0], x):
                hint = ("Two calls with generators seeded alike gave different batches: pass "
                        "generator=generator to torch.randint.")
            elif torch.equal(x, _batch_misses_last_window(data, batch_size, block_size,
                                                           _gen(seed))[0]):
                hint = ("The starts are drawn from 0..len(data) - block_size - 2: randint's "
                        "upper bound is exclusive, so torch.randint(len(data) - block_size, "
                        "...) already reaches the last window.")
            else:
                hint = ("Draw the starts with torch.randint(len(data) - block_size, "
                        "(batch_size,), generator=generator), once per batch.")
            raise CheckFailed(
                f"{call}: the windows are valid but not the ones expected with this generator "
                f"(x[0] = {x[0].tolist()}, expected {expected_x[0].tolist()}). {hint}")
    x1, _ = _pair(_call(answer, "get_batch twice with the same seed", torch.arange(1000), 4, 8,
                        _gen(7)), "get_batch", "x, y")
    x2, _ = _pair(_call(answer, "get_batch twice with the same seed", torch.arange(1000), 4, 8,
                        _gen(7)), "get_batch", "x, y")
    if not torch.equal(x1, x2):
        raise CheckFailed("get_batch twice with generators seeded alike gave different batches: "
                          "pass generator=generator to torch.randint.")


# --------------------------------------------------------------------------------------------
# 2. Cross-entropy from logits


def _ce_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    mixed_targets = torch.randint(10, (16,), generator=_gen(12))
    mixed_targets[::3] = -100
    pad_targets = torch.randint(1, 7, (9,), generator=_gen(14))
    pad_targets[-4:] = 0
    return [
        ("logits [[2, 0, -1]], target 0", torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0]),
         -100),
        ("8 rows of random logits over 5 classes", _randn(10, 8, 5), torch.randint(
            5, (8,), generator=_gen(11)), -100),
        ("uniform logits (the loss is ln(vocab))", torch.zeros(4, 65),
         torch.arange(4), -100),
        ("extreme logits (+-1000: exp overflows float32)",
         torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0], [-1000.0, -1000.0, 0.0]]),
         torch.tensor([0, 2, 1]), -100),
        ("large random logits (x 200)", _randn(13, 6, 50, scale=200.0),
         torch.randint(50, (6,), generator=_gen(13)), -100),
        ("every third target is -100 (ignored)", _randn(12, 16, 10), mixed_targets, -100),
        ("one row only, not ignored among ignored ones", _randn(15, 3, 4),
         torch.tensor([-100, 2, -100]), -100),
        ("ignore_index=0 (padding id 0)", _randn(14, 9, 7), pad_targets, 0),
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
    logits = _randn(16, 5, 8).requires_grad_()
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


# --------------------------------------------------------------------------------------------
# 3. One AdamW step


def _adam_cases() -> list[tuple[str, torch.Tensor, list[torch.Tensor], dict[str, Any]]]:
    grads = [_randn(20 + i, 3, 4) for i in range(6)]
    return [
        ("no weight decay, 6 steps of random gradients", _randn(19, 3, 4), grads,
         dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)),
        ("weight_decay=0.1, lr=0.05, betas=(0.8, 0.95)", _randn(26, 3, 4), grads,
         dict(lr=0.05, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1)),
        ("weight_decay=0.5 on large weights (x 10)", _randn(27, 5, scale=10.0),
         [_randn(28 + i, 5, scale=0.1) for i in range(5)],
         dict(lr=0.02, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5)),
        ("zero gradients (only the decay moves the weights)", _randn(33, 4),
         [torch.zeros(4)] * 4, dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.2)),
        ("tiny gradients (1e-6): eps matters", _randn(34, 6),
         [_randn(35 + i, 6, scale=1e-6) for i in range(4)],
         dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)),
        ("a scalar parameter, one step", torch.tensor(2.0), [torch.tensor(-3.0)],
         dict(lr=0.5, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)),
    ]


def _run_adam(step_fn: Callable[..., Any], init: torch.Tensor, grads: list[torch.Tensor],
              hp: dict[str, Any], what: str) -> list[torch.Tensor]:
    param, m, v = init.clone(), torch.zeros_like(init), torch.zeros_like(init)
    history = []
    for t, g in enumerate(grads, start=1):
        call = f"{what}, step {t}"
        got = _call(step_fn, call, param.clone(), g.clone(), m.clone(), v.clone(), t, **hp)
        if not (isinstance(got, (tuple, list)) and len(got) == 3
                and all(isinstance(x, torch.Tensor) for x in got)):
            raise CheckFailed(f"{call}: returned {type(got).__name__}, expected a tuple of "
                              "three tensors (param, exp_avg, exp_avg_sq)")
        param, m, v = (x.detach() for x in got)
        history.append(param)
    return history


def _torch_adamw(init: torch.Tensor, grads: list[torch.Tensor], hp: dict[str, Any]
                 ) -> list[torch.Tensor]:
    param = nn.Parameter(init.clone())
    opt = torch.optim.AdamW([param], **hp)
    history = []
    for g in grads:
        param.grad = g.clone()
        opt.step()
        history.append(param.detach().clone())
    return history


_ADAM_MISTAKES = [
    (_adamw_coupled_l2, "That is Adam with L2 regularisation (weight_decay * param added to "
     "the gradient, then normalised away by sqrt(v)). AdamW decays the weights directly: "
     "param = param * (1 - lr * weight_decay), apart from the Adam update."),
    (_adamw_no_bias_correction, "Divide by the bias corrections: m_hat = m / (1 - beta1**step), "
     "v_hat = v / (1 - beta2**step); m and v start at 0 and are too small in early steps."),
    (_adamw_eps_inside_sqrt, "eps goes outside the square root: sqrt(v_hat) + eps."),
    (_adamw_decay_without_lr, "The decay is scaled by the learning rate: "
     "param * (1 - lr * weight_decay)."),
]


@exercise("ch04.adamw_step", title="one AdamW step, written out",
          reference=reference_adamw_step,
          wrong_answers=[fn for fn, _ in _ADAM_MISTAKES])
def check_adamw_step(answer) -> None:
    require_callable(answer, "adamw_step")
    for what, init, grads, hp in _adam_cases():
        got = _run_adam(answer, init, grads, hp, f"adamw_step for {what}")
        expected = _torch_adamw(init, grads, hp)
        hint = "Compare with the four lines of the brief: decay, moments, bias correction, update."
        for wrong, wrong_hint in _ADAM_MISTAKES:
            mistaken = _run_adam(wrong, init, grads, hp, "mistake")
            matches = all(torch.allclose(a.float(), b, atol=1e-6)
                          for a, b in zip(got, mistaken, strict=True))
            if matches and not torch.allclose(mistaken[-1], expected[-1], atol=1e-6):
                hint = wrong_hint
                break
        for t, (mine, theirs) in enumerate(zip(got, expected, strict=True), start=1):
            expect_close(mine, theirs, f"adamw_step for {what}: the parameter after step {t}, "
                         "compared with torch.optim.AdamW", atol=1e-6, rtol=1e-5, hint=hint)


# --------------------------------------------------------------------------------------------
# 4. Warm-up + cosine learning rate


_LR_CASES = [
    ("max_lr=1, min_lr=0, warmup_steps=3, total_steps=7 (the worked example)", 1.0, 0.0, 3, 7),
    ("max_lr=1e-3, min_lr=1e-4, warmup_steps=10, total_steps=60", 1e-3, 1e-4, 10, 60),
    ("no warm-up (warmup_steps=0)", 6e-4, 6e-5, 0, 20),
    ("warm-up to the last step (warmup_steps=total_steps - 1)", 0.1, 0.01, 9, 10),
    ("min_lr = max_lr (a constant rate after warm-up)", 3e-4, 3e-4, 2, 8),
]


@exercise("ch04.lr_at", title="the warm-up + cosine learning rate", reference=reference_lr_at,
          wrong_answers=[_lr_ignores_min_lr, _lr_not_clamped, _lr_warmup_from_zero,
                         _lr_decay_counts_warmup])
def check_lr_at(answer) -> None:
    require_callable(answer, "lr_at")
    for what, max_lr, min_lr, warmup, total in _LR_CASES:
        for step in range(total + 6):  # a few steps past the end too
            args = (step, max_lr, min_lr, warmup, total)
            call = f"lr_at(step={step}, ...) for {what}"
            got = _as_float(_call(answer, call, *args), call)
            expected = reference_lr_at(*args)
            if math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-15):
                continue
            if step < warmup:
                hint = (f"During warm-up the rate is max_lr * (step + 1) / (warmup_steps + 1): "
                        f"never 0, and max_lr is reached at step warmup_steps={warmup}.")
            elif step > total:
                hint = "Past total_steps the rate stays at min_lr: clamp the progress to 1."
            elif step == total and math.isclose(got, 0.0, abs_tol=1e-15) and min_lr > 0:
                hint = "The cosine must end at min_lr, not 0: min_lr + (max_lr - min_lr) * c."
            elif math.isclose(got, _lr_decay_counts_warmup(*args), rel_tol=1e-9):
                hint = ("The decay starts after the warm-up: progress = (step - warmup_steps) / "
                        "(total_steps - warmup_steps).")
            elif math.isclose(got, _lr_ignores_min_lr(*args), rel_tol=1e-9):
                hint = "The cosine must end at min_lr, not 0: min_lr + (max_lr - min_lr) * c."
            else:
                hint = ("After warm-up: min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(pi * "
                        "progress)), progress = (step - warmup_steps) / (total_steps - "
                        "warmup_steps), at most 1.")
            raise CheckFailed(f"{call}: got {got:.6g}, expected {expected:.6g}. {hint}")


# --------------------------------------------------------------------------------------------
# 5. Clipping by global norm


def _clip_cases() -> list[tuple[str, list[torch.Tensor | None], float, bool]]:
    return [
        ("gradients (3,) and (4,), max_norm=1 (the worked example)",
         [torch.tensor([3.0]), torch.tensor([4.0])], 1.0, False),
        ("a norm below max_norm (nothing changes)", [_randn(40, 3, 4, scale=0.1),
                                                     _randn(41, 5, scale=0.1)], 10.0, False),
        ("one large and one small gradient: one factor for both",
         [_randn(42, 8, 8, scale=5.0), _randn(43, 8, scale=0.01)], 1.0, False),
        ("a parameter without a gradient (grad is None)",
         [_randn(44, 4, 4), None, _randn(45, 4)], 0.5, False),
        ("all gradients zero", [torch.zeros(3, 3), torch.zeros(3)], 1.0, False),
        ("a single tensor", [_randn(46, 10, scale=3.0)], 2.0, False),
        ("the parameters given as a generator, as model.parameters() is",
         [_randn(47, 6, 6), _randn(48, 6)], 0.25, True),
    ]


def _params_with(grads: list[torch.Tensor | None]) -> list[nn.Parameter]:
    params = []
    for g in grads:
        p = nn.Parameter(torch.zeros(g.shape if g is not None else (2,)))
        p.grad = None if g is None else g.clone()
        params.append(p)
    return params


_CLIP_MISTAKES = [
    (_clip_each_tensor, "Clip by the GLOBAL norm: one norm over every gradient together "
     "(sqrt of the sum of all squares) and one factor for all; clipping each tensor "
     "separately bends the update's direction."),
    (_clip_always_rescales, "Only scale down: the factor is min(1, max_norm / norm); a small "
     "gradient stays as it is."),
    (_clip_returns_clipped_norm, "Return the total norm from BEFORE clipping (as "
     "clip_grad_norm_ does): it is what you log to spot spikes."),
]


@exercise("ch04.clip_grad_norm", title="gradient clipping by global norm",
          reference=reference_clip_grad_norm,
          wrong_answers=[_clip_each_tensor, _clip_always_rescales, _clip_returns_clipped_norm,
                         _clip_divides_by_zero])
def check_clip_grad_norm(answer) -> None:
    require_callable(answer, "clip_grad_norm")
    for what, grads, max_norm, as_generator in _clip_cases():
        call = f"clip_grad_norm for {what}"
        mine, theirs = _params_with(grads), _params_with(grads)
        given = (p for p in mine) if as_generator else list(mine)
        got_norm = _call(answer, call, given, max_norm)
        expected_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
        hint = "Scale every gradient by min(1, max_norm / (total_norm + 1e-6))."
        for wrong, wrong_hint in _CLIP_MISTAKES:
            copies = _params_with(grads)
            try:
                wrong_norm = wrong(copies, max_norm)
            except Exception:
                continue
            same_grads = all((a.grad is None) == (b.grad is None) and
                             (a.grad is None or torch.allclose(a.grad, b.grad, atol=1e-6))
                             for a, b in zip(mine, copies, strict=True))
            if same_grads and isinstance(got_norm, torch.Tensor | float) and math.isclose(
                    float(got_norm), float(wrong_norm), rel_tol=1e-5):
                hint = wrong_hint
                break
        for index, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            if b.grad is None:
                if a.grad is not None:
                    raise CheckFailed(f"{call}: parameter {index} had no gradient and should "
                                      "keep none; skip parameters whose .grad is None.")
                continue
            if a.grad is not None and torch.isnan(a.grad).any():
                hint = ("With zero gradients the norm is 0: guard the division (max_norm / "
                        "(norm + 1e-6)) so nothing becomes NaN.")
            expect_close(a.grad, b.grad, f"{call}: the gradient of parameter {index} after "
                         "clipping, compared with torch.nn.utils.clip_grad_norm_", atol=1e-6,
                         hint=hint)
        got = _as_float(got_norm, call)
        if not math.isclose(got, float(expected_norm), rel_tol=1e-5, abs_tol=1e-7):
            raise CheckFailed(f"{call}: returned norm {got:.6g}, expected "
                              f"{float(expected_norm):.6g} (the total norm before clipping). "
                              f"{hint}")


# --------------------------------------------------------------------------------------------
# 6. The training step


_STEP_VOCAB = 17
_STEP_CASES = [  # (what, seed, steps, max_norm, setup)
    ("two steps of a fresh model, max_norm=0.5 (the gradients get clipped)", 0, 2, 0.5, ""),
    ("a model whose .grad still holds the gradients of an earlier backward", 1, 1, 0.5,
     "stale"),
    ("a model that arrives in eval mode, as after a validation pass", 2, 1, 0.5, "eval"),
    ("targets with ignored positions (-100, as for padding)", 3, 1, 0.5, "padded"),
    ("two steps with max_norm=10 (nothing to clip)", 4, 2, 10.0, ""),
]
_STEP_ORDER = ("model.train(), zero the gradients, logits = model(inputs), loss, "
               "loss.backward(), clip_grad_norm, optimizer.step(lr)")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator (dropout draws from it), leaving the caller's as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _step_model(seed: int) -> GPT:
    """A tiny GPT with dropout, so that train and eval mode give different losses."""
    with _seeded(seed):
        return GPT(ModelConfig(vocab_size=_STEP_VOCAB, context_length=8, n_layer=2, n_head=2,
                               d_model=16, dropout=0.1))


def _step_batch(seed: int, padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(_STEP_VOCAB, (3, 9), generator=_gen(seed))
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].clone()
    if padded:
        targets[0, 5:] = -100
        targets[2, 2:] = -100
    return inputs, targets


def _prepare(model: nn.Module, setup: str, seed: int) -> None:
    if setup == "stale":  # a backward nobody zeroed after, e.g. a gradient-norm probe
        inputs, targets = _step_batch(seed + 100, padded=False)
        with _seeded(seed + 100):
            _lm_loss(model, inputs, targets).backward()
    elif setup == "eval":
        model.eval()


class _RecordingOptimizer:
    """What the check hands to ``training_step``: torch's SGD with momentum behind the lab's
    interface (``step(lr)``, ``zero_grad()``), noting the rate and the gradients each step
    saw. SGD's update is linear in the gradients, so rounding differences stay as small as
    they are; Adam divides by sqrt(v) and would magnify them where a gradient is near 0."""

    def __init__(self, model: nn.Module) -> None:
        self.parameters = list(model.parameters())
        self.sgd = torch.optim.SGD(self.parameters, lr=0.0, momentum=0.9)
        self.seen: list[tuple[Any, list[torch.Tensor | None]]] = []

    def step(self, lr: float) -> None:
        self.seen.append((lr, [None if p.grad is None else p.grad.detach().clone()
                               for p in self.parameters]))
        for group in self.sgd.param_groups:
            group["lr"] = float(lr)
        self.sgd.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none=set_to_none)


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
            for p in model.parameters()]


def _global_norm(grads: Iterable[torch.Tensor | None]) -> float:
    return math.sqrt(sum(float(g.float().pow(2).sum()) for g in grads if g is not None))


def _fresh_pass(start: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The logits and the unclipped gradients of this batch alone, on a copy of ``start``."""
    probe = copy.deepcopy(start).train()
    probe.zero_grad(set_to_none=True)
    with _seeded(seed):
        logits = probe(inputs)
    objectives.causal_lm_loss(logits, targets).backward()
    return logits.detach(), _grads(probe)


def _step_result(got: Any, call: str) -> tuple[float, float]:
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise CheckFailed(f"{call}: returned {type(got).__name__}, expected a tuple (loss, "
                          "norm) of two Python floats")
    for name, value in zip(("loss", "norm"), got, strict=True):
        if isinstance(value, torch.Tensor) and value.requires_grad:
            raise CheckFailed(
                f"{call}: the {name} was returned as a tensor still attached to the autograd "
                f"graph. Return {name}.item(): a stored tensor keeps its whole graph (every "
                "activation of the forward pass) alive, so a list of them fills the memory.")
        if isinstance(value, torch.Tensor):
            raise CheckFailed(f"{call}: the {name} was returned as a tensor; return a Python "
                              f"float ({name}.item()), the number you log and plot.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckFailed(f"{call}: the {name} is a {type(value).__name__}, expected a "
                              "Python float")
    return float(got[0]), float(got[1])


def _check_calls(call: str, seen: list, modes: list[bool], lr: float,
                 arrived_training: bool) -> None:
    if not modes:
        raise CheckFailed(f"{call}: the model was never called: logits = model(inputs).")
    if not modes[0]:
        cause = ("your step switched the model to eval mode" if arrived_training else
                 "the model came in eval mode, as after a validation pass, and stayed in it")
        raise CheckFailed(f"{call}: the forward pass ran in eval mode, so dropout was off: "
                          f"{cause}. Start the step with model.train(); eval mode is for "
                          "evaluation and generation.")
    if len(seen) != 1:
        raise CheckFailed(f"{call}: optimizer.step(lr) was called {len(seen)} times; a "
                          "training step makes exactly one update.")
    if seen[0][0] != lr:
        raise CheckFailed(f"{call}: optimizer.step got lr={seen[0][0]!r}, expected the lr "
                          f"argument ({lr:g}).")


def _check_loss(call: str, loss: float, expected: float, n_forward: int,
                logits: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    if math.isclose(loss, expected, rel_tol=1e-5, abs_tol=1e-6):
        return
    hint = ("loss = cross_entropy(logits.flatten(0, 1), targets.flatten()), from the forward "
            "pass before the update.")
    candidates = [
        (objectives.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten()),
         "The targets were shifted a second time: get_batch already did, so logits[:, t] "
         "predicts targets[:, t]. Flatten both, with no slicing."),
        (objectives.causal_lm_loss(logits, inputs), "The loss compares the logits with the "
         "inputs, so the model learns to copy its input: compare them with targets."),
        (F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").mean(),
         "Positions whose target is -100 (padding) counted in the mean: average over the "
         "kept positions only, as cross_entropy with ignore_index does."),
    ]
    for candidate, candidate_hint in candidates:
        if math.isclose(loss, float(candidate), rel_tol=1e-5, abs_tol=1e-6):
            hint = candidate_hint
    if n_forward > 1:
        hint = (f"The model ran {n_forward} times: return the loss of the forward pass the "
                "gradients came from (loss.item() before optimizer.step), not one computed "
                "again after the update.")
    raise CheckFailed(f"{call}: returned loss {loss:.6g}, expected {expected:.6g}. {hint}")


def _check_gradients(call: str, model: nn.Module, seen: list[torch.Tensor | None],
                     expected: list[torch.Tensor | None], left_over: list[torch.Tensor],
                     fresh: list[torch.Tensor], max_norm: float) -> None:
    """The gradients ``optimizer.step`` saw must be this batch's alone, clipped."""
    if all(g is None or not g.any() for g in seen):
        if any(g.any() for g in _grads(model)):
            raise CheckFailed(f"{call}: when optimizer.step ran there were no gradients yet, "
                              "and there were after your step: call loss.backward() before "
                              "optimizer.step(lr), or the update ignores this batch.")
        raise CheckFailed(f"{call}: when optimizer.step ran every gradient was None or zero: "
                          "they were zeroed between loss.backward() and optimizer.step. Zero "
                          "them at the start of the step, before the forward pass.")
    seen_norm = _global_norm(seen)
    if seen_norm > max_norm * (1 + 1e-4):
        after = _global_norm(_grads(model))
        why = ("clip_grad_norm ran after optimizer.step, so the update used the unclipped "
               "gradients" if after <= max_norm * (1 + 1e-4) else "they were not clipped")
        raise CheckFailed(f"{call}: optimizer.step saw gradients with a global norm of "
                          f"{seen_norm:.4g}, above max_norm={max_norm:g}: {why}. Call "
                          "clip_grad_norm(model.parameters(), max_norm) after loss.backward() "
                          "and before optimizer.step(lr).")
    hint = f"optimizer.step must see this batch's gradients, clipped: {_STEP_ORDER}."
    if any(g.any() for g in left_over):
        summed = [nn.Parameter(torch.zeros_like(g)) for g in fresh]
        for p, old, new in zip(summed, left_over, fresh, strict=True):
            p.grad = old + new
        optim.clip_grad_norm(summed, max_norm)
        if all(torch.allclose(mine, p.grad, atol=1e-6) for mine, p in
               zip(seen, summed, strict=True) if mine is not None):
            hint = ("The gradients left over from an earlier backward were added to this "
                    "batch's (backward accumulates into .grad): zero them at the start of the "
                    "step, model.zero_grad(set_to_none=True), before loss.backward().")
    names = [name for name, _ in model.named_parameters()]
    for name, mine, theirs in zip(names, seen, expected, strict=True):
        expect_close(torch.zeros_like(theirs) if mine is None else mine, theirs,
                     f"{call}: the gradient of {name} that optimizer.step saw", atol=1e-6,
                     hint=hint)


def _check_step_case(answer: Callable[..., Any], what: str, seed: int, n_steps: int,
                     max_norm: float, setup: str) -> None:
    model, expected_model = _step_model(seed), _step_model(seed)
    for net in (model, expected_model):
        _prepare(net, setup, seed)
    optimizer, expected_optimizer = _RecordingOptimizer(model), _RecordingOptimizer(
        expected_model)
    modes: list[bool] = []  # model.training at each forward pass of the learner's step
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    for step in range(n_steps):
        call = f"training_step for {what}, step {step + 1}"
        batch_seed, lr = 10 * seed + step, 0.5 / (step + 1)
        inputs, targets = _step_batch(batch_seed, padded=setup == "padded")
        logits, fresh = _fresh_pass(expected_model, inputs, targets, batch_seed)
        left_over, arrived_training = _grads(model), model.training
        modes.clear()
        optimizer.seen.clear()
        expected_optimizer.seen.clear()
        with _seeded(batch_seed):
            got = _call(answer, call, model, optimizer, inputs.clone(), targets.clone(), lr,
                        max_norm, hint="The optimizer works like the lab's ScratchAdamW: "
                        "optimizer.step(lr), and optimizer.zero_grad() if you want it.")
        with _seeded(batch_seed):
            expected_loss, expected_norm = reference_training_step(
                expected_model, expected_optimizer, inputs, targets, lr, max_norm)
        loss, norm = _step_result(got, call)
        _check_calls(call, optimizer.seen, modes, lr, arrived_training)
        _check_loss(call, loss, expected_loss, len(modes), logits, inputs, targets)
        _check_gradients(call, model, optimizer.seen[0][1], expected_optimizer.seen[0][1],
                         left_over, fresh, max_norm)
        for (name, mine), theirs in zip(model.named_parameters(),
                                        expected_model.parameters(), strict=True):
            expect_close(mine.detach(), theirs.detach(), f"{call}: {name} after the step",
                         atol=1e-5, hint="Call optimizer.step(lr) once, with the lr given, "
                         "after clipping.")
        if not math.isclose(norm, expected_norm, rel_tol=1e-4, abs_tol=1e-6):
            hint = "Return the norm clip_grad_norm returns: the global norm before clipping."
            if expected_norm > max_norm and math.isclose(norm, max_norm, rel_tol=1e-3):
                hint = ("That is the norm after clipping (max_norm). Return what "
                        "clip_grad_norm returns, the norm before clipping: it shows spikes.")
            raise CheckFailed(f"{call}: returned norm {norm:.6g}, expected "
                              f"{expected_norm:.6g}. {hint}")


@exercise("ch04.training_step", title="the training step, in order",
          reference=reference_training_step,
          wrong_answers=[_step_without_zero_grad, _step_zeroes_after_backward,
                         _step_clips_after_update, _step_without_clipping,
                         _step_updates_before_backward, _step_returns_loss_tensor,
                         _step_returns_loss_after_update, _step_in_eval_mode,
                         _step_without_train_mode, _step_shifts_targets_again,
                         _step_targets_are_inputs, _step_averages_over_ignored])
def check_training_step(answer) -> None:
    require_callable(answer, "training_step")
    for what, seed, n_steps, max_norm, setup in _STEP_CASES:
        _check_step_case(answer, what, seed, n_steps, max_norm, setup)


# --------------------------------------------------------------------------------------------
# 7. Masked-LM masking


PAD, CLS, SEP, MASK = 0, 1, 2, 3
_VOCAB = 1000


def _mlm_batch(seed: int, rows: int, length: int) -> torch.Tensor:
    """Rows ``[CLS] words... [SEP] [PAD]...``, with different amounts of padding."""
    ids = torch.randint(4, _VOCAB, (rows, length), generator=_gen(seed))
    ids[:, 0] = CLS
    lengths = torch.randint(length // 2, length, (rows,), generator=_gen(seed + 1))
    for row, n in enumerate(lengths.tolist()):
        ids[row, n] = SEP
        ids[row, n + 1:] = PAD
    return ids


def _masking_invariants(ids: torch.Tensor, inputs: Any, labels: Any, call: str,
                        special_ids: Sequence[int]) -> None:
    for name, got in (("inputs", inputs), ("labels", labels)):
        expect_shape(got, ids.shape, f"{call}: {name}")
        if got.dtype != ids.dtype:
            raise CheckFailed(f"{call}: {name} has dtype {got.dtype}, expected {ids.dtype}")
    chosen = labels != -100
    if (labels[chosen] != ids[chosen]).any():
        raise CheckFailed(f"{call}: where a token is chosen its label must be the ORIGINAL id "
                          "(what the model should recover), not the masked input.")
    if torch.equal(labels, ids):
        raise CheckFailed(f"{call}: every label is the original id. Labels must be -100 where "
                          "a token was not chosen, so the loss only counts the chosen 15%.")
    if (inputs[~chosen] != ids[~chosen]).any():
        raise CheckFailed(f"{call}: a token that was not chosen (label -100) was changed in "
                          "the inputs; only chosen tokens may change.")
    special = torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype))
    if chosen[special].any():
        raise CheckFailed(f"{call}: {int(chosen[special].sum())} special tokens ([CLS], [SEP], "
                          "[PAD]) were chosen; never choose a token in special_ids.")
    if ((inputs < 0) | (inputs >= _VOCAB)).any():
        raise CheckFailed(f"{call}: an input id is outside [0, vocab_size={_VOCAB}).")


@exercise("ch04.mask_tokens", title="masked-LM masking (15%, then 80/10/10)",
          reference=reference_mask_tokens,
          wrong_answers=[_mask_always_mask_token, _mask_labels_everywhere,
                         _mask_special_tokens_too, _mask_ignores_generator])
def check_mask_tokens(answer) -> None:
    require_callable(answer, "mask_tokens")
    specials = (PAD, CLS, SEP)
    small = torch.tensor([[CLS, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, SEP]])
    call = "mask_tokens on one sequence [CLS] 10..19 [SEP], mlm_probability=0.5"
    inputs, labels = _pair(_call(answer, call, small.clone(), _VOCAB, MASK, _gen(0), 0.5,
                                 special_ids=specials), call, "inputs, labels")
    _masking_invariants(small, inputs, labels, call, specials)

    for probability, seed in ((0.15, 1), (0.3, 2)):
        ids = _mlm_batch(50 + seed, 200, 256)
        call = (f"mask_tokens on a batch of 200 x 256 tokens with [CLS]/[SEP]/[PAD], "
                f"mlm_probability={probability}")
        inputs, labels = _pair(_call(answer, call, ids.clone(), _VOCAB, MASK, _gen(seed),
                                     probability, special_ids=specials), call, "inputs, labels")
        _masking_invariants(ids, inputs, labels, call, specials)
        eligible = ~torch.isin(ids, torch.tensor(specials))
        chosen = labels != -100
        rate = chosen.sum().item() / eligible.sum().item()
        if abs(rate - probability) > 0.01:
            raise CheckFailed(f"{call}: {rate:.1%} of the non-special tokens were chosen, "
                              f"expected {probability:.0%} (+-1%): each token is chosen "
                              "independently with probability mlm_probability.")
        n = chosen.sum().item()
        as_mask = (inputs[chosen] == MASK).sum().item() / n
        kept = (inputs[chosen] == ids[chosen]).sum().item() / n
        randomised = 1.0 - as_mask - kept
        for name, measured, target in (("became [MASK]", as_mask, 0.8),
                                       ("became a random token", randomised, 0.1),
                                       ("stayed unchanged", kept, 0.1)):
            if abs(measured - target) > 0.03:
                raise CheckFailed(
                    f"{call}: of the chosen tokens {as_mask:.1%} became [MASK], "
                    f"{randomised:.1%} a random token and {kept:.1%} stayed unchanged; expected "
                    f"80% / 10% / 10% ({name}: {measured:.1%}, expected {target:.0%}). One "
                    "uniform draw per chosen token: < 0.8 -> mask_id, 0.8-0.9 -> a random id, "
                    "else keep it.")
        if not torch.equal(ids, _mlm_batch(50 + seed, 200, 256)):
            raise CheckFailed(f"{call}: ids was modified in place; build new tensors "
                              "(torch.where, .clone()).")

    ids = _mlm_batch(60, 8, 64)
    first = _pair(_call(answer, "mask_tokens with seed 5", ids.clone(), _VOCAB, MASK, _gen(5),
                        special_ids=specials), "mask_tokens", "inputs, labels")
    again = _pair(_call(answer, "mask_tokens with seed 5 again", ids.clone(), _VOCAB, MASK,
                        _gen(5), special_ids=specials), "mask_tokens", "inputs, labels")
    other = _pair(_call(answer, "mask_tokens with seed 6", ids.clone(), _VOCAB, MASK, _gen(6),
                        special_ids=specials), "mask_tokens", "inputs, labels")
    if not (torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])):
        raise CheckFailed("mask_tokens twice with generators seeded alike gave different "
                          "masks: draw every random number with generator=generator.")
    if torch.equal(first[1], other[1]):
        raise CheckFailed("mask_tokens with seeds 5 and 6 chose the same tokens: the choice "
                          "must come from the generator.")
