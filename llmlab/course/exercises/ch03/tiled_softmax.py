"""Chapter 03 exercise 6: the online-softmax step of FlashAttention
(``online_softmax_update``), checked against llmlab.attention's ``online_softmax_update``
and, composed over tiles, against exact attention."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from llmlab import attention
from llmlab.course.checks import CheckFailed, exercise, expect_close, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch03._common import NEG_INF, first_hint, noise
from llmlab.course.exercises.ch03.dot_product import reference_attention

# --------------------------------------------------------------------------------------------
# Reference: the learner's function, implemented with llmlab.attention


def reference_online_softmax_update(
    acc: torch.Tensor, row_max: torch.Tensor, row_sum: torch.Tensor,
    scores: torch.Tensor, values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One FlashAttention step: fold a tile of ``scores (..., Lb, Sb)`` and ``values
    (..., Sb, Ev)`` into the running ``(acc, row_max, row_sum)``.

    >>> state = torch.zeros(1, 1), torch.full((1,), NEG_INF), torch.zeros(1)
    >>> acc, row_max, row_sum = reference_online_softmax_update(
    ...     *state, torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0], [3.0]]))
    >>> acc / row_sum[:, None]                                  # equal weights: mean of values
    tensor([[2.]])
    """
    return attention.online_softmax_update(acc, row_max, row_sum, scores, values)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure the check fails them


def _online_with(acc, row_max, row_sum, scores, values, *, rescale_acc=True, rescale_sum=True,
                 inverted=False, tile_max=False):
    """Variants of the online-softmax step, each with one classic mistake."""
    new_max = scores.amax(-1) if tile_max else torch.maximum(row_max, scores.amax(-1))
    shift = new_max.masked_fill(new_max == NEG_INF, 0.0)
    rescale = torch.exp(shift - row_max) if inverted else torch.exp(row_max - shift)
    p = torch.exp(scores - shift[..., None])
    row_sum = (row_sum * rescale if rescale_sum else row_sum) + p.sum(-1)
    acc = (acc * rescale[..., None] if rescale_acc else acc) + p @ values
    return acc, new_max, row_sum


def _online_no_acc_rescale(acc, row_max, row_sum, scores, values):
    return _online_with(acc, row_max, row_sum, scores, values, rescale_acc=False)


def _online_no_rescale(acc, row_max, row_sum, scores, values):
    return _online_with(acc, row_max, row_sum, scores, values, rescale_acc=False,
                        rescale_sum=False)


def _online_inverted_rescale(acc, row_max, row_sum, scores, values):
    return _online_with(acc, row_max, row_sum, scores, values, inverted=True)


def _online_tile_max(acc, row_max, row_sum, scores, values):
    return _online_with(acc, row_max, row_sum, scores, values, tile_max=True)


# --------------------------------------------------------------------------------------------
# 7. The online-softmax step (FlashAttention)


def _start_state(*batch: int, rows: int, ev: int) -> tuple[torch.Tensor, ...]:
    return (torch.zeros(*batch, rows, ev), torch.full((*batch, rows), NEG_INF),
            torch.zeros(*batch, rows))


def _online_steps() -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    """Single steps, each from a state the reference produced (so states are consistent)."""
    first_scores, first_values = noise(50, 3, 4), noise(51, 4, 2)
    start = _start_state(rows=3, ev=2)
    after_one = reference_online_softmax_update(*start, first_scores, first_values)
    batch_start = _start_state(2, 3, rows=4, ev=5)
    batch_one = reference_online_softmax_update(*batch_start, noise(52, 2, 3, 4, 6),
                                                noise(53, 2, 3, 6, 5))
    masked = noise(56, 3, 5)
    masked[0, 1:] = NEG_INF  # a causal tile: some keys are in the future
    masked[1, 3:] = NEG_INF
    return [
        ("the first tile, from acc=0, row_max=-inf, row_sum=0 (3 queries, 4 keys)",
         (*start, first_scores, first_values)),
        ("a second tile whose scores are larger (the maximum goes up: rescale)",
         (*after_one, first_scores + 3.0, noise(54, 4, 2))),
        ("a second tile whose scores are smaller (the maximum stays)",
         (*after_one, first_scores - 4.0, noise(55, 4, 2))),
        ("a tile with masked (-inf) scores", (*after_one, masked, noise(57, 5, 2))),
        ("a tile with (batch, heads) = (2, 3) and much larger scores",
         (*batch_one, noise(58, 2, 3, 4, 7, scale=50.0), noise(59, 2, 3, 7, 5))),
        ("a tile of one key", (*batch_one, noise(60, 2, 3, 4, 1), noise(61, 2, 3, 1, 5))),
    ]


_ONLINE_MISTAKES = [
    (_online_no_acc_rescale, "row_sum is right, but acc must be rescaled by "
     "exp(old_max - new_max) as well."),
    (_online_no_rescale, "When the maximum goes up, the old row_sum and acc were computed "
     "against the old maximum: multiply both by exp(old_max - new_max) before adding the "
     "tile."),
    (_online_inverted_rescale, "The rescale factor is exp(old_max - new_max) (<= 1), not "
     "exp(new_max - old_max)."),
    (_online_tile_max, "row_max must be the largest score seen so far: "
     "torch.maximum(row_max, scores.amax(-1)), not just this tile's maximum."),
]


def _as_state(got: Any, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not (isinstance(got, (tuple, list)) and len(got) == 3
            and all(isinstance(t, torch.Tensor) for t in got)):
        raise CheckFailed(f"{what} returned {type(got).__name__}, expected a tuple of three "
                          "tensors (acc, row_max, row_sum)")
    return got[0], got[1], got[2]


def tiled_with_update(update: Callable[..., Any], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           q_block: int, k_block: int, causal: bool) -> torch.Tensor:
    """Attention one tile at a time, with ``update`` folding in each tile: a teaching copy
    of the loop of ``llmlab.attention.tiled_attention`` with the learner's update in place
    of ``online_softmax_update`` (each call named, for the check's messages). The tests
    check that with the reference update the two agree."""
    L, S = q.shape[-2], k.shape[-2]
    scale = 1 / math.sqrt(q.shape[-1])
    outputs = []
    for i0 in range(0, L, q_block):
        q_tile = q[..., i0:i0 + q_block, :] * scale
        rows = q_tile.shape[-2]
        state = _start_state(*q.shape[:-2], rows=rows, ev=v.shape[-1])
        for j0 in range(0, min(S, i0 + rows) if causal else S, k_block):
            k_tile, v_tile = k[..., j0:j0 + k_block, :], v[..., j0:j0 + k_block, :]
            scores = q_tile @ k_tile.transpose(-2, -1)
            if causal:
                allowed = attention.causal_mask(rows, k_tile.shape[-2], offset=i0 - j0)
                scores = scores.masked_fill(~allowed, NEG_INF)
            what = f"online_softmax_update on the tile of queries {i0}.. and keys {j0}.."
            state = _as_state(_call(update, what, *state, scores, v_tile), what)
        acc, _, row_sum = state
        outputs.append(acc / row_sum[..., None])
    return torch.cat(outputs, dim=-2)


@exercise("ch03.online_softmax_update", title="the online-softmax tile update",
          reference=reference_online_softmax_update,
          wrong_answers=[_online_no_acc_rescale, _online_no_rescale, _online_inverted_rescale,
                         _online_tile_max])
def check_online_softmax_update(answer) -> None:
    require_callable(answer, "online_softmax_update")
    for step, (what, args) in enumerate(_online_steps(), start=1):
        call = f"step {step}, {what}"
        got = _as_state(_call(answer, call, *(a.clone() for a in args)), call)
        expected = reference_online_softmax_update(*args)
        hints = [first_hint(part, args, [(lambda *a, i=i, w=w: w(*a)[i], h)
                                          for w, h in _ONLINE_MISTAKES], "")
                 for i, part in enumerate(got)]
        normalised = expected[0] / expected[2][..., None]
        if got[0].shape == normalised.shape and torch.allclose(got[0], normalised, atol=1e-4):
            hints[0] = ("acc looks divided by row_sum: keep it unnormalised (divide once, "
                        "after the last tile); that is the state this exercise defines.")
        for index, name, rule in (
            (1, "row_max", "the largest score seen so far, per query"),
            (2, "row_sum", "sum of exp(score - row_max) over every key seen so far"),
            (0, "acc", "sum of exp(score - row_max) * value over every key seen so far "
             "(not yet divided by row_sum)"),
        ):
            expect_close(got[index], expected[index], f"{call}: {name}", atol=1e-4,
                         hint=hints[index] or f"{name} should be {rule}.")
    # Composed over tiles, the update must reproduce exact attention.
    for what, L, S, q_block, k_block, causal, scale in (
        ("(2, 3, 33, 16) queries, 50 keys, tiles of 8 x 7", 33, 50, 8, 7, False, 1.0),
        ("causal, 40 positions, tiles of 16 x 5", 40, 40, 16, 5, True, 1.0),
        ("large scores (entries x 20), tiles of 3 x 11", 17, 23, 3, 11, False, 20.0),
    ):
        q, k, v = noise(62, 2, 3, L, 16, scale=scale), noise(63, 2, 3, S, 16), \
            noise(64, 2, 3, S, 8)
        mask = attention.causal_mask(L, S) if causal else None
        expect_close(tiled_with_update(answer, q, k, v, q_block, k_block, causal),
                     reference_attention(q, k, v, mask),
                     f"tiled attention built from your update, {what}", atol=1e-4,
                     hint="Each step must keep acc and row_sum relative to the running maximum.")
