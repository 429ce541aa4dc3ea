"""Multi-head attention as a layer, and the KV cache that lets decoding feed one token at
a time. :class:`MultiHeadAttention` is the attention of ``llmlab.model``'s blocks.

- :class:`MultiHeadAttention`: self- and cross-attention, MHA / GQA / MQA, RoPE or ALiBi,
  dropout on the weights, an optional :class:`KVCache`.
- :class:`KVCache`: every layer's keys and values, allocated once, filled left to right.
- :func:`causal_allowed`: which keys new queries may read after ``offset`` cached ones,
  skipping padding.

>>> mha = MultiHeadAttention(d_model=16, n_heads=2)
>>> x = torch.randn(1, 5, 16)
>>> y, weights = mha(x, is_causal=True, return_weights=True)
>>> y.shape, weights.shape                      # (B, T, d_model), (B, n_heads, T, S)
(torch.Size([1, 5, 16]), torch.Size([1, 2, 5, 5]))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from llmlab.attention.core import (
    NEG_INF,
    as_additive_mask,
    causal_mask,
    check_mask,
    positive_int,
    repeat_kv,
    shape_of,
)
from llmlab.attention.positions import alibi_bias, apply_rotary, rotary_cos_sin

Rope = tuple[torch.Tensor, torch.Tensor]

# ----------------------------------------------------------------------------- masks


def causal_allowed(
    offset: int, T: int, device: torch.device | str | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which keys each of ``T`` new queries may read, True = allowed, when ``offset``
    positions came before them: query ``t`` sits at position ``offset + t`` and reads keys
    ``0..offset + t`` (:func:`~llmlab.attention.causal_mask` ``(T, offset + T,
    offset=offset)``). With an ``attention_mask (B, offset + T)`` (0 = padding) padded keys
    are skipped too, except a padded query's own key: a query with nothing to read would
    turn into NaN and spread through the cache.

    >>> causal_allowed(1, 2).int()            # 1 cached position, 2 new ones
    tensor([[1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    >>> causal_allowed(0, 3, attention_mask=torch.tensor([[0, 1, 1]]))[0, 0].int()
    tensor([[1, 0, 0],
            [0, 1, 0],
            [0, 1, 1]], dtype=torch.int32)
    """
    query_pos = torch.arange(offset, offset + T, device=device)[:, None]
    key_pos = torch.arange(offset + T, device=device)[None, :]
    allowed = key_pos <= query_pos  # (T, S)
    if attention_mask is None:
        return allowed
    real_key = attention_mask.bool().to(device)[:, None, :]  # (B, 1, S)
    return (allowed & (real_key | (key_pos == query_pos)))[:, None]  # (B, 1, T, S)


# ----------------------------------------------------------------------------- KV cache


class KVCache:
    """The keys and values of every layer for the tokens seen so far, so that each new
    token costs one position of work instead of a pass over the whole prefix.

    Buffers are allocated once, ``(B, n_kv_head, max_len, head_dim)`` per layer, and filled
    left to right; ``length`` is the number of positions already stored, which is also the
    position of the next token (its offset for positions and for the causal mask). Each
    layer stores its new positions with :meth:`update`; :meth:`advance` then counts them
    once for all layers (``GPT.forward`` does both).

    >>> from types import SimpleNamespace           # or an llmlab.model.ModelConfig
    >>> config = SimpleNamespace(n_layer=2, n_kv_head=2, head_dim=8)
    >>> cache = KVCache.allocate(config, batch_size=1, max_len=16)
    >>> cache.keys[0].shape, cache.length
    (torch.Size([1, 2, 16, 8]), 0)
    >>> cache.bytes()                          # 2 layers x (K and V) x 2 heads x 16 x 8 x 4 B
    4096
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.keys, self.values = keys, values
        self.length = 0

    @classmethod
    def allocate(
        cls, config: Any, batch_size: int, max_len: int,
        dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
    ) -> KVCache:
        """Zeroed buffers for a model described by ``config``: anything with ``n_layer``,
        ``n_kv_head`` and ``head_dim`` (an ``llmlab.model.ModelConfig``)."""
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"a KV cache needs batch_size >= 1 and max_len >= 1; "
                             f"got {batch_size} and {max_len}")
        missing = [n for n in ("n_layer", "n_kv_head", "head_dim") if not hasattr(config, n)]
        if missing:
            raise ValueError(f"config must have n_layer, n_kv_head and head_dim (a ModelConfig);"
                             f" {type(config).__name__} lacks {', '.join(missing)}")
        shape = (batch_size, config.n_kv_head, max_len, config.head_dim)
        return cls([torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)],
                   [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)])

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' ``k, v (B, n_kv_head, T, head_dim)`` of ``layer`` after
        those already there; return all stored keys and values of that layer."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions; {self.length} are "
                             f"used and {k.shape[2]} more were given")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        """Count ``n`` new positions as stored (called once all layers have them)."""
        self.length += n

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on (speculative decoding rolls back the
        rejected draft tokens this way); later updates overwrite them."""
        if length < 0:
            raise ValueError(f"crop length must be >= 0; got {length}")
        self.length = min(self.length, length)

    def reorder(self, rows: torch.Tensor) -> None:
        """Make row ``i`` a copy of row ``rows[i]`` (beam search keeps the best beams)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]

    def bytes(self) -> int:
        """Memory held by the buffers, in bytes."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


# ----------------------------------------------------------------------------- multi-head


class MultiHeadAttention(nn.Module):
    """Multi-head attention on ``(B, T, d_model)``: self-attention, or cross-attention when
    a ``context`` ``(B, S, kv_dim)`` supplies the keys and values.

    ``n_kv_heads`` picks the family: ``= n_heads`` multi-head (MHA), ``1`` multi-query
    (MQA), in between grouped-query (GQA), where each key/value head serves
    ``n_heads // n_kv_heads`` consecutive query heads. Positions: none (as in
    ``torch.nn.MultiheadAttention``), rotary (``rope_theta``; query ``i`` and key ``j`` are
    rotated by their positions) or ALiBi (``alibi=True``). ``dropout`` drops attention
    weights while training.

    It is the attention of ``llmlab.model``'s blocks: ``GPT`` gives it the rotary angles
    of each row's positions (``rope``), a ``KVCache`` and the layer's index, and the keys
    each query may read when rows are padded (``mask``).

    >>> mha = MultiHeadAttention(d_model=32, n_heads=4, n_kv_heads=2, rope_theta=10_000.0)
    >>> x = torch.randn(2, 7, 32)
    >>> mha(x, is_causal=True).shape
    torch.Size([2, 7, 32])
    >>> memory = torch.randn(2, 5, 32)                  # e.g. an encoder's output
    >>> out, weights = mha(x, memory, return_weights=True)
    >>> weights.shape                                   # (B, n_heads, T, S)
    torch.Size([2, 4, 7, 5])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        *,
        kv_dim: int | None = None,
        head_dim: int | None = None,
        bias: bool = True,
        rope_theta: float | None = None,
        alibi: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        d_model, n_heads = positive_int("d_model", d_model), positive_int("n_heads", n_heads)
        n_kv_heads = n_heads if n_kv_heads is None else positive_int("n_kv_heads", n_kv_heads)
        kv_dim = d_model if kv_dim is None else positive_int("kv_dim", kv_dim)
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(
                    "d_model must be divisible by n_heads (or set head_dim); "
                    f"got d_model={d_model}, n_heads={n_heads}"
                )
            head_dim = d_model // n_heads
        head_dim = positive_int("head_dim", head_dim)
        if n_heads % n_kv_heads:
            raise ValueError(
                "n_heads must be divisible by n_kv_heads (each key/value head serves a whole "
                f"group of query heads); got n_heads={n_heads}, n_kv_heads={n_kv_heads}"
            )
        if rope_theta is not None and alibi:
            raise ValueError("choose one position scheme: rope_theta or alibi, not both")
        if rope_theta is not None and (head_dim % 2 or not rope_theta > 0):
            raise ValueError(
                f"rotary positions need an even head_dim and rope_theta > 0; got "
                f"head_dim={head_dim}, rope_theta={rope_theta}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.d_model, self.kv_dim, self.head_dim = d_model, kv_dim, head_dim
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.rope_theta, self.alibi = rope_theta, alibi
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        return_weights: bool = False,
        rope: Rope | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x (B, T, d_model) -> (B, T, d_model)``; keys and values come from ``context``
        ``(B, S, kv_dim)`` if given, else from ``x``. ``mask`` broadcasts to
        ``(B, n_heads, T, S)`` (e.g. :func:`~llmlab.attention.padding_mask`), True = attend
        as in SDPA (``torch.nn.MultiheadAttention``'s bool masks mean the opposite);
        ``return_weights`` adds the per-head weights ``(B, n_heads, T, S)``.

        Self-attention only: ``rope`` gives the rotary ``(cos, sin)`` of ``x``'s positions
        (default: positions ``0..T-1`` after the cache); with a ``cache`` the new keys and
        values are stored as ``layer``'s and the queries read every stored position (call
        ``cache.advance(T)`` once all layers are done), and ``is_causal`` lets query ``t``
        read the keys up to its own position ``cache.length + t``.

        The checks cost a few comparisons of shapes: this is also the model's hot path.
        """
        source = x if context is None else context
        self._check_inputs(x, source)
        if context is not None and (rope is not None or cache is not None):
            raise ValueError("rope and cache are for self-attention; with a context the "
                             "queries and keys are rotated by their own positions 0, 1, ...")
        offset = 0 if cache is None else cache.length
        q, k, v = self._project(x, source)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        elif self.rope_theta is not None:
            q, k = self._rotate(q, offset), self._rotate(k, offset if context is None else 0)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        T, S, given = x.shape[1], k.shape[-2], mask is not None
        if given:
            check_mask(mask, torch.Size((x.shape[0], self.n_heads, T, S)))
        if is_causal:
            causal = causal_mask(T, S, offset=offset, device=x.device)
            if mask is None or mask.dtype == torch.bool:
                mask = causal if mask is None else mask & causal
            else:
                mask = mask + as_additive_mask(causal, mask.dtype)
        if self.alibi:
            bias = alibi_bias(self.n_heads, T, S, offset=offset).to(x.device)
            mask = bias if mask is None else as_additive_mask(mask) + bias
        # A query that may read no key at all gets weights of zero (not NaN), as in SDPA.
        # Only a given mask can do that: causal masks and ALiBi leave every query a key.
        dead = None
        if given:
            dead = ~mask.any(-1, keepdim=True) if mask.dtype == torch.bool \
                else (mask == NEG_INF).all(-1, keepdim=True)
        y, weights = self._attend(q, k, v, mask, dead)
        return (y, weights) if return_weights else y

    def _project(
        self, x: torch.Tensor, source: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries ``(B, n_heads, T, head_dim)`` from ``x``, keys and values
        ``(B, n_kv_heads, S, head_dim)`` from ``source``: ``split_heads`` without its checks."""
        B, T, S, hd = x.shape[0], x.shape[1], source.shape[1], self.head_dim
        q = self.q_proj(x).view(B, T, self.n_heads, hd).transpose(1, 2)
        k = self.k_proj(source).view(B, S, self.n_kv_heads, hd).transpose(1, 2)
        v = self.v_proj(source).view(B, S, self.n_kv_heads, hd).transpose(1, 2)
        return q, k, v

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
        dead: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``softmax(q k^T / sqrt(head_dim) + mask) v`` (``scaled_dot_product_attention``'s
        formula, which the tests hold it to) over all heads, then the output projection;
        ``dead`` marks the queries whose weights must be zero. Returns ``(output (B, T,
        d_model), weights)``."""
        group = self.n_heads // self.n_kv_heads
        k, v = repeat_kv(k, group), repeat_kv(v, group)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, n_heads, T, S)
        # Softmax in at least float32 (exp() of half-precision scores loses too much); torch's
        # fused kernel subtracts each row's maximum first, as stable_softmax does.
        work = torch.promote_types(scores.dtype, torch.float32)
        if mask is not None and mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, NEG_INF)
        elif mask is not None:
            scores = scores.to(work) + mask
        weights = scores.to(work).softmax(dim=-1)
        if dead is not None:
            weights = weights.masked_fill(dead, 0.0)
        weights = weights.to(q.dtype)
        y = self.attn_dropout(weights) @ v  # (B, n_heads, T, head_dim)
        B, H, T, hd = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * hd)), weights

    def _rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """``x (..., n, head_dim)`` rotated as positions ``start .. start + n - 1``."""
        end = start + x.shape[-2]
        cos, sin = rotary_cos_sin(end, self.head_dim, self.rope_theta, device=x.device)
        return apply_rotary(x, cos[start:].to(x.dtype), sin[start:].to(x.dtype))

    def _check_inputs(self, x: torch.Tensor, source: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            got = shape_of(x) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be (B, T, d_model={self.d_model}); got {got}")
        if not isinstance(source, torch.Tensor) or source.dim() != 3 or (
            source.shape[-1] != self.kv_dim or source.shape[0] != x.shape[0]
        ):
            got = shape_of(source) if isinstance(source, torch.Tensor) else type(source).__name__
            raise ValueError(
                f"context must be (B={x.shape[0]}, S, kv_dim={self.kv_dim}); got {got}"
            )
