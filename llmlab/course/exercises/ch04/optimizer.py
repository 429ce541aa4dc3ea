"""Chapter 04 exercises 3 to 5: one AdamW step written out (``adamw_step``), the warm-up +
cosine learning rate (``lr_at``) and clipping by global norm (``clip_grad_norm``), checked
against ``torch.optim.AdamW``, ``LinearLR`` + ``CosineAnnealingLR`` and ``clip_grad_norm_``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from llmlab.course.checks import CheckFailed, exercise, expect_close, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch04._common import as_number, noise
from llmlab.training import optim

# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.training


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


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


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


# --------------------------------------------------------------------------------------------
# 3. One AdamW step


def _adam_cases() -> list[tuple[str, torch.Tensor, list[torch.Tensor], dict[str, Any]]]:
    grads = [noise(20 + i, 3, 4) for i in range(6)]
    return [
        ("no weight decay, 6 steps of random gradients", noise(19, 3, 4), grads,
         dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)),
        ("weight_decay=0.1, lr=0.05, betas=(0.8, 0.95)", noise(26, 3, 4), grads,
         dict(lr=0.05, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1)),
        ("weight_decay=0.5 on large weights (x 10)", noise(27, 5, scale=10.0),
         [noise(28 + i, 5, scale=0.1) for i in range(5)],
         dict(lr=0.02, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5)),
        ("zero gradients (only the decay moves the weights)", noise(33, 4),
         [torch.zeros(4)] * 4, dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.2)),
        ("tiny gradients (1e-6): eps matters", noise(34, 6),
         [noise(35 + i, 6, scale=1e-6) for i in range(4)],
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
            got = as_number(_call(answer, call, *args), call)
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
        ("a norm below max_norm (nothing changes)", [noise(40, 3, 4, scale=0.1),
                                                     noise(41, 5, scale=0.1)], 10.0, False),
        ("one large and one small gradient: one factor for both",
         [noise(42, 8, 8, scale=5.0), noise(43, 8, scale=0.01)], 1.0, False),
        ("a parameter without a gradient (grad is None)",
         [noise(44, 4, 4), None, noise(45, 4)], 0.5, False),
        ("all gradients zero", [torch.zeros(3, 3), torch.zeros(3)], 1.0, False),
        ("a single tensor", [noise(46, 10, scale=3.0)], 2.0, False),
        ("the parameters given as a generator, as model.parameters() is",
         [noise(47, 6, 6), noise(48, 6)], 0.25, True),
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
        got = as_number(got_norm, call)
        if not math.isclose(got, float(expected_norm), rel_tol=1e-5, abs_tol=1e-7):
            raise CheckFailed(f"{call}: returned norm {got:.6g}, expected "
                              f"{float(expected_norm):.6g} (the total norm before clipping). "
                              f"{hint}")
