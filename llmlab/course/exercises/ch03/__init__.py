"""Chapter 03 (attention) exercises: scaled dot-product attention, heads, positions (RoPE,
ALiBi), the online-softmax step of FlashAttention, causal linear attention and a sliding
window chosen by experiment, checked against llmlab.attention.

1. ``attention``: ``softmax(q k^T / sqrt(d))`` with a boolean mask, then the values;
2. ``split_heads``: ``(B, T, H * D) -> (B, H, T, D)``;
3. ``merge_heads``: the way back, heads concatenated;
4. ``apply_rope``: the rotary position embedding at given positions;
5. ``alibi_bias``: ALiBi's per-head distance penalty, from scratch;
6. ``online_softmax_update``: FlashAttention's step, one tile folded into a running state;
7. ``causal_linear_attention``: linear attention under a causal mask, as prefix sums;
8. ``choose_window`` (open-ended): a window and global tokens that keep fewer than 40% of
   the scores with an output within 2% of full attention, measured by the check.

Shapes follow torch's ``scaled_dot_product_attention``: queries ``(..., L, E)``, keys
``(..., S, E)``, values ``(..., S, Ev)``; boolean masks are True where a query may attend.

Each check runs several cases, including awkward ones (one position, more keys than
queries, batch and head dimensions, a query with every key masked, scores large enough to
overflow a naive ``exp``, tile sizes that do not divide the length), says which case failed
with the expected and the actual value, and names the classic mistake when the answer
matches one.

The checks live in one module per theme, each registering its exercises on import:
``dot_product`` (1), ``heads`` (2, 3), ``rotary`` (4), ``alibi`` (5), ``tiled_softmax`` (6),
``linear`` (7) and ``window`` (8).
"""

from __future__ import annotations

from llmlab.course.exercises.ch03.alibi import reference_alibi_bias

# Importing each theme module registers its exercises (the docstring gives the lab order).
from llmlab.course.exercises.ch03.dot_product import reference_attention
from llmlab.course.exercises.ch03.heads import reference_merge_heads, reference_split_heads
from llmlab.course.exercises.ch03.linear import (
    quadratic_causal_linear_attention,
    reference_causal_linear_attention,
)
from llmlab.course.exercises.ch03.rotary import reference_apply_rope

# tiled_with_update: the tile loop with the learner's update plugged in, a teaching copy of
# llmlab.attention.tiled_attention that tests/test_teaching_copies.py holds to it.
from llmlab.course.exercises.ch03.tiled_softmax import (
    reference_online_softmax_update,
    tiled_with_update,
)
from llmlab.course.exercises.ch03.window import (
    MAX_ERROR,
    MAX_KEPT,
    experiment_inputs,
    measure_window,
    reference_choose_window,
)

__all__ = [
    "MAX_ERROR",
    "MAX_KEPT",
    "experiment_inputs",
    "measure_window",
    "quadratic_causal_linear_attention",
    "reference_alibi_bias",
    "reference_apply_rope",
    "reference_attention",
    "reference_causal_linear_attention",
    "reference_choose_window",
    "reference_merge_heads",
    "reference_online_softmax_update",
    "reference_split_heads",
    "tiled_with_update",
]
