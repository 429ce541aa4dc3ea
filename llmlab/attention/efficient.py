"""Attention without the N x N score matrix: exact and tiled, or approximate and linear.

- :func:`tiled_attention`: the same result as :func:`~llmlab.attention.scaled_dot_product_attention`
  one tile at a time, with an online softmax (:func:`online_softmax_update`): memory grows
  with N, not N^2 (the FlashAttention idea).
- :func:`performer_attention`: positive random features (FAVOR+), linear in N, approximate;
  :func:`performer_approximation_error` measures how approximate.
- :func:`causal_linear_attention`: linear attention under a causal mask, for any positive
  feature map: a prefix sum over positions, parallel in training, a recurrence in decoding.

>>> q = k = v = torch.randn(1, 2, 5, 8)
>>> exact = scaled_dot_product_attention(q, k, v, is_causal=True)
>>> torch.allclose(exact, tiled_attention(q, k, v, block_size=2, is_causal=True), atol=1e-6)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from llmlab.attention.core import (
    NEG_INF,
    causal_mask,
    check_qkv,
    positive_int,
    scaled_dot_product_attention,
    shape_of,
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
    check_qkv(q, k, v)
    block_size = positive_int("block_size", block_size)
    q_block = block_size if query_block_size is None else query_block_size
    q_block = positive_int("query_block_size", q_block)
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
    n_features = positive_int("n_features", n_features)
    head_dim = positive_int("head_dim", head_dim)
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
    check_qkv(q, k, v)
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


# ----------------------------------------------------------------------------- causal linear


def causal_linear_attention(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, *, eps: float = 1e-12
) -> torch.Tensor:
    """Causal linear attention: ``out_i = phi_q_i . S_i / (phi_q_i . z_i)`` with the prefix
    sums ``S_i = sum_{j<=i} phi_k_j v_j^T`` and ``z_i = sum_{j<=i} phi_k_j``.

    ``phi_q``, ``phi_k`` ``(..., N, m)`` are positive features of queries and keys (for
    example :func:`positive_random_features`), ``v`` is ``(..., N, Ev)``. The causal mask
    turns the one sum of non-causal linear attention into a *cumulative* sum over positions
    (``torch.cumsum``), which runs in parallel during training; when generating, the same
    ``S`` and ``z`` are a constant-size state updated once per token (an RNN). This form
    stores ``(N, m, Ev)`` prefix sums: simple, not memory-optimal (chunked versions exist).

    >>> gen = torch.Generator().manual_seed(0)
    >>> phi_q, phi_k = torch.rand(2, 5, 3, generator=gen).unbind(0)
    >>> v = torch.randn(5, 2, generator=gen)
    >>> weights = (phi_q @ phi_k.T).tril()                  # the N x N way, for comparison
    >>> quadratic = (weights / weights.sum(-1, keepdim=True)) @ v
    >>> torch.allclose(causal_linear_attention(phi_q, phi_k, v), quadratic, atol=1e-6)
    True
    """
    if phi_q.shape[-1] != phi_k.shape[-1] or phi_k.shape[-2] != v.shape[-2]:
        raise ValueError(
            "causal_linear_attention expects phi_q (..., N, m), phi_k (..., N, m) and "
            f"v (..., N, Ev); got {shape_of(phi_q)}, {shape_of(phi_k)} and {shape_of(v)}")
    if phi_q.shape[-2] != phi_k.shape[-2]:
        raise ValueError("causal_linear_attention needs as many queries as keys (self-"
                         f"attention); got {phi_q.shape[-2]} and {phi_k.shape[-2]}")
    work = torch.promote_types(phi_q.dtype, torch.float32)
    phi_q, phi_k, v_w = phi_q.to(work), phi_k.to(work), v.to(work)
    state = torch.cumsum(phi_k[..., :, None] * v_w[..., None, :], dim=-3)  # (..., N, m, Ev)
    z = torch.cumsum(phi_k, dim=-2)  # (..., N, m)
    numerator = (phi_q[..., None, :] @ state).squeeze(-2)  # (..., N, Ev)
    denominator = (phi_q * z).sum(-1, keepdim=True).clamp_min(eps)
    return (numerator / denominator).to(v.dtype)
