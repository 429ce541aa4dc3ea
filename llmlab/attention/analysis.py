"""Measuring attention: what a KV cache costs, and which heads of a trained model look at
the previous token or do induction (copy what followed the last occurrence).

>>> kv_cache_bytes_per_token(n_layers=2, n_kv_heads=1, head_dim=4, dtype=torch.float32)
64
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmlab.attention.core import positive_int, shape_of

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
        positive_int(name, value)
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
        got = (shape_of(attention) if isinstance(attention, torch.Tensor)
               else type(attention).__name__)
        raise ValueError(
            "attention must be a tensor of weights (..., T, T), queries by keys (e.g. "
            f"GPT.attention_maps, (layers, batch, heads, T, T)); got {got}")
    if attention.shape[-1] < 2:
        raise ValueError(f"attention must cover at least 2 positions; got {shape_of(attention)}")
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
    period = positive_int("period", period)
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
    vocab_size, period = positive_int("vocab_size", vocab_size), positive_int("period", period)
    repeats = positive_int("repeats", repeats)
    if not 0 <= low < vocab_size:
        raise ValueError(f"low must be in [0, vocab_size={vocab_size}); got {low}")
    generator = torch.Generator().manual_seed(seed)
    block = torch.randint(low, vocab_size, (period,), generator=generator)
    ids = torch.cat([torch.as_tensor(list(prefix), dtype=torch.long), block.repeat(repeats)])
    return ids[None]
