"""Chapter 03 exercises 2 and 3: splitting features into heads (``split_heads``) and merging
them back (``merge_heads``), checked against llmlab.attention."""

from __future__ import annotations

import math

import torch

from llmlab import attention
from llmlab.course.checks import CheckFailed, exercise, expect_close, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch03._common import close, first_hint, noise

# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.attention


def reference_split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(B, T, n_heads * D) -> (B, n_heads, T, D)``.

    >>> reference_split_heads(torch.arange(4.0).view(1, 1, 4), 2)[0, :, 0]
    tensor([[0., 1.],
            [2., 3.]])
    """
    return attention.split_heads(x, n_heads)


def reference_merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, D) -> (B, T, H * D)``, the inverse of :func:`reference_split_heads`.

    >>> reference_merge_heads(torch.tensor([[[[0.0, 1.0]], [[2.0, 3.0]]]]))
    tensor([[[0., 1., 2., 3.]]])
    """
    return attention.merge_heads(x)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


def _split_without_transpose(x, n_heads):  # (B, T, H, D): heads not moved before positions
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads)


def _split_view_directly(x, n_heads):  # a view cannot move features across positions
    B, T, C = x.shape
    return x.reshape(B, n_heads, T, C // n_heads)


def _split_strided(x, n_heads):  # head h takes features h, h + H, h + 2H...
    B, T, C = x.shape
    return x.view(B, T, C // n_heads, n_heads).permute(0, 3, 1, 2)


def _merge_without_transpose(x):
    B, H, T, D = x.shape
    return x.reshape(B, T, H * D)


def _merge_interleaved(x):  # features of the heads interleaved instead of concatenated
    B, H, T, D = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * D)


def _merge_averages_heads(x):
    return x.mean(1)


# --------------------------------------------------------------------------------------------
# 2. Splitting into heads

_SPLIT_CASES = [((1, 1, 6), 3), ((2, 5, 12), 4), ((2, 4, 8), 4), ((1, 1, 8), 1), ((3, 2, 5), 5)]


@exercise("ch03.split_heads", title="splitting features into heads",
          reference=reference_split_heads,
          wrong_answers=[_split_without_transpose, _split_view_directly, _split_strided])
def check_split_heads(answer) -> None:
    require_callable(answer, "split_heads")
    for shape, n_heads in _SPLIT_CASES:
        x = torch.arange(math.prod(shape), dtype=torch.float32).view(shape)
        call = f"split_heads(x of shape {shape}, n_heads={n_heads})"
        got = _call(answer, call, x.clone(), n_heads)
        expected = reference_split_heads(x, n_heads)
        transposed_shape = _split_without_transpose(x, n_heads).shape
        if isinstance(got, torch.Tensor) and got.shape == transposed_shape != expected.shape:
            raise CheckFailed(f"{call} has shape {tuple(got.shape)}, expected "
                              f"{tuple(expected.shape)} (B, heads, T, head_dim): move the heads "
                              "before the positions with .transpose(1, 2).")
        hint = first_hint(got, (x, n_heads), [
            (_split_without_transpose, "Move the heads before the positions: "
             ".view(B, T, H, D).transpose(1, 2)."),
            (_split_view_directly, "x.reshape(B, H, T, D) mixes positions into heads. First "
             ".view(B, T, H, D) (each position's features cut into H slices), then "
             ".transpose(1, 2)."),
            (_split_strided, "Head h owns the contiguous slice of features h*D .. (h+1)*D - 1, "
             "not every H-th feature."),
        ], "Expected x.view(B, T, H, D).transpose(1, 2); x holds 0, 1, 2... so each value "
           "tells where it came from.")
        close(got, expected, call, atol=0.0, hint=hint)


# --------------------------------------------------------------------------------------------
# 3. Merging heads

_MERGE_CASES = [(1, 3, 1, 2), (2, 4, 5, 3), (2, 2, 2, 2), (1, 1, 4, 8), (3, 6, 2, 1)]


@exercise("ch03.merge_heads", title="merging heads back", reference=reference_merge_heads,
          wrong_answers=[_merge_without_transpose, _merge_interleaved, _merge_averages_heads])
def check_merge_heads(answer) -> None:
    require_callable(answer, "merge_heads")
    for shape in _MERGE_CASES:
        B, H, T, D = shape
        x = torch.arange(math.prod(shape), dtype=torch.float32).view(shape)
        call = f"merge_heads(x of shape {shape})"
        got = _call(answer, call, x.clone())
        hint = first_hint(got, (x,), [
            (_merge_without_transpose, "Put the positions back before the heads first: "
             ".transpose(1, 2) then .reshape(B, T, H * D) (reshape, because the transposed "
             "tensor is not contiguous)."),
            (_merge_interleaved, "Concatenate the heads' features (head 0's D features, then "
             "head 1's...), do not interleave them."),
        ], "Each position gets its heads' outputs side by side: shape (B, T, H * D).")
        if isinstance(got, torch.Tensor) and got.shape == (B, T, D) and H > 1:
            hint = ("Heads are concatenated, not averaged or summed: the output has H * D "
                    "features (the output projection mixes them afterwards).")
        close(got, reference_merge_heads(x), call, atol=0.0, hint=hint)
    x = noise(30, 2, 7, 12)
    expect_close(_call(answer, "merge_heads(split_heads(x, 3))", reference_split_heads(x, 3)),
                 x, "merge_heads(split_heads(x, 3)) for x of shape (2, 7, 12)", atol=0.0,
                 hint="merge_heads must undo split_heads exactly.")
