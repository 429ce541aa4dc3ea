"""Small helpers shared by chapter 03's checks: ``-inf``, seeded random tensors, the hint of
the known mistake an answer matches, and a closeness check that gives the hint on a wrong
shape too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmlab.course.checks import CheckFailed, expect_close, expect_shape

NEG_INF = float("-inf")


def same(got: Any, wrong: Callable[..., Any], *args: Any, atol: float = 1e-5) -> bool:
    """Whether the learner's output matches a known mistake's output on the same input."""
    if not isinstance(got, torch.Tensor):
        return False
    try:
        expected = wrong(*args)
    except Exception:  # the mistake itself may crash on this input
        return False
    return (isinstance(expected, torch.Tensor) and got.shape == expected.shape
            and got.dtype == expected.dtype
            and torch.allclose(got.float(), expected.float(), atol=atol, equal_nan=True))


def first_hint(got: Any, args: tuple, mistakes: list[tuple[Callable[..., Any], str]],
                default: str, atol: float = 1e-5) -> str:
    for wrong, hint in mistakes:
        if same(got, wrong, *args, atol=atol):
            return hint
    return default


def close(got: Any, expected: torch.Tensor, what: str, atol: float, hint: str) -> None:
    """``expect_close``, with the hint also when the shape is wrong."""
    try:
        expect_shape(got, expected.shape, what)
    except CheckFailed as failure:
        raise CheckFailed(f"{failure}. {hint}".strip()) from None
    expect_close(got, expected, what, atol=atol, hint=hint)


def noise(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
