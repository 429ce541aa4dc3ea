"""Attention from scratch: masks, multi-head, tiling (the FlashAttention idea) and a
linear-time approximation, each small enough to read in one screen.

Shapes follow ``torch.nn.functional.scaled_dot_product_attention``: queries ``(..., L, E)``,
keys ``(..., S, E)``, values ``(..., S, Ev)``, output ``(..., L, Ev)``, where ``...`` is
usually ``(batch, heads)``. Masks use torch's convention: a boolean mask is True where a
query *may* attend; a float mask is *added* to the scores (``-inf`` forbids).

- :func:`scaled_dot_product_attention`: ``softmax(q k^T * scale + mask) v``, the N x N way;
  helpers :func:`causal_mask`, :func:`padding_mask`, :func:`sliding_window_mask`.
- :class:`MultiHeadAttention`: self- and cross-attention, MHA / GQA / MQA, RoPE or ALiBi.
- :func:`tiled_attention`: the same result one tile at a time, with an online softmax
  (:func:`online_softmax_update`): memory grows with N, not N^2.
- :func:`performer_attention`: positive random features (FAVOR+), linear in N, approximate.
- :func:`kv_cache_bytes_per_token`: what a KV cache costs, and why GQA/MQA shrink it.
- :func:`previous_token_scores`, :func:`induction_scores` (on :func:`repeated_random_tokens`):
  find the heads of a trained model that do those two jobs.

A row whose keys are all masked gets weights of zero and an output of zero (no NaN), as
torch's SDPA does.

>>> q = k = v = torch.randn(1, 2, 5, 8)             # (batch, heads, positions, head_dim)
>>> out = scaled_dot_product_attention(q, k, v, is_causal=True)
>>> torch.allclose(out, tiled_attention(q, k, v, block_size=2, is_causal=True), atol=1e-6)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from llmlab.model import apply_rotary, rotary_cos_sin

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
    "alibi_slopes",
    "alibi_bias",
    "MultiHeadAttention",
    "online_softmax_update",
    "tiled_attention",
    "random_feature_matrix",
    "positive_random_features",
    "performer_attention",
    "performer_approximation_error",
    "kv_cache_bytes_per_token",
    "previous_token_scores",
    "induction_scores",
    "repeated_random_tokens",
]

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- checks


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, grouped_heads: bool = False
) -> None:
    """Fail early, naming the shapes, instead of deep inside a matmul."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
        if t.dim() < 2 or not t.is_floating_point():
            raise ValueError(
                f"{name} must be a floating-point tensor of shape (..., positions, dim); "
                f"got shape {_shape(t)}, dtype {t.dtype}"
            )
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            "q and k must have the same last dimension (queries and keys are compared by a dot "
            f"product); got q {_shape(q)} and k {_shape(k)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must hold the same number of positions; got k {_shape(k)} and v {_shape(v)}"
        )
    if k.shape[-2] == 0:
        raise ValueError(f"k must hold at least one position; got k {_shape(k)}")
    if grouped_heads and (
        q.dim() < 3 or k.dim() < 3 or k.shape[-3] != v.shape[-3] or q.shape[-3] % k.shape[-3]
    ):
        raise ValueError(
            "enable_gqa needs q (..., H, L, E) and k, v (..., H_kv, S, E) with H divisible "
            f"by H_kv; got q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"
        )
    batch = slice(0, -3 if grouped_heads else -2)  # grouped heads are checked above
    try:
        torch.broadcast_shapes(q.shape[batch], k.shape[batch], v.shape[batch])
    except RuntimeError:
        raise ValueError(
            "the leading (batch, heads) dimensions of q, k, v must broadcast; "
            f"got q {_shape(q)}, k {_shape(k)}, v {_shape(v)}"
        ) from None


def _positive_int(name: str, value: object) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


# ----------------------------------------------------------------------------- softmax + SDPA


def stable_softmax(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax that subtracts each row's maximum first, so ``exp`` never overflows.

    ``softmax(x) = softmax(x - c)`` for any constant ``c``; with ``c = max(x)`` every
    exponent is ``<= 0``. A row that is entirely ``-inf`` (all keys masked) has no maximum
    to subtract: it comes out as zeros instead of NaN.

    >>> stable_softmax(torch.tensor([1000.0, 1000.0, float("-inf")]))   # naive exp overflows
    tensor([0.5000, 0.5000, 0.0000])
    >>> stable_softmax(torch.full((3,), float("-inf")))
    tensor([0., 0., 0.])
    """
    row_max = scores.amax(dim, keepdim=True)
    row_max = row_max.masked_fill(row_max == NEG_INF, 0.0)  # all masked: exp(-inf - 0) = 0
    exps = torch.exp(scores - row_max)
    total = exps.sum(dim, keepdim=True)
    return exps / total.clamp_min(torch.finfo(exps.dtype).tiny)  # 0 / tiny = 0 for those rows


def as_additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A boolean mask (True = attend) as the float mask to add to scores (0 or ``-inf``).

    >>> as_additive_mask(torch.tensor([True, False]))
    tensor([0., -inf])
    """
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, NEG_INF)
    if not mask.is_floating_point():
        raise ValueError(
            "mask must be bool (True = attend) or float (added to the scores); got "
            f"{mask.dtype} (for a 0/1 attention_mask use padding_mask(attention_mask))"
        )
    return mask.to(dtype)


def _check_mask(mask: torch.Tensor, scores_shape: torch.Size) -> None:
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor; got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise ValueError(
            "mask must be bool (True = attend) or float (added to the scores); got "
            f"{mask.dtype} (for a 0/1 attention_mask use padding_mask(attention_mask))"
        )
    try:
        fits = torch.broadcast_shapes(mask.shape, scores_shape) == scores_shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"mask must broadcast to the scores' shape {tuple(scores_shape)} "
            f"(..., queries, keys); got mask {_shape(mask)}"
        )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
    enable_gqa: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T * scale + mask) v``, materialising the ``(L, S)`` score matrix.

    ``scale`` defaults to ``1 / sqrt(E)``: a dot product of ``E`` unit-variance numbers has
    variance ``E``, and scores that large saturate the softmax (one weight near 1, the rest
    near 0, vanishing gradients). ``mask`` is bool (True = attend) or float (added);
    ``is_causal`` additionally applies :func:`causal_mask` (query ``i`` sees keys ``<= i``,
    torch's convention); unlike torch, a mask and ``is_causal`` may be combined.
    ``enable_gqa`` lets ``k``/``v`` have fewer heads (dim -3) than ``q``, as in torch.
    Returns the output ``(..., L, Ev)``, and the weights ``(..., L, S)`` if asked.

    Worked example: one query that matches the second key much better than the first.

    >>> q = torch.tensor([[0.0, 2.0]]); k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> v = torch.tensor([[10.0], [20.0]])
    >>> out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    >>> w                          # scores 0 and 2/sqrt(2): softmax([0, 1.414])
    tensor([[0.1956, 0.8044]])
    >>> out                        # 0.1956 * 10 + 0.8044 * 20
    tensor([[18.0443]])
    """
    _check_qkv(q, k, v, grouped_heads=enable_gqa)
    if enable_gqa:
        group = q.shape[-3] // k.shape[-3]
        k, v = repeat_kv(k, group), repeat_kv(v, group)
    L, S = q.shape[-2], k.shape[-2]
    if mask is not None:
        _check_mask(mask, torch.Size((*torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]), L, S)))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # Softmax in at least float32: exp() of half-precision scores loses too much.
    work = torch.promote_types(q.dtype, torch.float32)
    scores = (q.to(work) @ k.to(work).transpose(-2, -1)) * scale  # (..., L, S)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, NEG_INF)
    elif mask is not None:
        scores = scores + mask.to(work)
    if is_causal:
        scores = scores.masked_fill(~causal_mask(L, S, device=q.device), NEG_INF)
    weights = stable_softmax(scores)
    out = (weights @ v.to(work)).to(v.dtype)
    return (out, weights.to(v.dtype)) if return_weights else out


# ----------------------------------------------------------------------------- masks


def causal_mask(
    T: int, S: int | None = None, *, offset: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Bool ``(T, S)``: query ``i`` may attend key ``j`` iff ``j <= i + offset``.

    ``offset=0`` is torch's ``is_causal`` (aligned top-left). When the ``T`` queries are the
    *last* ``T`` of ``S`` positions (decoding with a KV cache), use ``offset=S - T``.

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    >>> causal_mask(1, 3, offset=2).int()            # one new token sees the whole cache
    tensor([[1, 1, 1]], dtype=torch.int32)
    """
    T = _positive_int("T", T)
    S = T if S is None else _positive_int("S", S)
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=offset)


def sliding_window_mask(
    T: int, window: int, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Bool ``(T, T)``, causal and local: query ``i`` sees keys ``i - window + 1 .. i``.

    Each position reads only its last ``window`` positions (itself included), as in
    Mistral; stacking layers lets information travel further, ``window - 1`` per layer.

    >>> sliding_window_mask(4, 2).int()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [0, 1, 1, 0],
            [0, 0, 1, 1]], dtype=torch.int32)
    """
    window = _positive_int("window", window)
    return causal_mask(T, device=device) & ~causal_mask(T, offset=-window, device=device)


def padding_mask(
    lengths_or_attention_mask: torch.Tensor | Sequence[int], max_len: int | None = None
) -> torch.Tensor:
    """Bool ``(B, 1, 1, S)``: True for real keys, False for padding (broadcasts over heads
    and queries of ``(B, H, L, S)`` scores).

    Give either the lengths of the ``B`` sequences (1-D; ``S = max_len`` or the longest) or
    a tokenizer's 0/1 ``attention_mask`` ``(B, S)``.

    >>> padding_mask([3, 1])[:, 0, 0].int()
    tensor([[1, 1, 1],
            [1, 0, 0]], dtype=torch.int32)
    >>> padding_mask(torch.tensor([[1, 1, 0]])).shape
    torch.Size([1, 1, 1, 3])
    """
    given = torch.as_tensor(lengths_or_attention_mask)
    if given.dim() == 2:
        if not bool(((given == 0) | (given == 1)).all()):
            raise ValueError("a 2-D attention_mask must hold only 0 and 1 (or False/True); "
                             f"got values {given.unique().tolist()[:6]}")
        return given.bool()[:, None, None, :]
    if given.dim() != 1 or given.numel() == 0 or given.is_floating_point():
        raise ValueError(
            "padding_mask takes 1-D integer lengths (B,) or a 0/1 attention_mask (B, S); "
            f"got shape {_shape(given)}, dtype {given.dtype}"
        )
    longest = int(given.max())
    S = longest if max_len is None else max_len
    if int(given.min()) < 0 or longest > S:
        raise ValueError(f"lengths must be in [0, max_len={S}]; got {given.tolist()}")
    return (torch.arange(S)[None, :] < given[:, None])[:, None, None, :]


# ----------------------------------------------------------------------------- heads


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(B, T, n_heads * D) -> (B, n_heads, T, D)``: each head gets its own slice of features.

    >>> split_heads(torch.arange(6.0).view(1, 1, 6), 3)[0, :, 0]   # head h holds features 2h, 2h+1
    tensor([[0., 1.],
            [2., 3.],
            [4., 5.]])
    """
    n_heads = _positive_int("n_heads", n_heads)
    if x.dim() != 3 or x.shape[-1] % n_heads:
        raise ValueError(
            f"split_heads expects (B, T, n_heads * head_dim) with the last dimension divisible "
            f"by n_heads={n_heads}; got shape {_shape(x)}"
        )
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, D) -> (B, T, H * D)``, the inverse of :func:`split_heads`.

    >>> x = torch.randn(2, 5, 12)
    >>> torch.equal(merge_heads(split_heads(x, 4)), x)
    True
    """
    if x.dim() != 4:
        raise ValueError(f"merge_heads expects (B, heads, T, head_dim); got shape {_shape(x)}")
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``(..., H_kv, S, D) -> (..., H_kv * n_rep, S, D)``: each key/value head serves
    ``n_rep`` consecutive query heads (grouped-query attention).

    >>> repeat_kv(torch.tensor([[[1.0]], [[2.0]]]), 2).flatten()
    tensor([1., 1., 2., 2.])
    """
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=-3)


# ----------------------------------------------------------------------------- ALiBi


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes: a geometric sequence ``2^(-8/n), 2^(-16/n), ...``.

    For ``n`` a power of two that is the whole rule. Otherwise the ``p`` slopes of the
    largest power of two ``p < n`` come first, then every other slope of the ``2p`` rule
    fills the remaining heads (Press et al., 2022, as in BLOOM).

    >>> alibi_slopes(4)
    tensor([0.2500, 0.0625, 0.0156, 0.0039])
    >>> alibi_slopes(3)                 # 2 heads' slopes, then the first of the 4-head rule
    tensor([0.0625, 0.0039, 0.2500])
    """
    n_heads = _positive_int("n_heads", n_heads)

    def geometric(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    p = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(geometric(p) + geometric(2 * p)[0::2][: n_heads - p])


def alibi_bias(n_heads: int, T: int, S: int | None = None) -> torch.Tensor:
    """Float ``(n_heads, T, S)`` to add to the scores: ``-slope_h * |i - j|``.

    Instead of position embeddings, ALiBi makes each head penalise distant keys linearly,
    steeply in the first heads and gently in the last. Under a causal mask this is the
    paper's ``-m * (i - j)``; softmax ignores a per-row constant, which is why BLOOM can
    add ``m * j`` instead.

    >>> alibi_bias(1, 3)                 # one head, slope 1/256
    tensor([[[ 0.0000, -0.0039, -0.0078],
             [-0.0039,  0.0000, -0.0039],
             [-0.0078, -0.0039,  0.0000]]])
    """
    T = _positive_int("T", T)
    S = T if S is None else _positive_int("S", S)
    distance = (torch.arange(T)[:, None] - torch.arange(S)[None, :]).abs()
    return alibi_slopes(n_heads)[:, None, None] * -distance


# ----------------------------------------------------------------------------- multi-head


class MultiHeadAttention(nn.Module):
    """Multi-head attention on ``(B, T, d_model)``: self-attention, or cross-attention when
    a ``context`` ``(B, S, kv_dim)`` supplies the keys and values.

    ``n_kv_heads`` picks the family: ``= n_heads`` multi-head (MHA), ``1`` multi-query
    (MQA), in between grouped-query (GQA), where each key/value head serves
    ``n_heads // n_kv_heads`` consecutive query heads. Positions: none (as in
    ``torch.nn.MultiheadAttention``), rotary (``rope_theta``; query ``i`` and key ``j`` are
    rotated by their positions) or ALiBi (``alibi=True``). No dropout.

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
    ) -> None:
        super().__init__()
        d_model, n_heads = _positive_int("d_model", d_model), _positive_int("n_heads", n_heads)
        n_kv_heads = n_heads if n_kv_heads is None else _positive_int("n_kv_heads", n_kv_heads)
        kv_dim = d_model if kv_dim is None else _positive_int("kv_dim", kv_dim)
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(
                    "d_model must be divisible by n_heads (or set head_dim); "
                    f"got d_model={d_model}, n_heads={n_heads}"
                )
            head_dim = d_model // n_heads
        head_dim = _positive_int("head_dim", head_dim)
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
        self.d_model, self.kv_dim, self.head_dim = d_model, kv_dim, head_dim
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.rope_theta, self.alibi = rope_theta, alibi
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x (B, T, d_model) -> (B, T, d_model)``; keys and values come from ``context``
        ``(B, S, kv_dim)`` if given, else from ``x``. ``mask`` broadcasts to
        ``(B, n_heads, T, S)`` (e.g. :func:`padding_mask`), True = attend as in SDPA
        (``torch.nn.MultiheadAttention``'s bool masks mean the opposite); ``return_weights``
        adds the per-head weights ``(B, n_heads, T, S)``."""
        source = x if context is None else context
        self._check_inputs(x, source)
        T, S = x.shape[1], source.shape[1]
        q = split_heads(self.q_proj(x), self.n_heads)  # (B, n_heads, T, head_dim)
        k = split_heads(self.k_proj(source), self.n_kv_heads)  # (B, n_kv_heads, S, head_dim)
        v = split_heads(self.v_proj(source), self.n_kv_heads)
        if self.rope_theta is not None:
            q, k = self._rotate(q), self._rotate(k)
        if self.alibi:
            bias = alibi_bias(self.n_heads, T, S).to(x.device, x.dtype)
            mask = bias if mask is None else as_additive_mask(mask, x.dtype) + bias
        group = self.n_heads // self.n_kv_heads
        y, weights = scaled_dot_product_attention(
            q, repeat_kv(k, group), repeat_kv(v, group), mask,
            is_causal=is_causal, return_weights=True)
        y = self.o_proj(merge_heads(y))
        return (y, weights) if return_weights else y

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = rotary_cos_sin(x.shape[-2], self.head_dim, self.rope_theta, device=x.device)
        return apply_rotary(x, cos.to(x.dtype), sin.to(x.dtype))

    def _check_inputs(self, x: torch.Tensor, source: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            got = _shape(x) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be (B, T, d_model={self.d_model}); got {got}")
        if not isinstance(source, torch.Tensor) or source.dim() != 3 or (
            source.shape[-1] != self.kv_dim or source.shape[0] != x.shape[0]
        ):
            got = _shape(source) if isinstance(source, torch.Tensor) else type(source).__name__
            raise ValueError(
                f"context must be (B={x.shape[0]}, S, kv_dim={self.kv_dim}); got {got}"
            )


# ----------------------------------------------------------------------------- tiling


def online_softmax_update(
    acc: torch.Tensor,
    row_max: torch.Tensor,
    row_sum: torch.Tensor,
    scores: torch.Tensor,
    values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one tile of scores ``(..., Lb, Sb)`` and its values ``(..., Sb, Ev)`` into the
    running state of a block of queries; return the new ``(acc, row_max, row_sum)``.

    The state after any number of tiles is: ``row_max (..., Lb)``, the largest score seen;
    ``row_sum (..., Lb)``, ``sum exp(score - row_max)``; ``acc (..., Lb, Ev)``,
    ``sum exp(score - row_max) * value``. A new tile may raise the maximum, so the old sums
    are rescaled by ``exp(old_max - new_max)`` before the tile's terms are added. At the
    end, ``acc / row_sum`` is exactly ``softmax(scores) @ values``. Start from
    ``acc = 0, row_max = -inf, row_sum = 0``.

    >>> scores, values = torch.tensor([[1.0, 3.0, 2.0]]), torch.tensor([[1.0], [2.0], [3.0]])
    >>> state = torch.zeros(1, 1), torch.full((1,), float("-inf")), torch.zeros(1)
    >>> state = online_softmax_update(*state, scores[:, :2], values[:2])     # keys 0, 1
    >>> acc, row_max, row_sum = online_softmax_update(*state, scores[:, 2:], values[2:])
    >>> row_max, acc / row_sum[:, None]
    (tensor([3.]), tensor([[2.1547]]))
    >>> scores.softmax(-1) @ values
    tensor([[2.1547]])
    """
    new_max = torch.maximum(row_max, scores.amax(-1))
    # Rows with every score so far -inf have no maximum: shift by 0 so exp gives 0, not NaN.
    shift = new_max.masked_fill(new_max == NEG_INF, 0.0)
    rescale = torch.exp(row_max - shift)  # how much the old maximum overstated the new one
    p = torch.exp(scores - shift[..., None])
    row_sum = row_sum * rescale + p.sum(-1)
    acc = acc * rescale[..., None] + p @ values
    return acc, new_max, row_sum


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_size: int = 128,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    query_block_size: int | None = None,
) -> torch.Tensor:
    """Exact attention computed tile by tile, FlashAttention-style: the ``(L, S)`` score
    matrix never exists, only ``(query_block_size, block_size)`` tiles of it.

    For each block of queries, loop over blocks of keys/values and fold each tile in with
    :func:`online_softmax_update`; divide by the running denominator at the end. Extra
    memory is ``O(query_block_size * block_size)`` instead of ``O(L * S)``. With
    ``is_causal`` (torch's top-left alignment) tiles entirely in the future are skipped,
    about half of them. Blocks need not divide the lengths.

    >>> q, k, v = torch.randn(2, 7, 4), torch.randn(2, 9, 4), torch.randn(2, 9, 3)
    >>> exact = scaled_dot_product_attention(q, k, v)
    >>> torch.allclose(tiled_attention(q, k, v, block_size=4), exact, atol=1e-6)
    True
    """
    _check_qkv(q, k, v)
    block_size = _positive_int("block_size", block_size)
    q_block = block_size if query_block_size is None else query_block_size
    q_block = _positive_int("query_block_size", q_block)
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    work = torch.promote_types(q.dtype, torch.float32)
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    outputs = []
    for i0 in range(0, L, q_block):
        q_tile = q[..., i0 : i0 + q_block, :].to(work) * scale
        rows = q_tile.shape[-2]
        acc = torch.zeros(*batch, rows, v.shape[-1], dtype=work, device=q.device)
        row_max = torch.full((*batch, rows), NEG_INF, dtype=work, device=q.device)
        row_sum = torch.zeros(*batch, rows, dtype=work, device=q.device)
        last_key = min(S, i0 + rows) if is_causal else S  # later keys are all in the future
        for j0 in range(0, last_key, block_size):
            k_tile = k[..., j0 : j0 + block_size, :].to(work)
            scores = q_tile @ k_tile.transpose(-2, -1)
            if is_causal and j0 + k_tile.shape[-2] - 1 > i0:  # the tile crosses the diagonal
                allowed = causal_mask(rows, k_tile.shape[-2], offset=i0 - j0, device=q.device)
                scores = scores.masked_fill(~allowed, NEG_INF)
            v_tile = v[..., j0 : j0 + block_size, :].to(work)
            acc, row_max, row_sum = online_softmax_update(acc, row_max, row_sum, scores, v_tile)
        outputs.append(acc / row_sum.clamp_min(torch.finfo(work).tiny)[..., None])
    return torch.cat(outputs, dim=-2).to(v.dtype)


# ----------------------------------------------------------------------------- Performer


def random_feature_matrix(
    n_features: int, head_dim: int, *, seed: int = 0, orthogonal: bool = True
) -> torch.Tensor:
    """``(n_features, head_dim)`` random directions ``w`` with rows distributed like
    ``N(0, I)``; ``orthogonal`` makes rows within each block of ``head_dim`` orthogonal
    (FAVOR+'s variance reduction) while keeping Gaussian-like lengths.

    >>> w = random_feature_matrix(8, 4, seed=0)
    >>> w.shape, bool(abs(w[0] @ w[1]) < 1e-5)       # rows 0 and 1 share a block: orthogonal
    (torch.Size([8, 4]), True)
    """
    n_features = _positive_int("n_features", n_features)
    head_dim = _positive_int("head_dim", head_dim)
    gen = torch.Generator().manual_seed(seed)
    if not orthogonal:
        return torch.randn(n_features, head_dim, generator=gen)
    n_blocks = math.ceil(n_features / head_dim)
    basis, upper = torch.linalg.qr(torch.randn(n_blocks, head_dim, head_dim, generator=gen))
    # QR fixes signs by convention; flipping by sign(diag R) makes each rotation uniformly
    # random (otherwise directions are biased, and so is the estimate).
    basis = basis * torch.sign(torch.diagonal(upper, dim1=-2, dim2=-1))[:, None, :]
    rows = basis.transpose(-2, -1).reshape(-1, head_dim)[:n_features]  # orthonormal per block
    lengths = torch.randn(n_features, head_dim, generator=gen).norm(dim=1)  # chi(head_dim)
    return rows * lengths[:, None]


def positive_random_features(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """FAVOR+'s ``phi(x) = exp(w . x - |x|^2 / 2) / sqrt(m)`` for each row ``w`` of
    ``projection (m, d)``; ``x (..., N, d) -> (..., N, m)``.

    For ``w ~ N(0, I)``, ``E[exp(w.q - |q|^2/2) exp(w.k - |k|^2/2)] = exp(q . k)``: the
    softmax kernel, estimated by an average of positive terms (so weights never go
    negative, unlike sin/cos features).

    >>> q, k = torch.tensor([[0.3, -0.2]]), torch.tensor([[0.5, 0.1]])
    >>> w = random_feature_matrix(20_000, 2, seed=0)
    >>> estimate = positive_random_features(q, w) @ positive_random_features(k, w).T
    >>> round(float(estimate), 2), round(float(torch.exp(q @ k.T)), 2)
    (1.14, 1.14)
    """
    return torch.exp(_feature_logits(x, projection)) / math.sqrt(projection.shape[0])


def _feature_logits(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    return x @ projection.T.to(x.dtype) - x.pow(2).sum(-1, keepdim=True) / 2


def performer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_features: int = 256,
    seed: int = 0,
    *,
    scale: float | None = None,
    orthogonal: bool = True,
) -> torch.Tensor:
    """Approximate (non-causal) softmax attention in time and memory linear in the length.

    Replace ``exp(q . k * scale)`` by ``phi(q) . phi(k)`` (:func:`positive_random_features`
    of ``q`` and ``k`` scaled by ``sqrt(scale)``); then
    ``sum_j phi(q).phi(k_j) v_j = phi(q) @ (phi(K)^T V)``: the ``(m, Ev)`` matrix in
    brackets is computed once, and no ``(L, S)`` matrix is ever formed. More features, less
    error (see :func:`performer_approximation_error`). The estimator's variance grows like
    ``exp(|q + k|^2 * scale)``: it is good for queries and keys of small norm and poor for
    large ones (unit-variance entries in 64 dimensions are already too large).

    >>> gen = torch.Generator().manual_seed(0)
    >>> q, k, v = torch.randn(3, 1, 64, 16, generator=gen).unbind(0)
    >>> q, k = q / 2, k / 2                     # small scores: see the note on norms above
    >>> exact = scaled_dot_product_attention(q, k, v)
    >>> error = (performer_attention(q, k, v, n_features=1024) - exact).norm() / exact.norm()
    >>> bool(error < 0.1)
    True
    """
    _check_qkv(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if not scale > 0:
        raise ValueError(f"performer_attention needs scale > 0; got {scale}")
    work = torch.promote_types(q.dtype, torch.float32)
    w = random_feature_matrix(n_features, q.shape[-1], seed=seed, orthogonal=orthogonal)
    w = w.to(device=q.device, dtype=work)
    root = math.sqrt(scale)  # exp(scale * q.k) = exp((root q) . (root k))
    q_logits = _feature_logits(q.to(work) * root, w)
    k_logits = _feature_logits(k.to(work) * root, w)
    # Subtracting a maximum keeps exp() finite; a factor shared by one query's terms, or
    # by all keys, cancels between numerator and denominator.
    phi_q = torch.exp(q_logits - q_logits.amax(-1, keepdim=True))
    phi_k = torch.exp(k_logits - k_logits.amax((-2, -1), keepdim=True))
    kv = phi_k.transpose(-2, -1) @ v.to(work)  # (..., m, Ev): the keys, summarised once
    normaliser = phi_q @ phi_k.sum(-2).unsqueeze(-1)  # (..., L, 1): sum_j phi(q).phi(k_j)
    return ((phi_q @ kv) / normaliser).to(v.dtype)


def performer_approximation_error(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_counts: Sequence[int] = (16, 64, 256, 1024),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    *,
    orthogonal: bool = True,
) -> dict[int, float]:
    """Mean relative error ``|performer - exact| / |exact|`` (Frobenius norms) over
    ``seeds``, for each number of random features.

    >>> gen = torch.Generator().manual_seed(0)
    >>> q, k, v = torch.randn(3, 1, 32, 8, generator=gen).unbind(0)
    >>> errors = performer_approximation_error(q, k, v, feature_counts=(8, 512))
    >>> errors[512] < errors[8]
    True
    """
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    exact = scaled_dot_product_attention(q, k, v)
    errors = {}
    for m in feature_counts:
        rel = [
            float((performer_attention(q, k, v, m, seed, orthogonal=orthogonal) - exact).norm()
                  / exact.norm())
            for seed in seeds
        ]
        errors[m] = sum(rel) / len(rel)
    return errors


# ----------------------------------------------------------------------------- KV cache


def kv_cache_bytes_per_token(
    n_layers: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype | str = torch.float16
) -> int:
    """Bytes a KV cache stores per token: a key and a value vector per layer and KV head,
    ``2 * n_layers * n_kv_heads * head_dim * bytes_per_number``.

    Worked example, SmolLM2-135M (30 layers, 3 KV heads of 64 dims) in float16:
    2 * 30 * 3 * 64 * 2 = 23,040 bytes per token; with 9 KV heads (plain MHA) it would be 3x.

    >>> kv_cache_bytes_per_token(30, 3, 64, torch.float16)
    23040
    >>> kv_cache_bytes_per_token(30, 9, 64, "bfloat16")
    69120
    """
    for name, value in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads),
                        ("head_dim", head_dim)):
        _positive_int(name, value)
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype must be a torch dtype or its name ('float16', ...); "
                             f"got {dtype!r}")
        dtype = resolved
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch dtype or its name; got {dtype!r}")
    return 2 * n_layers * n_kv_heads * head_dim * dtype.itemsize


# ----------------------------------------------------------------------------- head analysis


def _check_attention_maps(attention: torch.Tensor) -> torch.Tensor:
    if not isinstance(attention, torch.Tensor) or attention.dim() < 2 or (
        attention.shape[-1] != attention.shape[-2]
    ):
        got = _shape(attention) if isinstance(attention, torch.Tensor) else type(attention).__name__
        raise ValueError(
            "attention must be a tensor of weights (..., T, T), queries by keys (e.g. "
            f"GPT.attention_maps, (layers, batch, heads, T, T)); got {got}")
    if attention.shape[-1] < 2:
        raise ValueError(f"attention must cover at least 2 positions; got {_shape(attention)}")
    return attention.float() if not attention.is_floating_point() else attention


def previous_token_scores(attention: torch.Tensor) -> torch.Tensor:
    """Mean weight each query ``t >= 1`` puts on key ``t - 1``: ``(..., T, T) -> (...)``.

    A *previous-token head* scores near 1: it copies its left neighbour's identity into
    each position, which later heads (induction heads) build on.

    >>> looks_back = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> looks_at_self = torch.eye(3)
    >>> previous_token_scores(torch.stack([looks_back, looks_at_self]))
    tensor([1., 0.])
    """
    attention = _check_attention_maps(attention)
    return attention.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


def induction_scores(attention: torch.Tensor, period: int, start: int = 0) -> torch.Tensor:
    """Mean weight from each token of a repeat to the token that *followed* its previous
    occurrence: ``(..., T, T) -> (...)``.

    The input must be a block of ``period`` tokens starting at position ``start`` and then
    repeated (``x[t] == x[t - period]`` for ``t >= start + period``; positions before
    ``start`` are a prefix such as BOS). An *induction head* at query ``t`` looks up the
    earlier ``x[t]`` at ``t - period`` and attends to its successor ``t - period + 1``:
    it predicts that what came next last time comes next again. Random tokens make that
    the only way to predict the repeat, so a high score is the mechanism, not chance.

    >>> period, T = 2, 5                     # positions: prefix, A, B, A, B
    >>> perfect = torch.zeros(T, T)
    >>> perfect[:, 0] = 1.0                  # rows that cannot do induction rest on the prefix
    >>> perfect[3, 0], perfect[3, 2] = 0.0, 1.0     # the 2nd A reads the 1st B (position 2)
    >>> perfect[4, 0], perfect[4, 3] = 0.0, 1.0     # the 2nd B reads the 2nd A (position 3)
    >>> induction_scores(perfect, period=2, start=1)
    tensor(1.)
    >>> induction_scores(torch.eye(T), period=2, start=1)
    tensor(0.)
    """
    attention = _check_attention_maps(attention)
    period = _positive_int("period", period)
    T = attention.shape[-1]
    if period < 2 or type(start) is not int or start < 0 or start + period >= T:
        raise ValueError(
            "induction_scores needs period >= 2 (with period 1 the token after the earlier "
            "occurrence is the query itself) and at least one repeated token, start + "
            f"period < T = {T}; got period={period}, start={start}")
    queries = torch.arange(start + period, T, device=attention.device)
    return attention[..., queries, queries - period + 1].mean(-1)


def repeated_random_tokens(
    vocab_size: int, period: int, repeats: int = 2, *, prefix: Sequence[int] = (),
    seed: int = 0, low: int = 0,
) -> torch.Tensor:
    """``prefix`` followed by ``repeats`` copies of ``period`` random ids from
    ``[low, vocab_size)``, as a ``(1, len(prefix) + repeats * period)`` batch: the input
    of :func:`induction_scores` (with ``start=len(prefix)``).

    >>> ids = repeated_random_tokens(1000, period=4, prefix=[1], seed=0)
    >>> ids.shape, torch.equal(ids[0, 1:5], ids[0, 5:9])
    (torch.Size([1, 9]), True)
    """
    vocab_size, period = _positive_int("vocab_size", vocab_size), _positive_int("period", period)
    repeats = _positive_int("repeats", repeats)
    if not 0 <= low < vocab_size:
        raise ValueError(f"low must be in [0, vocab_size={vocab_size}); got {low}")
    generator = torch.Generator().manual_seed(seed)
    block = torch.randint(low, vocab_size, (period,), generator=generator)
    ids = torch.cat([torch.as_tensor(list(prefix), dtype=torch.long), block.repeat(repeats)])
    return ids[None]
