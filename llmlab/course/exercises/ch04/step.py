"""Chapter 04 exercise 6: the training step (``training_step``), its pieces in the one
order that works (train mode, zero the gradients, forward, loss, backward, clip,
``optimizer.step(lr)``); the check names the cause of each classic mistake."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.course.checks import CheckFailed, exercise, expect_close, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch04._common import rng
from llmlab.model import GPT, ModelConfig, lm_loss
from llmlab.training import objectives, optim

# --------------------------------------------------------------------------------------------
# Reference: the learner's function, implemented with llmlab.training


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
    loss = lm_loss(model(inputs), targets)
    loss.backward()
    norm = optim.clip_grad_norm(model.parameters(), max_norm)
    optimizer.step(lr)
    return loss.item(), float(norm)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure the check fails them


def _lm_loss(model, inputs, targets):
    return lm_loss(model(inputs), targets)


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
    tokens = torch.randint(_STEP_VOCAB, (3, 9), generator=rng(seed))
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
    lm_loss(logits, targets).backward()
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
        (lm_loss(logits, inputs), "The loss compares the logits with the "
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
