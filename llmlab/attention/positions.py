"""Where a token is: fixed sinusoidal vectors, rotary embeddings (RoPE) and ALiBi biases.

- :func:`sinusoidal_positions`: added to the token embeddings ("Attention Is All You Need").
- :func:`rotary_cos_sin`, :func:`apply_rotary`: queries and keys rotated by their position,
  so that ``q_m . k_n`` depends only on ``m - n`` (Llama's layout).
- :func:`alibi_slopes`, :func:`alibi_bias`: no position vectors at all, a per-head penalty
  on distance added to the scores (BLOOM).

>>> cos, sin = rotary_cos_sin(4, 8)
>>> q = torch.randn(8)
>>> bool(torch.allclose(apply_rotary(q, cos[3], sin[3]).norm(), q.norm()))   # a rotation
True
"""

from __future__ import annotations

import math

import torch

from llmlab.attention.core import positive_int

# ----------------------------------------------------------------------------- added to embeddings


def sinusoidal_positions(n: int, d: int, base: float = 10_000.0) -> torch.Tensor:
    """The fixed position vectors of "Attention Is All You Need", shape ``(n, d)``.

    Pair ``i`` of dimensions is a sine and a cosine of ``pos / base**(2i/d)``: fast
    rotations in the first pairs, slow ones in the last.

    >>> sinusoidal_positions(2, 4)
    tensor([[0.0000, 1.0000, 0.0000, 1.0000],
            [0.8415, 0.5403, 0.0100, 0.9999]])
    """
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = pos * freq  # (n, ceil(d / 2))
    out = torch.empty(n, d)
    out[:, 0::2] = angles.sin()
    out[:, 1::2] = angles.cos()[:, : d // 2]  # an odd d has one more sine than cosines
    return out


# ----------------------------------------------------------------------------- rotary (RoPE)


def rotary_cos_sin(
    n: int, head_dim: int, theta: float = 10_000.0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotary angles for positions ``0..n-1``, each ``(n, head_dim)``.

    Dimension ``j`` and ``j + head_dim/2`` form one rotating pair (the "half-split" layout
    of transformers' Llama, so its weights load without permuting), turning at frequency
    ``theta ** (-2j / head_dim)``; the angle of position ``p`` is ``p`` times that.

    >>> cos, sin = rotary_cos_sin(3, 4)
    >>> sin[1]                                  # position 1: angles 1 and 1/100
    tensor([0.8415, 0.0100, 0.8415, 0.0100])
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    pos = torch.arange(n, dtype=torch.float32)
    angles = pos[:, None] * inv_freq[None, :]  # (n, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1).to(device)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair ``(x[j], x[j + D/2])`` of ``x (..., T, D)`` by its position's angle.

    A 2-D rotation is ``(a, b) -> (a cos - b sin, b cos + a sin)``; written on whole halves
    that is ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = (-x2, x1)``. Because
    rotations compose, ``q_m . k_n`` then depends only on the offset ``m - n``.

    >>> cos, sin = rotary_cos_sin(2, 2)         # one pair; position 1 turns it by 1 radian
    >>> apply_rotary(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), cos, sin)
    tensor([[1.0000, 0.0000],
            [0.5403, 0.8415]])
    """
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


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
    n_heads = positive_int("n_heads", n_heads)

    def geometric(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    p = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(geometric(p) + geometric(2 * p)[0::2][: n_heads - p])


def alibi_bias(n_heads: int, T: int, S: int | None = None, *, offset: int = 0) -> torch.Tensor:
    """Float ``(n_heads, T, S)`` to add to the scores: ``-slope_h * |i - j|``, for queries
    at positions ``i = offset .. offset + T - 1`` (``offset`` > 0 when they follow cached
    keys) and keys at ``j = 0 .. S - 1``.

    Instead of position embeddings, ALiBi makes each head penalise distant keys linearly,
    steeply in the first heads and gently in the last. Under a causal mask this is the
    paper's ``-m * (i - j)``; softmax ignores a per-row constant, which is why BLOOM can
    add ``m * j`` instead.

    >>> alibi_bias(1, 3)                 # one head, slope 1/256
    tensor([[[ 0.0000, -0.0039, -0.0078],
             [-0.0039,  0.0000, -0.0039],
             [-0.0078, -0.0039,  0.0000]]])
    >>> torch.equal(alibi_bias(2, 1, 3, offset=2), alibi_bias(2, 3)[:, 2:])  # the last query
    True
    """
    T = positive_int("T", T)
    S = T if S is None else positive_int("S", S)
    distance = (torch.arange(offset, offset + T)[:, None] - torch.arange(S)[None, :]).abs()
    return alibi_slopes(n_heads)[:, None, None] * -distance
