"""Chapter 03 exercise 5: ALiBi's bias matrix from scratch (``alibi_bias``), checked against
llmlab.attention's ``alibi_bias`` (itself tested against BLOOM's ``build_alibi_tensor``)."""

from __future__ import annotations

import torch

from llmlab import attention
from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch03._common import close, first_hint

# --------------------------------------------------------------------------------------------
# Reference: the learner's function, implemented with llmlab.attention


def reference_alibi_bias(n_heads: int, T: int) -> torch.Tensor:
    """Float ``(n_heads, T, T)``: ``-slope_h * |i - j|`` with slopes ``2^(-8 (h + 1) / n_heads)``
    (``n_heads`` a power of two).

    >>> reference_alibi_bias(2, 3)[0]                   # head 0 of 2: slope 2^-4 = 0.0625
    tensor([[ 0.0000, -0.0625, -0.1250],
            [-0.0625,  0.0000, -0.0625],
            [-0.1250, -0.0625,  0.0000]])
    """
    if n_heads < 1 or n_heads & (n_heads - 1):
        raise ValueError(f"this exercise uses a power-of-two number of heads; got {n_heads}")
    return attention.alibi_bias(n_heads, T)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure the check fails them


def _alibi_with(n_heads, T, *, sign=-1.0, first=1, reverse=False, signed=False):
    slopes = torch.tensor([2.0 ** (-8.0 * (h + first) / n_heads) for h in range(n_heads)])
    if reverse:
        slopes = slopes.flip(0)
    offsets = torch.arange(T)[:, None] - torch.arange(T)[None, :]  # i - j
    distance = offsets if signed else offsets.abs()
    return sign * slopes[:, None, None] * distance


def _alibi_positive(n_heads, T):  # rewards distant keys instead of penalising them
    return _alibi_with(n_heads, T, sign=1.0)


def _alibi_slopes_from_zero(n_heads, T):  # 2^(-8h/n): head 0 gets slope 1
    return _alibi_with(n_heads, T, first=0)


def _alibi_slopes_reversed(n_heads, T):  # the gentle head first
    return _alibi_with(n_heads, T, reverse=True)


def _alibi_signed_distance(n_heads, T):  # i - j without abs: future keys get a bonus
    return _alibi_with(n_heads, T, signed=True)


_MISTAKES = [
    (_alibi_positive, "The bias must be a penalty: -slope * |i - j| (0 on the diagonal, more "
     "negative further away)."),
    (_alibi_slopes_from_zero, "Head h (counting from 0) has slope 2 ** (-8 * (h + 1) / n_heads): "
     "the first head's slope is 2^(-8/n), not 1."),
    (_alibi_slopes_reversed, "The steepest slope comes first: head 0 has the largest slope "
     "2^(-8/n), the last head the gentlest 2^-8."),
    (_alibi_signed_distance, "Use the distance |i - j|, so keys after the query are penalised "
     "too (a causal mask hides them anyway, but the matrix is symmetric)."),
]

_CASES = [(1, 3), (2, 4), (4, 5), (8, 6), (4, 1), (16, 3)]


@exercise("ch03.alibi_bias", title="ALiBi's distance penalty from scratch",
          reference=reference_alibi_bias,
          wrong_answers=[_alibi_positive, _alibi_slopes_from_zero, _alibi_slopes_reversed,
                         _alibi_signed_distance])
def check_alibi_bias(answer) -> None:
    require_callable(answer, "alibi_bias")
    for n_heads, T in _CASES:
        call = f"alibi_bias(n_heads={n_heads}, T={T})"
        got = _call(answer, call, n_heads, T)
        expected = reference_alibi_bias(n_heads, T)
        if isinstance(got, torch.Tensor) and got.shape == (T, T) and n_heads > 1:
            raise CheckFailed(f"{call} has shape {tuple(got.shape)}: one (T, T) matrix per "
                              f"head is expected, shape {tuple(expected.shape)}.")
        if isinstance(got, torch.Tensor) and not got.is_floating_point():
            raise CheckFailed(f"{call} has dtype {got.dtype}: the bias is added to float "
                              "scores, so return floats (the slopes are fractions).")
        hint = first_hint(got, (n_heads, T), _MISTAKES,
                          "Entry [h, i, j] is -slope_h * |i - j| with slope_h = "
                          "2 ** (-8 * (h + 1) / n_heads).")
        close(got, expected, call, atol=1e-6, hint=hint)
