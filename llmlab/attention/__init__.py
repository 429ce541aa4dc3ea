"""Attention from scratch: masks, positions, multi-head, tiling (the FlashAttention idea) and a
linear-time approximation, each small enough to read in one screen.

One module per idea, each importing only the ones above it (nothing from ``llmlab.model``,
which builds its blocks from this package):

- ``core``: :func:`stable_softmax` and :func:`scaled_dot_product_attention`,
  ``softmax(q k^T * scale + mask) v`` the N x N way; :func:`causal_mask`,
  :func:`padding_mask`, :func:`sliding_window_mask`; :func:`split_heads`,
  :func:`merge_heads`, :func:`repeat_kv`.
- ``positions``: :func:`sinusoidal_positions`, rotary (:func:`rotary_cos_sin`,
  :func:`apply_rotary`) and ALiBi (:func:`alibi_slopes`, :func:`alibi_bias`).
- ``multihead``: :class:`MultiHeadAttention` (self- and cross-attention, MHA / GQA / MQA,
  RoPE or ALiBi, dropout, a :class:`KVCache`): the attention of ``llmlab.model``'s blocks;
  :func:`causal_allowed`.
- ``efficient``: :func:`tiled_attention` with an online softmax
  (:func:`online_softmax_update`), memory O(N) not O(N^2); :func:`performer_attention`,
  positive random features (FAVOR+), linear in N, approximate; :func:`causal_linear_attention`,
  the causal form of linear attention as a prefix sum.
- ``analysis``: :func:`kv_cache_bytes_per_token`; :func:`previous_token_scores` and
  :func:`induction_scores` (on :func:`repeated_random_tokens`) find the heads of a trained
  model that do those two jobs.

Shapes follow ``torch.nn.functional.scaled_dot_product_attention``: queries ``(..., L, E)``,
keys ``(..., S, E)``, values ``(..., S, Ev)``, output ``(..., L, Ev)``. A boolean mask is
True where a query *may* attend; a float mask is *added* to the scores.

>>> import torch
>>> q = k = v = torch.randn(1, 2, 5, 8)             # (batch, heads, positions, head_dim)
>>> out = scaled_dot_product_attention(q, k, v, is_causal=True)
>>> torch.allclose(out, tiled_attention(q, k, v, block_size=2, is_causal=True), atol=1e-6)
True
"""

from llmlab.attention.analysis import (
    induction_scores,
    kv_cache_bytes_per_token,
    previous_token_scores,
    repeated_random_tokens,
)
from llmlab.attention.core import (
    as_additive_mask,
    causal_mask,
    merge_heads,
    padding_mask,
    repeat_kv,
    scaled_dot_product_attention,
    sliding_window_mask,
    split_heads,
    stable_softmax,
)
from llmlab.attention.efficient import (
    causal_linear_attention,
    online_softmax_update,
    performer_approximation_error,
    performer_attention,
    positive_random_features,
    random_feature_matrix,
    tiled_attention,
)
from llmlab.attention.multihead import KVCache, MultiHeadAttention, causal_allowed
from llmlab.attention.positions import (
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    rotary_cos_sin,
    sinusoidal_positions,
)

__all__ = [
    "stable_softmax",
    "scaled_dot_product_attention",
    "causal_mask",
    "padding_mask",
    "sliding_window_mask",
    "as_additive_mask",
    "split_heads",
    "merge_heads",
    "repeat_kv",
    "sinusoidal_positions",
    "rotary_cos_sin",
    "apply_rotary",
    "alibi_slopes",
    "alibi_bias",
    "MultiHeadAttention",
    "KVCache",
    "causal_allowed",
    "online_softmax_update",
    "tiled_attention",
    "random_feature_matrix",
    "positive_random_features",
    "performer_attention",
    "performer_approximation_error",
    "causal_linear_attention",
    "kv_cache_bytes_per_token",
    "previous_token_scores",
    "induction_scores",
    "repeated_random_tokens",
]
