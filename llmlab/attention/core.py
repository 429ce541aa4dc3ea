"""The core of attention: softmax, ``softmax(q k^T * scale + mask) v``, masks and heads.

Shapes follow ``torch.nn.functional.scaled_dot_product_attention``: queries ``(..., L, E)``,
keys ``(..., S, E)``, values ``(..., S, Ev)``, output ``(..., L, Ev)``, where ``...`` is
usually ``(batch, heads)``. Masks use torch's convention: a boolean mask is True where a
query *may* attend; a float mask is *added* to the scores (``-inf`` forbids). A row whose
keys are all masked gets weights of zero and an output of zero (no NaN), as torch's SDPA
does.

>>> q = k = v = torch.randn(1, 2, 5, 8)             # (batch, heads, positions, head_dim)
>>> out = scaled_dot_product_attention(q, k, v, is_causal=True)
>>> torch.allclose(out, scaled_dot_product_attention(q, k, v, causal_mask(5)))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

NEG_INF = float("-inf")



# ----------------------------------------------------------------------------- checks


def shape_of(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, grouped_heads: bool = False
) -> None:
    """Fail early, naming the shapes, instead of deep inside a matmul."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
        if t.dim() < 2 or not t.is_floating_point():
            raise ValueError(
                f"{name} must be a floating-point tensor of shape (..., positions, dim); "
                f"got shape {shape_of(t)}, dtype {t.dtype}"
            )
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            "q and k must have the same last dimension (queries and keys are compared by a dot "
            f"product); got q {shape_of(q)} and k {shape_of(k)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must hold the same number of positions; got k {shape_of(k)} and "
            f"v {shape_of(v)}"
        )
    if k.shape[-2] == 0:
        raise ValueError(f"k must hold at least one position; got k {shape_of(k)}")
    if grouped_heads and (
        q.dim() < 3 or k.dim() < 3 or k.shape[-3] != v.shape[-3] or q.shape[-3] % k.shape[-3]
    ):
        raise ValueError(
            "enable_gqa needs q (..., H, L, E) and k, v (..., H_kv, S, E) with H divisible "
            f"by H_kv; got q {shape_of(q)}, k {shape_of(k)}, v {shape_of(v)}"
        )
    batch = slice(0, -3 if grouped_heads else -2)  # grouped heads are checked above
    try:
        torch.broadcast_shapes(q.shape[batch], k.shape[batch], v.shape[batch])
    except RuntimeError:
        raise ValueError(
            "the leading (batch, heads) dimensions of q, k, v must broadcast; "
            f"got q {shape_of(q)}, k {shape_of(k)}, v {shape_of(v)}"
        ) from None


def positive_int(name: str, value: object) -> int:
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


def check_mask(mask: torch.Tensor, scores_shape: torch.Size) -> None:
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
            f"(..., queries, keys); got mask {shape_of(mask)}"
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
    check_qkv(q, k, v, grouped_heads=enable_gqa)
    if enable_gqa:
        group = q.shape[-3] // k.shape[-3]
        k, v = repeat_kv(k, group), repeat_kv(v, group)
    L, S = q.shape[-2], k.shape[-2]
    if mask is not None:
        check_mask(mask, torch.Size((*torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]), L, S)))
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
    T = positive_int("T", T)
    S = T if S is None else positive_int("S", S)
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=offset)


def sliding_window_mask(
    T: int, window: int, *, n_global: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Bool ``(T, T)``, causal and local: query ``i`` sees keys ``i - window + 1 .. i``,
    and also the first ``n_global`` keys (global tokens).

    Each position reads only its last ``window`` positions (itself included), as in
    Mistral; stacking layers lets information travel further, ``window - 1`` per layer.
    ``n_global`` keeps a few *global* keys visible to every later query (Longformer's and
    BigBird's global tokens under a causal mask; StreamingLLM's "attention sinks").

    >>> sliding_window_mask(4, 2).int()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [0, 1, 1, 0],
            [0, 0, 1, 1]], dtype=torch.int32)
    >>> sliding_window_mask(4, 2, n_global=1).int()       # key 0 stays visible
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 1, 0],
            [1, 0, 1, 1]], dtype=torch.int32)
    """
    window = positive_int("window", window)
    if not isinstance(n_global, int) or isinstance(n_global, bool) or n_global < 0:
        raise ValueError(f"n_global must be an int >= 0 (how many first keys stay visible); "
                         f"got {n_global!r}")
    causal = causal_mask(T, device=device)
    allowed = causal & ~causal_mask(T, offset=-window, device=device)
    if n_global:
        allowed[:, :n_global] = causal[:, :n_global]
    return allowed


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
            f"got shape {shape_of(given)}, dtype {given.dtype}"
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
    n_heads = positive_int("n_heads", n_heads)
    if x.dim() != 3 or x.shape[-1] % n_heads:
        raise ValueError(
            f"split_heads expects (B, T, n_heads * head_dim) with the last dimension divisible "
            f"by n_heads={n_heads}; got shape {shape_of(x)}"
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
        raise ValueError(f"merge_heads expects (B, heads, T, head_dim); got shape {shape_of(x)}")
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``(..., H_kv, S, D) -> (..., H_kv * n_rep, S, D)``: each key/value head serves
    ``n_rep`` consecutive query heads (grouped-query attention).

    >>> repeat_kv(torch.tensor([[[1.0]], [[2.0]]]), 2).flatten()
    tensor([1., 1., 2., 2.])
    """
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=-3)
