"""Chapter 03 (attention) exercises: scaled dot-product attention, masks, heads, RoPE and the
online-softmax step of FlashAttention, checked against llmlab.attention.

Shapes follow torch's ``scaled_dot_product_attention``: queries ``(..., L, E)``, keys
``(..., S, E)``, values ``(..., S, Ev)``; boolean masks are True where a query may attend.

Each check runs several cases, including awkward ones (one position, more keys than
queries, batch and head dimensions, a query with every key masked, scores large enough to
overflow a naive ``exp``, tile sizes that do not divide the length), says which case failed
with the expected and the actual value, and names the classic mistake when the answer
matches one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from llmlab import attention
from llmlab.course.checks import CheckFailed, exercise, expect_close, expect_shape, require_callable
from llmlab.course.checks import call_learner as _call

NEG_INF = float("-inf")

# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.attention


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(E), masked) v``; a query with every key masked gives zeros.

    >>> q = torch.tensor([[0.0, 2.0]]); k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> reference_attention(q, k, torch.tensor([[10.0], [20.0]]))
    tensor([[18.0443]])
    >>> reference_attention(q, k, torch.tensor([[10.0], [20.0]]), torch.tensor([[True, False]]))
    tensor([[10.]])
    """
    return attention.scaled_dot_product_attention(q, k, v, mask)


def reference_causal_mask(T: int, offset: int = 0) -> torch.Tensor:
    """Bool ``(T, offset + T)``: the ``T`` new queries sit at positions ``offset..offset+T-1``
    and query ``i`` may read keys ``0..offset + i``.

    >>> reference_causal_mask(2, offset=1).int()
    tensor([[1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0; got {offset!r}")
    return attention.causal_mask(T, T + offset, offset=offset)


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


def reference_repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``(B, H_kv, S, D) -> (B, H_kv * n_rep, S, D)``: KV head ``g`` serves query heads
    ``g * n_rep .. g * n_rep + n_rep - 1``.

    >>> reference_repeat_kv(torch.tensor([[[[1.0]], [[2.0]]]]), 2).flatten()
    tensor([1., 1., 2., 2.])
    """
    return attention.repeat_kv(x, n_rep)


def reference_apply_rope(
    x: torch.Tensor, positions: torch.Tensor, theta: float = 10_000.0
) -> torch.Tensor:
    """Rotate ``x (..., T, D)`` for the given integer ``positions (T,)``, pairing dimension
    ``j`` with ``j + D/2`` at frequency ``theta ** (-2j / D)`` (llmlab.attention's layout,
    the same as transformers' Llama).

    >>> x = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    >>> reference_apply_rope(x, torch.tensor([0])).tolist() == x.tolist()   # position 0: no turn
    True
    >>> reference_apply_rope(x, torch.tensor([1]))                 # (x0, x2) turned by 1 radian
    tensor([[0.5403, 0.0000, 0.8415, 0.0000]])
    """
    positions = torch.as_tensor(positions)
    if positions.dim() != 1 or positions.is_floating_point() or len(positions) != x.shape[-2]:
        raise ValueError(f"positions must be 1-D integers, one per position of x "
                         f"({x.shape[-2]}); got {tuple(positions.shape)} {positions.dtype}")
    cos, sin = attention.rotary_cos_sin(int(positions.max()) + 1, x.shape[-1], theta)
    return attention.apply_rotary(x, cos[positions].to(x.dtype), sin[positions].to(x.dtype))


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
# Plausible mistakes, used by the tests to make sure each check fails them


def _attention_with(q, k, v, mask=None, *, scale=None, dim=-1, invert=False, naive=False):
    """Variants of attention, each with one classic mistake; fully masked rows give zeros."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(mask if invert else ~mask, NEG_INF)
    if naive:  # exp without subtracting the maximum: overflows to inf, inf / inf = NaN
        exps = scores.exp()
        weights = exps / exps.sum(dim, keepdim=True)
    else:
        weights = scores.softmax(dim)
    return (weights if naive else weights.nan_to_num(0.0)) @ v


def _attention_no_scale(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, scale=1.0)


def _attention_softmax_over_queries(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, dim=-2)


def _attention_mask_inverted(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, invert=True)


def _attention_naive_exp(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, naive=True)


def _attention_divides_by_d(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, scale=1 / q.shape[-1])


def _causal_excludes_self(T, offset=0):
    return torch.ones(T, T + offset, dtype=torch.bool).tril(diagonal=offset - 1)


def _causal_inverted(T, offset=0):  # True where the key is in the future
    return torch.ones(T, T + offset, dtype=torch.bool).triu(diagonal=offset + 1)


def _causal_top_left(T, offset=0):  # ignores that the new queries come after the cache
    return torch.ones(T, T + offset, dtype=torch.bool).tril()


def _causal_square(T, offset=0):  # forgets the cached keys
    return torch.ones(T, T, dtype=torch.bool).tril()


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


def _repeat_tiled(x, n_rep):  # heads 0, 1, 0, 1 instead of 0, 0, 1, 1
    return x.repeat(1, n_rep, 1, 1)


def _repeat_positions(x, n_rep):  # repeats along the wrong dimension
    return x.repeat_interleave(n_rep, dim=-2)


def _repeat_expanded_last(x, n_rep):  # new axis after the heads' data, flattened wrongly
    B, H, S, D = x.shape
    return x[:, None].expand(B, n_rep, H, S, D).reshape(B, H * n_rep, S, D)


def _rope_with(x, positions, theta=10_000.0, *, interleaved=False, sign=1.0, exponent=2.0,
               ignore_positions=False):
    """Variants of RoPE, each with one classic mistake."""
    D = x.shape[-1]
    pos = torch.arange(x.shape[-2]) if ignore_positions else torch.as_tensor(positions)
    inv_freq = 1.0 / theta ** (exponent * torch.arange(D // 2, dtype=torch.float32) / D)
    angles = pos.float()[:, None] * inv_freq
    cos, sin = angles.cos(), sign * angles.sin()
    if interleaved:  # pairs (0, 1), (2, 3)...
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)
    a, b = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def _rope_interleaved(x, positions, theta=10_000.0):
    return _rope_with(x, positions, theta, interleaved=True)


def _rope_wrong_direction(x, positions, theta=10_000.0):
    return _rope_with(x, positions, theta, sign=-1.0)


def _rope_frequency_without_2(x, positions, theta=10_000.0):  # theta ** (-j / D)
    return _rope_with(x, positions, theta, exponent=1.0)


def _rope_ignores_positions(x, positions, theta=10_000.0):  # always 0..T-1
    return _rope_with(x, positions, theta, ignore_positions=True)


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
# Helpers for the checks



def _same(got: Any, wrong: Callable[..., Any], *args: Any, atol: float = 1e-5) -> bool:
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


def _first_hint(got: Any, args: tuple, mistakes: list[tuple[Callable[..., Any], str]],
                default: str, atol: float = 1e-5) -> str:
    for wrong, hint in mistakes:
        if _same(got, wrong, *args, atol=atol):
            return hint
    return default


def _close(got: Any, expected: torch.Tensor, what: str, atol: float, hint: str) -> None:
    """``expect_close``, with the hint also when the shape is wrong."""
    try:
        expect_shape(got, expected.shape, what)
    except CheckFailed as failure:
        raise CheckFailed(f"{failure}. {hint}".strip()) from None
    expect_close(got, expected, what, atol=atol, hint=hint)


def _randn(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# 1. Scaled dot-product attention with a boolean mask


def _attention_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
    padding = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]
    everything_masked = torch.ones(4, 6, dtype=torch.bool)
    everything_masked[2] = False  # query 2 is padding: no key to read
    return [
        ("one query, two keys (the worked example)", torch.tensor([[0.0, 2.0]]),
         torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[10.0], [20.0]]), None),
        ("q, k, v of shape (2, 3, 5, 16), no mask", _randn(1, 2, 3, 5, 16), _randn(2, 2, 3, 5, 16),
         _randn(3, 2, 3, 5, 16), None),
        ("more keys than queries (L=3, S=8) and values of another width (Ev=5)",
         _randn(4, 3, 8), _randn(5, 8, 8), _randn(6, 8, 5), None),
        ("a causal mask (6, 6) on (1, 2, 6, 8)", _randn(7, 1, 2, 6, 8), _randn(8, 1, 2, 6, 8),
         _randn(9, 1, 2, 6, 8), torch.ones(6, 6, dtype=torch.bool).tril()),
        ("a padding mask (2, 1, 1, 7): the second sequence has 4 real keys",
         _randn(10, 2, 2, 3, 4), _randn(11, 2, 2, 7, 4), _randn(12, 2, 2, 7, 3), padding),
        ("a single position (L = S = 1)", _randn(13, 2, 1, 4), _randn(14, 2, 1, 4),
         _randn(15, 2, 1, 4), torch.ones(1, 1, dtype=torch.bool)),
        ("large scores (entries ~30, so q.k/sqrt(d) is in the thousands)",
         _randn(16, 2, 4, 8, scale=30.0), _randn(17, 2, 4, 8, scale=30.0), _randn(18, 2, 4, 3),
         None),
        ("query 2 of 4 has every key masked (it must output zeros, not NaN)", _randn(19, 4, 8),
         _randn(20, 6, 8), _randn(21, 6, 2), everything_masked),
    ]


_ATTENTION_MISTAKES = [
    (_attention_no_scale, "Divide the scores by sqrt(d) (d = q.shape[-1]) before the softmax."),
    (_attention_divides_by_d, "Scale by 1/sqrt(d), not 1/d."),
    (_attention_softmax_over_queries, "Softmax over the keys (dim=-1): each query's weights "
     "sum to 1, not each key's."),
    (_attention_mask_inverted, "True means 'may attend': fill the scores with -inf where the "
     "mask is False (masked_fill(~mask, -inf))."),
]


@exercise("ch03.attention", title="scaled dot-product attention with a mask",
          reference=reference_attention,
          wrong_answers=[_attention_no_scale, _attention_softmax_over_queries,
                         _attention_mask_inverted, _attention_naive_exp])
def check_attention(answer) -> None:
    require_callable(answer, "attention")
    for what, q, k, v, mask in _attention_cases():
        args = (q, k, v) if mask is None else (q, k, v, mask)
        call = f"attention(...) for {what}"
        got = _call(answer, call, *(a.clone() for a in args))
        expected = reference_attention(*args)
        expect_shape(got, expected.shape, f"{call}: the output")
        hint = _first_hint(got, args, _ATTENTION_MISTAKES,
                           "softmax(q @ k.transpose(-2, -1) / sqrt(d), masked with -inf where "
                           "the mask is False) @ v.", atol=1e-4)
        if torch.isnan(got).any() or torch.isinf(got).any():
            if "large" in what:
                hint = ("exp() of large scores overflows to inf (inf/inf = NaN): subtract each "
                        "row's maximum first, or use torch.softmax, which does.")
            elif "every key masked" in what:
                hint = ("A row of only -inf has no softmax (0/0 = NaN). Set the weights of "
                        "masked keys to 0 after the softmax, e.g. "
                        "weights.masked_fill(~mask, 0.0).")
        expect_close(got, expected, call, atol=1e-4, hint=hint)
    q, k, v = _randn(22, 1, 2, 5, 8), _randn(23, 1, 2, 9, 8), _randn(24, 1, 2, 9, 8)
    mask = torch.ones(5, 9, dtype=torch.bool).tril(diagonal=4)
    library = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    expect_close(_call(answer, "attention(...) on torch's example", q, k, v, mask), library,
                 "attention compared with F.scaled_dot_product_attention (bool attn_mask)",
                 atol=1e-4)


# --------------------------------------------------------------------------------------------
# 2. The causal mask, with a KV cache offset

_CAUSAL_CASES = [(4, 0), (1, 0), (3, 2), (1, 5), (7, 1)]


@exercise("ch03.causal_mask", title="the causal mask (with a cache offset)",
          reference=reference_causal_mask,
          wrong_answers=[_causal_excludes_self, _causal_inverted, _causal_top_left,
                         _causal_square])
def check_causal_mask(answer) -> None:
    require_callable(answer, "causal_mask")
    for T, offset in _CAUSAL_CASES:
        call = f"causal_mask({T})" if offset == 0 else f"causal_mask({T}, offset={offset})"
        got = _call(answer, call, T) if offset == 0 else _call(answer, call, T, offset=offset)
        expected = reference_causal_mask(T, offset)
        shape_hint = ("" if not isinstance(got, torch.Tensor) or got.shape != (T, T) or offset == 0
                      else " The T new queries read the offset cached keys too: the mask has "
                           "offset + T columns.")
        try:
            expect_shape(got, expected.shape, call)
        except CheckFailed as failure:
            raise CheckFailed(f"{failure}.{shape_hint}") from None
        if got.dtype != torch.bool:
            raise CheckFailed(f"{call} has dtype {got.dtype}, expected torch.bool (True = may "
                              "attend), e.g. torch.ones(..., dtype=torch.bool).tril(...).")
        if torch.equal(got, expected):
            continue
        hint = _first_hint(got, (T, offset), [
            (_causal_inverted, "The mask is inverted: True must mark the keys a query MAY "
             "read (the past and itself), as in F.scaled_dot_product_attention."),
            (_causal_excludes_self, "Each query may read its own position: keep the diagonal."),
            (_causal_top_left, "The new queries come after the cache: query i sits at position "
             "offset + i and reads keys 0..offset + i (tril(diagonal=offset))."),
        ], "Query i (at position offset + i) may read keys 0..offset + i.")
        row = int((got != expected).any(-1).nonzero()[0])
        raise CheckFailed(f"{call}: row {row} (query at position {offset + row}) is "
                          f"{got[row].int().tolist()}, expected {expected[row].int().tolist()}. "
                          f"{hint}")


# --------------------------------------------------------------------------------------------
# 3. Splitting into heads

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
        hint = _first_hint(got, (x, n_heads), [
            (_split_without_transpose, "Move the heads before the positions: "
             ".view(B, T, H, D).transpose(1, 2)."),
            (_split_view_directly, "x.reshape(B, H, T, D) mixes positions into heads. First "
             ".view(B, T, H, D) (each position's features cut into H slices), then "
             ".transpose(1, 2)."),
            (_split_strided, "Head h owns the contiguous slice of features h*D .. (h+1)*D - 1, "
             "not every H-th feature."),
        ], "Expected x.view(B, T, H, D).transpose(1, 2); x holds 0, 1, 2... so each value "
           "tells where it came from.")
        _close(got, expected, call, atol=0.0, hint=hint)


# --------------------------------------------------------------------------------------------
# 4. Merging heads

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
        hint = _first_hint(got, (x,), [
            (_merge_without_transpose, "Put the positions back before the heads first: "
             ".transpose(1, 2) then .reshape(B, T, H * D) (reshape, because the transposed "
             "tensor is not contiguous)."),
            (_merge_interleaved, "Concatenate the heads' features (head 0's D features, then "
             "head 1's...), do not interleave them."),
        ], "Each position gets its heads' outputs side by side: shape (B, T, H * D).")
        if isinstance(got, torch.Tensor) and got.shape == (B, T, D) and H > 1:
            hint = ("Heads are concatenated, not averaged or summed: the output has H * D "
                    "features (the output projection mixes them afterwards).")
        _close(got, reference_merge_heads(x), call, atol=0.0, hint=hint)
    x = _randn(30, 2, 7, 12)
    expect_close(_call(answer, "merge_heads(split_heads(x, 3))", reference_split_heads(x, 3)),
                 x, "merge_heads(split_heads(x, 3)) for x of shape (2, 7, 12)", atol=0.0,
                 hint="merge_heads must undo split_heads exactly.")


# --------------------------------------------------------------------------------------------
# 5. Sharing key/value heads (grouped-query attention)

_REPEAT_CASES = [((1, 2, 3, 4), 3), ((2, 3, 5, 8), 3), ((1, 1, 4, 2), 4), ((2, 4, 1, 2), 2),
                 ((1, 3, 2, 2), 1)]


@exercise("ch03.repeat_kv", title="repeating key/value heads for GQA",
          reference=reference_repeat_kv,
          wrong_answers=[_repeat_tiled, _repeat_positions, _repeat_expanded_last])
def check_repeat_kv(answer) -> None:
    require_callable(answer, "repeat_kv")
    for shape, n_rep in _REPEAT_CASES:
        x = torch.arange(math.prod(shape), dtype=torch.float32).view(shape)
        call = f"repeat_kv(x of shape {shape}, n_rep={n_rep})"
        got = _call(answer, call, x.clone(), n_rep)
        expected = reference_repeat_kv(x, n_rep)
        hint = _first_hint(got, (x, n_rep), [
            (_repeat_tiled, "Query heads 0..n_rep-1 share KV head 0, the next n_rep share KV "
             "head 1: heads come out 0, 0, 1, 1 (repeat_interleave), not 0, 1, 0, 1 (repeat)."),
            (_repeat_expanded_last, "The copies of one KV head must be neighbours: insert the "
             "new axis right after the heads, (B, H_kv, n_rep, S, D), then reshape."),
        ], "Repeat along the heads (dim 1), each KV head n_rep times in a row.")
        if isinstance(got, torch.Tensor) and got.shape == _repeat_positions(x, n_rep).shape \
                and got.shape != expected.shape:
            hint = "Repeat the heads (dim 1), not the positions (dim 2)."
        _close(got, expected, call, atol=0.0, hint=hint)
    g = torch.Generator().manual_seed(31)
    q, k, v = (torch.randn(1, h, 5, 8, generator=g) for h in (6, 2, 2))
    library = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    ours = reference_attention(q, _call(answer, "repeat_kv(k, 3)", k, 3),
                               _call(answer, "repeat_kv(v, 3)", v, 3))
    expect_close(ours, library, "attention with repeat_kv(k, 3), repeat_kv(v, 3) compared with "
                 "F.scaled_dot_product_attention(..., enable_gqa=True)", atol=1e-5)


# --------------------------------------------------------------------------------------------
# 6. Rotary position embedding


def _rope_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, float, float]]:
    return [
        ("x of shape (5, 8) at positions 0..4", _randn(40, 5, 8), torch.arange(5), 10_000.0,
         1e-5),
        ("x of shape (2, 3, 6, 16) at positions 10..15 (after a 10-token cache)",
         _randn(41, 2, 3, 6, 16), torch.arange(10, 16), 10_000.0, 1e-5),
        ("a single position, 0 (nothing turns)", _randn(42, 1, 1, 1, 4), torch.tensor([0]),
         10_000.0, 1e-6),
        ("positions 3, 0, 7 (any order) with theta=100", _randn(43, 3, 4), torch.tensor([3, 0, 7]),
         100.0, 1e-5),
        ("x of shape (1, 2, 4, 64) at positions 1000..1003 with theta=500000 (Llama 3)",
         _randn(44, 1, 2, 4, 64), torch.arange(1000, 1004), 500_000.0, 2e-3),
    ]


@exercise("ch03.apply_rope", title="rotary position embedding from positions",
          reference=reference_apply_rope,
          wrong_answers=[_rope_interleaved, _rope_wrong_direction, _rope_frequency_without_2,
                         _rope_ignores_positions])
def check_apply_rope(answer) -> None:
    require_callable(answer, "apply_rope")
    for what, x, positions, theta, atol in _rope_cases():
        call = f"apply_rope for {what}"
        got = _call(answer, call, x.clone(), positions.clone(), theta)
        args = (x, positions, theta)
        hint = _first_hint(got, args, [
            (_rope_interleaved, "Pair dimension j with j + D/2 (the two halves, as in "
             "llmlab.attention.apply_rotary and Llama), not neighbours (0, 1), (2, 3)."),
            (_rope_wrong_direction, "Rotate the other way: (a, b) -> (a cos - b sin, "
             "b cos + a sin), with a in the first half."),
            (_rope_frequency_without_2, "Pair j turns at theta ** (-2j / D), j = 0..D/2-1: "
             "torch.arange(0, D, 2) / D."),
            (_rope_ignores_positions, "Use the given positions, not 0..T-1: with a KV cache the "
             "new tokens start at the cache's length."),
        ], "angle = position * theta ** (-2j / D) for pair (j, j + D/2); rotate each pair by "
           "its angle.", atol=max(atol, 1e-4))
        _close(got, reference_apply_rope(*args), call, atol=atol, hint=hint)
    # What RoPE is for: q_m . k_n depends only on m - n, so shifting every position by the
    # same amount changes no score.
    q, k = _randn(45, 1, 6, 16), _randn(46, 1, 6, 16)
    positions = torch.tensor([0, 1, 2, 3, 4, 5])
    near = _call(answer, "apply_rope(q, 0..5)", q, positions) @ \
        _call(answer, "apply_rope(k, 0..5)", k, positions).transpose(-2, -1)
    far = _call(answer, "apply_rope(q, 50..55)", q, positions + 50) @ \
        _call(answer, "apply_rope(k, 50..55)", k, positions + 50).transpose(-2, -1)
    expect_close(far, near, "q.k scores after moving every token 50 positions later", atol=1e-3,
                 hint="The angle must be position times a frequency, the same for q and k.")


# --------------------------------------------------------------------------------------------
# 7. The online-softmax step (FlashAttention)


def _start_state(*batch: int, rows: int, ev: int) -> tuple[torch.Tensor, ...]:
    return (torch.zeros(*batch, rows, ev), torch.full((*batch, rows), NEG_INF),
            torch.zeros(*batch, rows))


def _online_steps() -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    """Single steps, each from a state the reference produced (so states are consistent)."""
    first_scores, first_values = _randn(50, 3, 4), _randn(51, 4, 2)
    start = _start_state(rows=3, ev=2)
    after_one = reference_online_softmax_update(*start, first_scores, first_values)
    batch_start = _start_state(2, 3, rows=4, ev=5)
    batch_one = reference_online_softmax_update(*batch_start, _randn(52, 2, 3, 4, 6),
                                                _randn(53, 2, 3, 6, 5))
    masked = _randn(56, 3, 5)
    masked[0, 1:] = NEG_INF  # a causal tile: some keys are in the future
    masked[1, 3:] = NEG_INF
    return [
        ("the first tile, from acc=0, row_max=-inf, row_sum=0 (3 queries, 4 keys)",
         (*start, first_scores, first_values)),
        ("a second tile whose scores are larger (the maximum goes up: rescale)",
         (*after_one, first_scores + 3.0, _randn(54, 4, 2))),
        ("a second tile whose scores are smaller (the maximum stays)",
         (*after_one, first_scores - 4.0, _randn(55, 4, 2))),
        ("a tile with masked (-inf) scores", (*after_one, masked, _randn(57, 5, 2))),
        ("a tile with (batch, heads) = (2, 3) and much larger scores",
         (*batch_one, _randn(58, 2, 3, 4, 7, scale=50.0), _randn(59, 2, 3, 7, 5))),
        ("a tile of one key", (*batch_one, _randn(60, 2, 3, 4, 1), _randn(61, 2, 3, 1, 5))),
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


def _tiled(update: Callable[..., Any], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
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
        hints = [_first_hint(part, args, [(lambda *a, i=i, w=w: w(*a)[i], h)
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
        q, k, v = _randn(62, 2, 3, L, 16, scale=scale), _randn(63, 2, 3, S, 16), \
            _randn(64, 2, 3, S, 8)
        mask = attention.causal_mask(L, S) if causal else None
        expect_close(_tiled(answer, q, k, v, q_block, k_block, causal),
                     reference_attention(q, k, v, mask),
                     f"tiled attention built from your update, {what}", atol=1e-4,
                     hint="Each step must keep acc and row_sum relative to the running maximum.")
