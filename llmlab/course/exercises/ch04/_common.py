"""Small helpers shared by chapter 04's checks: tuples of tensors, seeded generators,
numbers returned as floats or 0-dim tensors."""

from __future__ import annotations

from typing import Any

import torch

from llmlab.course.checks import CheckFailed


def pair_of(got: Any, what: str, names: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(got, (tuple, list)) and len(got) == 2
            and all(isinstance(t, torch.Tensor) for t in got)):
        raise CheckFailed(f"{what} returned {type(got).__name__}, expected a tuple of two "
                          f"tensors ({names})")
    return got[0], got[1]


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=rng(seed))


def as_number(got: Any, what: str) -> float:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        return float(got)
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return float(got)
    raise CheckFailed(f"{what} returned {type(got).__name__}, expected a number")
