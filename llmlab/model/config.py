"""``ModelConfig``: every architectural choice of the model, validated in one place, with
the two presets the course compares and the translation from transformers' configs.

>>> ModelConfig.llama_style(n_head=4, n_kv_head=2).position
'rotary'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

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

        >>> from llmlab.model import count_parameters
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
