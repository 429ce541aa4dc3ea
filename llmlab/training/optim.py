"""Optimisation, written out: AdamW, warm-up + cosine learning rate, clipping by global
norm, gradient accumulation, mixed precision and activation checkpointing.

Each one is cross-checked in ``tests/test_training.py`` against torch's own
(``torch.optim.AdamW``, ``LinearLR`` + ``CosineAnnealingLR``, ``clip_grad_norm_``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["AdamW", "weight_decay_groups", "WarmupCosine", "clip_grad_norm",
           "accumulate_gradients", "autocast", "enable_activation_checkpointing"]


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), one parameter at a time.

    For a gradient ``g`` at step ``t``:

    1. decay the weights directly: ``p <- p - lr * weight_decay * p`` (not through the
       gradient, where Adam's normalisation would undo it);
    2. running averages ``m <- b1 m + (1 - b1) g`` and ``v <- b2 v + (1 - b2) g^2``;
    3. undo their bias toward 0 in the first steps: ``m / (1 - b1^t)``, ``v / (1 - b2^t)``;
    4. ``p <- p - lr * m_hat / (sqrt(v_hat) + eps)``.

    Subclassing ``torch.optim.Optimizer`` gives parameter groups, ``state_dict`` and
    compatibility with torch's learning-rate schedulers for free.

    >>> w = nn.Parameter(torch.tensor([1.0]))
    >>> opt = AdamW([w], lr=0.1, weight_decay=0.0)
    >>> w.grad = torch.tensor([5.0]); opt.step()
    >>> w.detach()                     # the first Adam step moves by lr, whatever g's size
    tensor([0.9000])
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0; got {lr}, {eps}, "
                             f"{weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1); got {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad
                p.mul_(1.0 - lr * group["weight_decay"])
                m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                denom = (v / (1.0 - beta2**t)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-lr / (1.0 - beta1**t))
        return loss


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: matrices (linear and embedding weights) are decayed; vectors
    (biases, norm scales) are not, since shrinking them only fights the normalisation.

    >>> groups = weight_decay_groups(nn.Linear(3, 2), 0.1)
    >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
    [(1, 0.1), (1, 0.0)]
    """
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


@dataclass(frozen=True)
class WarmupCosine:
    """Learning rate at each step: a linear warm-up to ``max_lr`` over ``warmup_steps``,
    then half a cosine down to ``min_lr`` at ``total_steps``, then ``min_lr``.

    The warm-up rate at step ``s < W`` is ``max_lr * (s + 1) / (W + 1)``: never zero, so
    the first step already learns; it is torch's ``LinearLR(start_factor=1 / (W + 1),
    total_iters=W)``. ``factor(step)`` is the same curve divided by ``max_lr``, the form
    ``torch.optim.lr_scheduler.LambdaLR`` takes.

    >>> schedule = WarmupCosine(max_lr=1.0, min_lr=0.0, warmup_steps=3, total_steps=7)
    >>> [round(schedule(s), 3) for s in range(8)]
    [0.25, 0.5, 0.75, 1.0, 0.854, 0.5, 0.146, 0.0]
    """

    max_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int

    def __post_init__(self) -> None:
        if not 0 <= self.min_lr <= self.max_lr:
            raise ValueError(f"need 0 <= min_lr <= max_lr; got min_lr={self.min_lr}, "
                             f"max_lr={self.max_lr}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"need 0 <= warmup_steps < total_steps; got "
                             f"warmup_steps={self.warmup_steps}, total_steps={self.total_steps}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.max_lr * (step + 1) / (self.warmup_steps + 1)
        progress = min((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0 over the decay
        return self.min_lr + (self.max_lr - self.min_lr) * cosine

    def factor(self, step: int) -> float:
        return self(step) / self.max_lr if self.max_lr else 0.0


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale all gradients by one factor so that their global L2 norm (of every gradient,
    concatenated) is at most ``max_norm``; return the norm before clipping.

    One shared factor keeps the update's direction; clipping each tensor separately
    would bend it.

    >>> a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    >>> a.grad, b.grad = torch.tensor([3.0]), torch.tensor([4.0])
    >>> clip_grad_norm([a, b], max_norm=1.0)
    tensor(5.)
    >>> a.grad, b.grad                            # (3, 4) / 5, up to the 1e-6 guard
    (tensor([0.6000]), tensor([0.8000]))
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0; got {max_norm}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum().sqrt()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)  # 1e-6: no division by zero
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


def accumulate_gradients(
    model: nn.Module, micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], n_micro: int,
) -> float:
    """Backpropagate ``n_micro`` micro-batches, each loss divided by ``n_micro``: the
    gradients add up to those of one batch ``n_micro`` times bigger (same memory as one
    micro-batch). Returns the mean loss. The caller zeroes gradients before, steps after.
    """
    total, count = 0.0, 0
    for x, y in micro_batches:
        loss = loss_fn(model(x), y) / n_micro
        loss.backward()
        total += loss.item()
        count += 1
    if count != n_micro:
        raise ValueError(f"expected {n_micro} micro-batches; got {count}")
    return total


PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: nothing for ``fp32``; ``torch.autocast`` to
    bfloat16 (CPU or GPU) or float16 (CUDA only: it needs a ``GradScaler``, see ``Trainer``).

    Autocast keeps the weights in float32 and runs matmuls in the low precision; losses
    and norms stay in float32.
    """
    device_type = torch.device(device).type
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device_type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device (with a GradScaler); "
                         f"got {device_type}: use 'bf16' on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def _checkpointed_forward(block: nn.Module, forward: Callable[..., Any], *args: Any,
                          **kwargs: Any) -> Any:
    if not (block.training and torch.is_grad_enabled()):
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def enable_activation_checkpointing(model: nn.Module, blocks: str = "blocks") -> nn.Module:
    """Recompute each transformer block's activations in the backward pass instead of
    storing them: memory for activations drops from all layers to about one, for about
    one extra forward pass of compute. Gradients are unchanged.

    Each block's ``forward`` is wrapped in ``torch.utils.checkpoint.checkpoint`` on the
    instance, so parameter names and checkpoints stay as they were. Returns ``model``.
    """
    layers = getattr(model, blocks, None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"expected the model to keep its blocks in an nn.ModuleList "
                         f"named {blocks!r}; {type(model).__name__} has none")
    for block in layers:
        if not getattr(block, "_llmlab_checkpointed", False):
            block.forward = functools.partial(_checkpointed_forward, block, block.forward)
            block._llmlab_checkpointed = True
    return model
