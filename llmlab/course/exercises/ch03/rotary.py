"""Chapter 03 exercise 4: the rotary position embedding at given positions (``apply_rope``),
checked against llmlab.attention's ``rotary_cos_sin`` and ``apply_rotary``."""

from __future__ import annotations

import torch

from llmlab import attention
from llmlab.course.checks import call_learner as _call
from llmlab.course.checks import exercise, expect_close, require_callable
from llmlab.course.exercises.ch03._common import close, first_hint, noise

# --------------------------------------------------------------------------------------------
# Reference: the learner's function, implemented with llmlab.attention


def reference_apply_rope(
    x: torch.Tensor, positions: torch.Tensor, theta: float = 10_000.0
) -> torch.Tensor:
    """Rotate ``x (..., T, D)`` for the given integer ``positions (T,)``, pairing dimension
    ``j`` with ``j + D/2`` at frequency ``theta ** (-2j / D)`` (llmlab.attention's layout,
    the same as transformers' Llama).

    >>> x = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    >>> reference_apply_rope(x, torch.tensor([0])).tolist() == x.tolist()   # position 0: no turn
    True
    >>> reference_apply_rope(x, torch.tensor([1]))                 # (x0, x2) turned by 1 radian
    tensor([[0.5403, 0.0000, 0.8415, 0.0000]])
    """
    positions = torch.as_tensor(positions)
    if positions.dim() != 1 or positions.is_floating_point() or len(positions) != x.shape[-2]:
        raise ValueError(f"positions must be 1-D integers, one per position of x "
                         f"({x.shape[-2]}); got {tuple(positions.shape)} {positions.dtype}")
    cos, sin = attention.rotary_cos_sin(int(positions.max()) + 1, x.shape[-1], theta)
    return attention.apply_rotary(x, cos[positions].to(x.dtype), sin[positions].to(x.dtype))


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure the check fails them


def _rope_with(x, positions, theta=10_000.0, *, interleaved=False, sign=1.0, exponent=2.0,
               ignore_positions=False):
    """Variants of RoPE, each with one classic mistake."""
    D = x.shape[-1]
    pos = torch.arange(x.shape[-2]) if ignore_positions else torch.as_tensor(positions)
    inv_freq = 1.0 / theta ** (exponent * torch.arange(D // 2, dtype=torch.float32) / D)
    angles = pos.float()[:, None] * inv_freq
    cos, sin = angles.cos(), sign * angles.sin()
    if interleaved:  # pairs (0, 1), (2, 3)...
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    a, b = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def _rope_interleaved(x, positions, theta=10_000.0):
    return _rope_with(x, positions, theta, interleaved=True)


def _rope_wrong_direction(x, positions, theta=10_000.0):
    return _rope_with(x, positions, theta, sign=-1.0)


def _rope_frequency_without_2(x, positions, theta=10_000.0):  # theta ** (-j / D)
    return _rope_with(x, positions, theta, exponent=1.0)


def _rope_ignores_positions(x, positions, theta=10_000.0):  # always 0..T-1
    return _rope_with(x, positions, theta, ignore_positions=True)


# --------------------------------------------------------------------------------------------
# 6. Rotary position embedding


def _rope_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, float, float]]:
    return [
        ("x of shape (5, 8) at positions 0..4", noise(40, 5, 8), torch.arange(5), 10_000.0,
         1e-5),
        ("x of shape (2, 3, 6, 16) at positions 10..15 (after a 10-token cache)",
         noise(41, 2, 3, 6, 16), torch.arange(10, 16), 10_000.0, 1e-5),
        ("a single position, 0 (nothing turns)", noise(42, 1, 1, 1, 4), torch.tensor([0]),
         10_000.0, 1e-6),
        ("positions 3, 0, 7 (any order) with theta=100", noise(43, 3, 4), torch.tensor([3, 0, 7]),
         100.0, 1e-5),
        ("x of shape (1, 2, 4, 64) at positions 1000..1003 with theta=500000 (Llama 3)",
         noise(44, 1, 2, 4, 64), torch.arange(1000, 1004), 500_000.0, 2e-3),
    ]


@exercise("ch03.apply_rope", title="rotary position embedding from positions",
          reference=reference_apply_rope,
          wrong_answers=[_rope_interleaved, _rope_wrong_direction, _rope_frequency_without_2,
                         _rope_ignores_positions])
def check_apply_rope(answer) -> None:
    require_callable(answer, "apply_rope")
    for what, x, positions, theta, atol in _rope_cases():
        call = f"apply_rope for {what}"
        got = _call(answer, call, x.clone(), positions.clone(), theta)
        args = (x, positions, theta)
        hint = first_hint(got, args, [
            (_rope_interleaved, "Pair dimension j with j + D/2 (the two halves, as in "
             "llmlab.attention.apply_rotary and Llama), not neighbours (0, 1), (2, 3)."),
            (_rope_wrong_direction, "Rotate the other way: (a, b) -> (a cos - b sin, "
             "b cos + a sin), with a in the first half."),
            (_rope_frequency_without_2, "Pair j turns at theta ** (-2j / D), j = 0..D/2-1: "
             "torch.arange(0, D, 2) / D."),
            (_rope_ignores_positions, "Use the given positions, not 0..T-1: with a KV cache the "
             "new tokens start at the cache's length."),
        ], "angle = position * theta ** (-2j / D) for pair (j, j + D/2); rotate each pair by "
           "its angle.", atol=max(atol, 1e-4))
        close(got, reference_apply_rope(*args), call, atol=atol, hint=hint)
    # What RoPE is for: q_m . k_n depends only on m - n, so shifting every position by the
    # same amount changes no score.
    q, k = noise(45, 1, 6, 16), noise(46, 1, 6, 16)
    positions = torch.tensor([0, 1, 2, 3, 4, 5])
    near = _call(answer, "apply_rope(q, 0..5)", q, positions) @ \
        _call(answer, "apply_rope(k, 0..5)", k, positions).transpose(-2, -1)
    far = _call(answer, "apply_rope(q, 50..55)", q, positions + 50) @ \
        _call(answer, "apply_rope(k, 50..55)", k, positions + 50).transpose(-2, -1)
    expect_close(far, near, "q.k scores after moving every token 50 positions later", atol=1e-3,
                 hint="The angle must be position times a frequency, the same for q and k.")
