"""Chapter 03 (attention) exercises: scaled dot-product attention, masks, heads, RoPE and the
online-softmax step of FlashAttention, checked against llmlab.attention.

1. ``attention``: ``softmax(q k^T / sqrt(d))`` with a boolean mask, then the values;
2. ``causal_mask``: who may read whom, with a KV-cache offset;
3. ``split_heads``: ``(B, T, H * D) -> (B, H, T, D)``;
4. ``merge_heads``: the way back, heads concatenated;
5. ``repeat_kv``: each key/value head repeated for its group of query heads (GQA);
6. ``apply_rope``: the rotary position embedding at given positions;
7. ``online_softmax_update``: FlashAttention's step, one tile folded into a running state.

Shapes follow torch's ``scaled_dot_product_attention``: queries ``(..., L, E)``, keys
``(..., S, E)``, values ``(..., S, Ev)``; boolean masks are True where a query may attend.

Each check runs several cases, including awkward ones (one position, more keys than
queries, batch and head dimensions, a query with every key masked, scores large enough to
overflow a naive ``exp``, tile sizes that do not divide the length), says which case failed
with the expected and the actual value, and names the classic mistake when the answer
matches one.

The checks live in one module per theme, each registering its exercises on import:
``dot_product`` (1, 2), ``heads`` (3 to 5), ``rotary`` (6) and ``tiled_softmax`` (7).
"""

from __future__ import annotations

# Sorted names are also the order of the exercises, so the registry lists them as the lab does.
from llmlab.course.exercises.ch03.dot_product import reference_attention, reference_causal_mask
from llmlab.course.exercises.ch03.heads import (
    reference_merge_heads,
    reference_repeat_kv,
    reference_split_heads,
)
from llmlab.course.exercises.ch03.rotary import reference_apply_rope

# tiled_with_update: the tile loop with the learner's update plugged in, a teaching copy of
# llmlab.attention.tiled_attention that tests/test_teaching_copies.py holds to it.
from llmlab.course.exercises.ch03.tiled_softmax import (
    reference_online_softmax_update,
    tiled_with_update,
)

__all__ = [
    "reference_apply_rope",
    "reference_attention",
    "reference_causal_mask",
    "reference_merge_heads",
    "reference_online_softmax_update",
    "reference_repeat_kv",
    "reference_split_heads",
    "tiled_with_update",
]
