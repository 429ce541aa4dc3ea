"""A decoder-only transformer, written from scratch to be read in one sitting.

One configurable model covers the two families the course compares:

- **GPT-2 style**: learned positions, LayerNorm, GELU MLP, biases, tied embeddings.
- **Llama style**: rotary positions (RoPE), RMSNorm, SwiGLU MLP, no biases, and
  grouped-query attention (several query heads share one key/value head).

Every piece is a small module that the tests check against the library version
(``torch.nn.LayerNorm``, ``torch.nn.RMSNorm``, ``F.scaled_dot_product_attention``,
transformers' rotary helpers), and the whole model reproduces transformers' GPT-2 and
Llama logits once their weights are copied in (``GPT.from_hf``).

>>> config = ModelConfig.llama_style(vocab_size=100, n_layer=2, n_head=4, n_kv_head=2)
>>> model = GPT(config)
>>> idx = torch.tensor([[1, 2, 3]])
>>> model(idx).shape                        # one row of logits per position
torch.Size([1, 3, 100])
>>> model.generate(idx, max_new_tokens=4, greedy=True).shape
torch.Size([1, 7])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ModelConfig",
    "eval_mode",
    "LayerNorm",
    "RMSNorm",
    "sinusoidal_positions",
    "rotary_cos_sin",
    "apply_rotary",
    "causal_allowed",
    "KVCache",
    "CausalSelfAttention",
    "MLP",
    "SwiGLU",
    "Block",
    "GPT",
    "lm_loss",
    "count_parameters",
    "flops_per_token",
]


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Switch models to eval mode (dropout off) for the block, then restore each one's
    previous mode, even if the block raises: decoding must not leave a model that was
    training in eval mode, or the reverse.

    >>> layer = nn.Dropout(0.5)
    >>> with eval_mode(layer):
    ...     layer.training
    False
    >>> layer.training
    True
    """
    was_training = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for model, mode in zip(models, was_training, strict=True):
            model.train(mode)

POSITIONS = ("learned", "sinusoidal", "rotary")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


# ----------------------------------------------------------------------------- config


@dataclass
class ModelConfig:
    """Every architectural choice of the model, in one place.

    The defaults build a tiny model that trains on a laptop CPU. ``None`` fields are
    derived in ``__post_init__``: ``n_kv_head = n_head`` (plain multi-head attention),
    ``head_dim = d_model // n_head``, and ``d_ff = 4 * d_model`` for GELU or about
    ``8/3 * d_model`` for SwiGLU (three matrices instead of two: same parameter count).
    Derived values are stored, so to change ``d_model`` build a new config rather than
    ``dataclasses.replace`` one (which would keep the old ``head_dim`` and ``d_ff``).

    >>> ModelConfig(d_model=128, n_head=4).head_dim
    32
    >>> ModelConfig(d_model=100, n_head=3)
    Traceback (most recent call last):
    ...
    ValueError: d_model must be divisible by n_head (or set head_dim); got d_model=100, n_head=3
    """

    vocab_size: int = 256
    context_length: int = 128  # the most positions the model is trained on
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # < n_head: grouped-query attention
    d_model: int = 128
    d_ff: int | None = None
    head_dim: int | None = None
    position: Literal["learned", "sinusoidal", "rotary"] = "learned"
    rope_theta: float = 10_000.0
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    mlp: Literal["gelu", "swiglu"] = "gelu"
    bias: bool = True  # biases in the linear layers (and LayerNorm)
    tie_embeddings: bool = True  # the output layer reuses the token embedding matrix
    dropout: float = 0.0
    pre_norm: bool = True  # False: the original Transformer's post-norm blocks

    def __post_init__(self) -> None:
        for name, allowed in (("position", POSITIONS), ("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(map(repr, allowed))}; "
                    f"got {getattr(self, name)!r}"
                )
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "n_kv_head",
                     "d_model", "d_ff", "head_dim"):
            value = getattr(self, name)
            optional = name in ("n_kv_head", "d_ff", "head_dim")
            if (value is None and optional) or (type(value) is int and value >= 1):
                continue
            raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.head_dim is None:
            if self.d_model % self.n_head:
                raise ValueError(
                    "d_model must be divisible by n_head (or set head_dim); "
                    f"got d_model={self.d_model}, n_head={self.n_head}"
                )
            self.head_dim = self.d_model // self.n_head
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.d_ff is None:  # SwiGLU: rounded up to a multiple of 64, for fast matmuls
            swiglu_ff = 64 * math.ceil(8 * self.d_model / 3 / 64)
            self.d_ff = 4 * self.d_model if self.mlp == "gelu" else swiglu_ff
        if self.n_head % self.n_kv_head:
            raise ValueError(
                "n_head must be divisible by n_kv_head (each key/value head serves a whole "
                f"group of query heads); got n_head={self.n_head}, n_kv_head={self.n_kv_head}"
            )
        if self.position == "rotary" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim; got {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError(
                f"norm_eps and rope_theta must be > 0; got {self.norm_eps}, {self.rope_theta}"
            )

    @classmethod
    def gpt2_style(cls, **overrides: Any) -> ModelConfig:
        """GPT-2's choices: learned positions, LayerNorm, GELU (tanh form), biases, tied.

        >>> gpt2_small = ModelConfig.gpt2_style(
        ...     vocab_size=50257, context_length=1024, n_layer=12, n_head=12, d_model=768)
        >>> count_parameters(gpt2_small)
        124439808
        """
        style = dict(position="learned", norm="layernorm", mlp="gelu", bias=True,
                     tie_embeddings=True)
        return cls(**{**style, **overrides})

    @classmethod
    def llama_style(cls, **overrides: Any) -> ModelConfig:
        """Llama's choices: rotary positions, RMSNorm, SwiGLU, no biases (tied here too,
        as in SmolLM2; pass ``tie_embeddings=False`` for Llama proper)."""
        style = dict(position="rotary", norm="rmsnorm", mlp="swiglu", bias=False,
                     tie_embeddings=True)
        return cls(**{**style, **overrides})

    @classmethod
    def from_hf(cls, hf_config: Any) -> ModelConfig:
        """The config matching a transformers ``LlamaConfig`` or ``GPT2Config``.

        Raises ``ValueError`` for variants this model does not implement (another
        activation, scaled RoPE, ...) rather than building a model that silently differs.
        """
        kind = getattr(hf_config, "model_type", None)
        if kind == "llama":
            rope = getattr(hf_config, "rope_parameters", None) or {}
            theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10_000.0))
            _require(hf_config, "rope type", rope.get("rope_type", "default"), "default")
            _require(hf_config, "hidden_act", hf_config.hidden_act, "silu")
            _require(hf_config, "mlp_bias", hf_config.mlp_bias, hf_config.attention_bias)
            return cls.llama_style(
                vocab_size=hf_config.vocab_size,
                context_length=hf_config.max_position_embeddings,
                n_layer=hf_config.num_hidden_layers,
                n_head=hf_config.num_attention_heads,
                n_kv_head=hf_config.num_key_value_heads,
                d_model=hf_config.hidden_size,
                d_ff=hf_config.intermediate_size,
                head_dim=hf_config.head_dim,
                rope_theta=float(theta),
                norm_eps=hf_config.rms_norm_eps,
                bias=hf_config.attention_bias,
                tie_embeddings=hf_config.tie_word_embeddings,
            )
        if kind == "gpt2":
            act = hf_config.activation_function
            if act != "gelu_pytorch_tanh":  # the same tanh-form GELU as "gelu_new"
                _require(hf_config, "activation_function", act, "gelu_new")
            _require(hf_config, "scale_attn_weights", hf_config.scale_attn_weights, True)
            _require(hf_config, "scale_attn_by_inverse_layer_idx",
                     hf_config.scale_attn_by_inverse_layer_idx, False)
            return cls.gpt2_style(
                vocab_size=hf_config.vocab_size,
                context_length=hf_config.n_positions,
                n_layer=hf_config.n_layer,
                n_head=hf_config.n_head,
                d_model=hf_config.n_embd,
                d_ff=hf_config.n_inner or 4 * hf_config.n_embd,
                norm_eps=hf_config.layer_norm_epsilon,
                tie_embeddings=hf_config.tie_word_embeddings,
                dropout=float(hf_config.resid_pdrop),
            )
        raise ValueError(f"from_hf supports model_type 'llama' and 'gpt2'; got {kind!r}")


def _require(hf_config: Any, name: str, given: Any, expected: Any) -> None:
    if given != expected:
        raise ValueError(
            f"{type(hf_config).__name__}: this model implements {name}={expected!r}; "
            f"got {given!r}"
        )


# ----------------------------------------------------------------------------- norms


class LayerNorm(nn.Module):
    """Normalise each vector to mean 0 and variance 1, then scale (and shift) it."""

    def __init__(self, d: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)  # the biased variance, as in the paper
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight + self.bias if self.bias is not None else x * self.weight


class RMSNorm(nn.Module):
    """LayerNorm without the mean: divide by the root mean square, then scale."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Squares overflow in float16, so compute in float32 (as Llama does) and cast back.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def _norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps)
    return LayerNorm(config.d_model, config.norm_eps, bias=config.bias)


# ----------------------------------------------------------------------------- positions


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
    """
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


# ----------------------------------------------------------------------------- attention


def causal_allowed(
    offset: int, T: int, device: torch.device | str | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which keys each of ``T`` new queries may read, True = allowed, when ``offset``
    positions came before them: query ``t`` sits at position ``offset + t`` and reads keys
    ``0..offset + t``. With an ``attention_mask (B, offset + T)`` (0 = padding) padded keys
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


class KVCache:
    """The keys and values of every layer for the tokens seen so far, so that each new
    token costs one position of work instead of a pass over the whole prefix.

    Buffers are allocated once, ``(B, n_kv_head, max_len, head_dim)`` per layer, and filled
    left to right; ``length`` is the number of positions already stored, which is also the
    position of the next token (its offset for positions and for the causal mask).

    >>> config = ModelConfig.llama_style(vocab_size=10, n_layer=2, d_model=32, n_head=4,
    ...                                  n_kv_head=2)
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
        cls, config: ModelConfig, batch_size: int, max_len: int,
        dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
    ) -> KVCache:
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"a KV cache needs batch_size >= 1 and max_len >= 1; "
                             f"got {batch_size} and {max_len}")
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


class CausalSelfAttention(nn.Module):
    """Multi-head attention where each position sees only itself and earlier positions.

    With ``n_kv_head < n_head`` (grouped-query attention) each key/value head is shared by
    ``n_head // n_kv_head`` consecutive query heads: fewer keys and values to store.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = hd = config.head_dim
        d = config.d_model
        self.q_proj = nn.Linear(d, config.n_head * hd, bias=config.bias)
        self.k_proj = nn.Linear(d, config.n_kv_head * hd, bias=config.bias)
        self.v_proj = nn.Linear(d, config.n_kv_head * hd, bias=config.bias)
        self.o_proj = nn.Linear(config.n_head * hd, d, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_weights: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x (B, T, d_model) -> (B, T, d_model)``; with ``return_weights`` also the
        attention weights ``(B, n_head, T, S)`` (row ``t``: how much position ``t`` reads
        from each position). With a ``cache``, ``x`` holds only the new positions: their
        keys and values are stored as layer ``layer``'s and the queries read the whole
        prefix (``S = cache.length + T``). ``allowed`` (broadcastable to ``(B, 1, T, S)``,
        True where a query may read a key) replaces the plain causal mask, e.g. to skip
        padding."""
        B, T, _ = x.shape
        # (B, T, heads * head_dim) -> (B, heads, T, head_dim): each head attends separately.
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        offset = 0
        if cache is not None:  # the prefix's keys and values come from the cache
            offset = cache.length
            k, v = cache.update(layer, k, v)
        group = self.n_head // self.n_kv_head
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)

        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, n_head, T, S)
        if allowed is None:
            allowed = causal_allowed(offset, T, x.device)
        scores = scores.masked_fill(~allowed, float("-inf"))
        # softmax in float32: exp() of half-precision scores loses too much.
        weights = scores.float().softmax(dim=-1).to(q.dtype)
        y = self.attn_dropout(weights) @ v  # (B, n_head, T, head_dim)
        y = self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))
        return (y, weights) if return_weights else y


# ----------------------------------------------------------------------------- MLPs


class MLP(nn.Module):
    """GPT-2's feed-forward layer: expand, GELU (tanh approximation, as GPT-2), project."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class SwiGLU(nn.Module):
    """Llama's feed-forward layer: a SiLU-activated gate multiplies a second projection."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# ----------------------------------------------------------------------------- block


class Block(nn.Module):
    """Attention then MLP, each wrapped in a residual connection and a norm.

    Pre-norm (GPT-2, Llama) normalises each sublayer's *input* and leaves the residual
    path untouched, which keeps deep stacks trainable; post-norm (the original
    Transformer) normalises *after* adding, ``x = norm(x + sublayer(x))``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        self.norm1, self.attn = _norm(config), CausalSelfAttention(config)
        self.norm2 = _norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_weights: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        drop = self.resid_dropout
        if self.pre_norm:
            a, weights = self.attn(self.norm1(x), rope, True, cache, layer, allowed)
            x = x + drop(a)
            x = x + drop(self.mlp(self.norm2(x)))
        else:
            a, weights = self.attn(x, rope, True, cache, layer, allowed)
            x = self.norm1(x + drop(a))
            x = self.norm2(x + drop(self.mlp(x)))
        return (x, weights) if return_weights else x


# ----------------------------------------------------------------------------- model


class GPT(nn.Module):
    """Token ids ``(B, T)`` in, next-token logits ``(B, T, vocab_size)`` out.

    ``forward`` returns logits only; the training loss is ``lm_loss(model(x), y)`` where
    ``y`` is ``x`` shifted left by one token.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        if config.position == "learned":
            self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        # Post-norm blocks already end in a norm, so only pre-norm needs a final one.
        self.norm_f = _norm(config) if config.pre_norm else nn.Identity()
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # one matrix, used at both ends
        self.apply(self._init_weights)
        # GPT-2's trick: shrink the layers that write into the residual stream, so its
        # variance does not grow with depth (2 writes per block).
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _check_idx(self, idx: Any) -> None:
        """Fail early, saying what was expected, instead of deep inside an embedding."""
        if not isinstance(idx, torch.Tensor):
            raise ValueError(f"idx must be a torch.Tensor of token ids; got {type(idx).__name__}")
        if idx.dim() != 2:
            hint = " (for one sequence use idx[None])" if idx.dim() == 1 else ""
            raise ValueError(
                f"idx must be 2-D (batch, time); got shape {tuple(idx.shape)}{hint}"
            )
        if idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must hold integer token ids (int64 or int32); got {idx.dtype}")
        length = idx.shape[1]
        if length == 0:
            raise ValueError("idx must hold at least one token per sequence; got 0")
        if self.config.position == "learned" and length > self.config.context_length:
            raise ValueError(
                f"sequence length {length} exceeds context_length={self.config.context_length} "
                "(learned positions exist only up to it)"
            )
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(
                f"token ids must be in [0, vocab_size={self.config.vocab_size}); "
                f"got ids from {lo} to {hi}"
            )

    def _trunk(
        self, idx: torch.Tensor, attentions: list | None = None, cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embeddings -> blocks -> final norm: the hidden states ``(B, T, d_model)``.
        With a ``cache``, ``idx`` holds the tokens after the ``cache.length`` stored ones."""
        self._check_idx(idx)
        (B, T), cfg = idx.shape, self.config
        offset = 0
        if cache is not None:
            offset = cache.length
            if cache.keys[0].shape[0] != B or len(cache.keys) != cfg.n_layer:
                raise ValueError(
                    f"the KV cache was allocated for batch {cache.keys[0].shape[0]} and "
                    f"{len(cache.keys)} layers; got batch {B} and a model with "
                    f"{cfg.n_layer} layers")
        positions = torch.arange(offset, offset + T, device=idx.device)[None]  # (1, T)
        allowed = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (B, offset + T):
                raise ValueError(
                    f"attention_mask must be (batch={B}, cached + new positions="
                    f"{offset + T}) of 0/1; got shape {tuple(attention_mask.shape)}")
            # Left padding: a row's first real token is its position 0.
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, offset:]
            allowed = causal_allowed(offset, T, idx.device, attention_mask)
        top = int(positions.max()) + 1
        if cfg.position == "learned" and top > cfg.context_length:
            raise ValueError(f"positions up to {top} exceed context_length="
                             f"{cfg.context_length} (learned positions exist only up to it)")
        x = self.tok_emb(idx)
        rope = None
        if cfg.position == "learned":
            x = x + self.pos_emb(positions)
        elif cfg.position == "sinusoidal":
            x = x + sinusoidal_positions(top, cfg.d_model).to(x)[positions]
        else:  # rotary: nothing is added here; queries and keys are rotated in attention
            cos, sin = rotary_cos_sin(top, cfg.head_dim, cfg.rope_theta, device=idx.device)
            # (B or 1, 1, T, head_dim): one angle per row and position, shared by the heads
            rope = (cos.to(x.dtype)[positions][:, None], sin.to(x.dtype)[positions][:, None])
        x = self.emb_dropout(x)
        for layer, block in enumerate(self.blocks):
            x, weights = block(x, rope, True, cache, layer, allowed)
            if attentions is not None:
                attentions.append(weights)
        if cache is not None:
            cache.advance(T)
        return self.norm_f(x)

    def hidden_states(
        self, idx: torch.Tensor, cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final (normalised) hidden states ``(B, T, d_model)`` that ``lm_head`` reads;
        arguments as ``forward``."""
        return self._trunk(idx, cache=cache, attention_mask=attention_mask)

    def forward(
        self, idx: torch.Tensor, cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, T, vocab_size)``: row ``t`` scores the token that follows ``idx[:, t]``.

        With a ``cache`` (see ``KVCache``), ``idx`` holds only the tokens not yet seen: the
        prefix's keys and values are read from the cache and the new ones added to it.
        ``attention_mask (B, cached + T)``, 0 on padding, lets rows of different lengths
        share a batch (left-padded for generation): padding is never attended to and each
        row's positions start at its first real token.
        """
        return self.lm_head(self._trunk(idx, cache=cache, attention_mask=attention_mask))

    def attention_maps(self, idx: torch.Tensor) -> torch.Tensor:
        """Every layer's attention weights, shape ``(n_layer, B, n_head, T, T)``."""
        attentions: list[torch.Tensor] = []
        self._trunk(idx, attentions)
        return torch.stack(attentions)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        greedy: bool = False,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = False,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens to ``idx (B, T)``, one forward pass per token.

        ``greedy`` takes the most likely token; otherwise sample from
        ``softmax(logits / temperature)``, keeping only the ``top_k`` best if given. A row
        that emits ``eos_token_id`` is padded with it; generation stops when all rows have.
        Runs in eval mode (no dropout) and restores the previous mode. By default every
        step recomputes the whole (cropped) context; ``use_cache`` keeps the keys and values
        in a ``KVCache`` so each step feeds only the newest token (the total length must
        then fit in ``context_length``).
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0; got {max_new_tokens!r}")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0 (or use greedy=True); got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.config.vocab_size:
            raise ValueError(f"top_k must be in [1, {self.config.vocab_size}]; got {top_k}")
        self._check_idx(idx)
        cache = None
        if use_cache:
            total = idx.shape[1] + max_new_tokens
            if total > self.config.context_length:
                raise ValueError(f"with use_cache the prompt plus new tokens ({total}) must fit "
                                 f"in context_length={self.config.context_length}")
            cache = KVCache.allocate(self.config, idx.shape[0], total,
                                     self.tok_emb.weight.dtype, idx.device)
        with eval_mode(self):
            done = torch.zeros(idx.shape[0], 1, dtype=torch.bool, device=idx.device)
            for _ in range(max_new_tokens):
                if cache is None:
                    context = idx[:, -self.config.context_length :]  # the longest trained window
                else:  # the cache holds everything but the tokens it has not seen yet
                    context = idx[:, cache.length :]
                hidden = self._trunk(context, cache=cache)
                logits = self.lm_head(hidden[:, -1])  # only the last position
                if greedy:
                    next_id = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits.float() / temperature
                    if top_k is not None:
                        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < kth_best, float("-inf"))
                    next_id = torch.multinomial(logits.softmax(-1), 1, generator=generator)
                if eos_token_id is not None:
                    next_id = next_id.masked_fill(done, eos_token_id)
                    done = done | (next_id == eos_token_id)
                idx = torch.cat([idx, next_id.to(idx.dtype)], dim=1)
                if eos_token_id is not None and bool(done.all()):
                    break
        return idx

    # ------------------------------------------------------------------ real weights

    @classmethod
    def from_hf(cls, hf_model: Any) -> GPT:
        """Copy a transformers ``LlamaForCausalLM`` or ``GPT2LMHeadModel`` into this model."""
        kind = getattr(hf_model.config, "model_type", None)
        if kind == "llama":
            return cls.from_hf_llama(hf_model)
        if kind == "gpt2":
            return cls.from_hf_gpt2(hf_model)
        raise ValueError(f"from_hf supports model_type 'llama' and 'gpt2'; got {kind!r}")

    @classmethod
    def from_hf_llama(cls, hf_model: Any) -> GPT:
        """Copy a transformers ``LlamaForCausalLM``; returns the model in eval mode.

        Llama's layout is this model's (separate q/k/v projections, half-split RoPE), so
        the copy is a renaming: ``model.layers.3.self_attn.q_proj.weight`` ->
        ``blocks.3.attn.q_proj.weight``, ``input_layernorm`` -> ``norm1``, ...
        """
        config = ModelConfig.from_hf(hf_model.config)
        renames = (("model.embed_tokens.", "tok_emb."), ("model.layers.", "blocks."),
                   ("model.norm.", "norm_f."), (".self_attn.", ".attn."),
                   (".input_layernorm.", ".norm1."), (".post_attention_layernorm.", ".norm2."))
        state = {}
        for name, tensor in hf_model.state_dict().items():
            for old, new in renames:
                name = name.replace(old, new)
            state[name] = tensor
        return cls._with_weights(config, state, hf_model)

    @classmethod
    def from_hf_gpt2(cls, hf_model: Any) -> GPT:
        """Copy a transformers ``GPT2LMHeadModel``; returns the model in eval mode.

        GPT-2 stores its linear layers as ``Conv1D`` with the weight transposed
        (``(in, out)``, where ``nn.Linear`` has ``(out, in)``), and fuses q, k and v into
        one ``c_attn`` layer whose output is ``[q | k | v]``.
        """
        config = ModelConfig.from_hf(hf_model.config)
        hf = hf_model.state_dict()
        state = {"tok_emb.weight": hf["transformer.wte.weight"],
                 "pos_emb.weight": hf["transformer.wpe.weight"],
                 "norm_f.weight": hf["transformer.ln_f.weight"],
                 "norm_f.bias": hf["transformer.ln_f.bias"],
                 "lm_head.weight": hf.get("lm_head.weight", hf["transformer.wte.weight"])}
        for i in range(config.n_layer):
            h, b = f"transformer.h.{i}.", f"blocks.{i}."
            for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2")):
                state[b + ours + ".weight"] = hf[h + theirs + ".weight"]
                state[b + ours + ".bias"] = hf[h + theirs + ".bias"]
            qkv_w = hf[h + "attn.c_attn.weight"].t().chunk(3, dim=0)  # 3 x (d, d)
            qkv_b = hf[h + "attn.c_attn.bias"].chunk(3)
            for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                state[b + f"attn.{proj}.weight"] = qkv_w[j]
                state[b + f"attn.{proj}.bias"] = qkv_b[j]
            for ours, theirs in (("attn.o_proj", "attn.c_proj"), ("mlp.up_proj", "mlp.c_fc"),
                                 ("mlp.down_proj", "mlp.c_proj")):
                state[b + ours + ".weight"] = hf[h + theirs + ".weight"].t()
                state[b + ours + ".bias"] = hf[h + theirs + ".bias"]
        return cls._with_weights(config, state, hf_model)

    @classmethod
    def _with_weights(cls, config: ModelConfig, state: dict, hf_model: Any) -> GPT:
        with torch.device("meta"):  # shapes only: skip a random init the copy would overwrite
            model = cls(config)
        state = {name: t.detach().clone() for name, t in state.items()}  # copies, not views
        model.load_state_dict(state, strict=True, assign=True)  # a missing weight fails here
        if config.tie_embeddings:  # loading gave each name its own tensor: share them again
            model.lm_head.weight = model.tok_emb.weight
        return model.eval()

    @classmethod
    def from_pretrained_asset(cls, name: str = "smollm2-135m") -> GPT:
        """A course asset (see ``llmlab.assets``) as a from-scratch model, in eval mode.

        The tokenizer comes with the asset: ``llmlab.assets.load(name).tokenizer``.
        """
        from llmlab import assets  # imported here: it pulls in transformers

        return cls.from_hf(assets.load(name).model)


# ----------------------------------------------------------------------------- loss


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of next-token prediction.

    ``targets (B, T)`` holds the token that should follow each position, i.e. the input
    shifted left by one; positions with ``ignore_index`` (e.g. padding) are skipped.

    >>> logits = torch.zeros(1, 2, 4)            # uniform over 4 tokens
    >>> round(lm_loss(logits, torch.tensor([[1, 3]])).item(), 4)   # = ln 4
    1.3863
    """
    if logits.dim() != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(
            "expected logits (B, T, vocab) and targets (B, T); "
            f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           ignore_index=ignore_index)


# ----------------------------------------------------------------------------- budgets


def count_parameters(model_or_config: nn.Module | ModelConfig,
                     exclude_embeddings: bool = False) -> int:
    """Number of parameters, counted from a module or computed from a config.

    For a module, shared (tied) tensors count once; ``exclude_embeddings`` leaves out
    every ``nn.Embedding`` (token and learned position tables; a tied output layer goes
    with them). For a config, the same number is computed by hand, per block:
    attention ``d*(n_head*hd) + 2*d*(n_kv_head*hd) + (n_head*hd)*d``, MLP ``2*d*d_ff``
    (SwiGLU ``3*d*d_ff``), two norms of ``d`` weights each (plus biases where used).

    Worked example, GPT-2 small (12 layers, d=768, d_ff=3072, vocab 50257, 1024
    positions, biases, tied). One block: attention 4*768^2 + 4*768 = 2,362,368; MLP
    2*768*3072 + 3072 + 768 = 4,722,432; two LayerNorms 2*2*768 = 3,072; in all
    7,087,872. Twelve blocks and the final LayerNorm (1,536) make 85,056,000, and the
    embeddings add 50257*768 + 1024*768 = 39,383,808:

    >>> gpt2 = ModelConfig.gpt2_style(vocab_size=50257, context_length=1024,
    ...                               n_layer=12, n_head=12, d_model=768)
    >>> count_parameters(gpt2, exclude_embeddings=True)
    85056000
    >>> count_parameters(gpt2)
    124439808
    """
    if isinstance(model_or_config, nn.Module):
        params = {id(p): p for p in model_or_config.parameters()}
        if exclude_embeddings:
            for m in model_or_config.modules():
                if isinstance(m, nn.Embedding):
                    params.pop(id(m.weight), None)
        return sum(p.numel() for p in params.values())
    c = model_or_config
    if not isinstance(c, ModelConfig):
        raise ValueError(f"expected an nn.Module or a ModelConfig; got {type(c).__name__}")
    d, q_dim, kv_dim = c.d_model, c.n_head * c.head_dim, c.n_kv_head * c.head_dim
    attn = d * q_dim + 2 * d * kv_dim + q_dim * d + (q_dim + 2 * kv_dim + d) * c.bias
    n_mats = 3 if c.mlp == "swiglu" else 2
    mlp = n_mats * d * c.d_ff + ((n_mats - 1) * c.d_ff + d) * c.bias
    norm = d * (2 if c.norm == "layernorm" and c.bias else 1)
    total = c.n_layer * (attn + mlp + 2 * norm) + norm * c.pre_norm
    if not c.tie_embeddings:
        total += d * c.vocab_size  # the output layer, a weight of its own
    if not exclude_embeddings:
        total += c.vocab_size * d + c.context_length * d * (c.position == "learned")
    return total


def flops_per_token(config: ModelConfig, seq_len: int, training: bool = False) -> int:
    """Estimated floating-point operations to process one token in a ``seq_len`` sequence.

    A matmul with a weight of N numbers costs 2N flops per token (a multiply and an add
    per weight). Attention adds the work that has no weights: with a causal mask a token
    attends to ``seq_len / 2`` earlier positions on average, and scores ``q.k`` and the
    sum of ``v`` each cost 2 flops per position and attention dimension::

        forward  = 2 * N + 2 * n_layer * seq_len * (n_head * head_dim)
        training = 3 * forward      (the backward pass costs about twice the forward)

    ``N`` counts every weight a token is multiplied by: the non-embedding parameters and
    the output layer (vocab_size * d_model, also when tied). Embedding lookups are free.
    This is Kaplan et al.'s ``C = 6N`` (2020) with the output layer kept, which matters
    for small models with big vocabularies.

    Worked example, GPT-2 small at seq_len 1024: N = 85,056,000 + 50257*768 =
    123,653,376; forward = 2 * 123,653,376 + 2 * 12 * 1024 * 768 = 266,181,120.

    >>> gpt2 = ModelConfig.gpt2_style(vocab_size=50257, context_length=1024,
    ...                               n_layer=12, n_head=12, d_model=768)
    >>> flops_per_token(gpt2, 1024)
    266181120
    >>> flops_per_token(gpt2, 1024, training=True)
    798543360
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int; got {seq_len!r}")
    n = count_parameters(config, exclude_embeddings=True)
    if config.tie_embeddings:
        n += config.vocab_size * config.d_model  # the output layer is still a matmul
    forward = 2 * n + 2 * config.n_layer * seq_len * config.n_head * config.head_dim
    return 3 * forward if training else forward
