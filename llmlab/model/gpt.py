"""The decoder-only transformer: norms, feed-forward layers, the block, and ``GPT`` itself,
with its loss (``lm_loss``) and the copies of transformers' GPT-2 and Llama weights.

A block is attention then an MLP, each in a residual connection with a norm; the
attention is ``llmlab.attention.MultiHeadAttention``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.attention import (
    KVCache,
    MultiHeadAttention,
    causal_allowed,
    rotary_cos_sin,
    sinusoidal_positions,
)
from llmlab.model.config import ModelConfig

# ----------------------------------------------------------------------------- helpers


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


def _attention(config: ModelConfig) -> MultiHeadAttention:
    """The block's attention: ``llmlab.attention.MultiHeadAttention`` with the config's
    heads (``n_kv_head < n_head``: grouped-query), biases, dropout and RoPE base. ``GPT``
    hands it the rotary angles of each row's positions, so left padding shifts them."""
    rope_theta = config.rope_theta if config.position == "rotary" else None
    return MultiHeadAttention(config.d_model, config.n_head, config.n_kv_head,
                              head_dim=config.head_dim, bias=config.bias,
                              rope_theta=rope_theta, dropout=config.dropout)


class Block(nn.Module):
    """Attention then MLP, each wrapped in a residual connection and a norm.

    Pre-norm (GPT-2, Llama) normalises each sublayer's *input* and leaves the residual
    path untouched, which keeps deep stacks trainable; post-norm (the original
    Transformer) normalises *after* adding, ``x = norm(x + sublayer(x))``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        self.norm1, self.attn = _norm(config), _attention(config)
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
        """``x (B, T, d_model) -> (B, T, d_model)``; ``rope``, ``cache`` and ``layer`` go to
        the causal ``MultiHeadAttention``, ``allowed`` (True where a query may read a key,
        see ``llmlab.attention.causal_allowed``) replaces its causal mask, and
        ``return_weights`` adds its weights ``(B, n_head, T, S)``."""
        drop = self.resid_dropout
        # allowed (padding) already holds the causal rule; without it, is_causal applies it.
        a, weights = self.attn(self.norm1(x) if self.pre_norm else x, rope=rope, cache=cache,
                               layer=layer, mask=allowed, is_causal=allowed is None,
                               return_weights=True)
        if self.pre_norm:
            x = x + drop(a)
            x = x + drop(self.mlp(self.norm2(x)))
        else:
            x = self.norm1(x + drop(a))
            x = self.norm2(x + drop(self.mlp(x)))
        return (x, weights) if return_weights else x


# ----------------------------------------------------------------------------- model


class GPT(nn.Module):
    """Token ids ``(B, T)`` in, next-token logits ``(B, T, vocab_size)`` out.

    ``forward`` returns logits only; the training loss is ``lm_loss(model(x), y)`` where
    ``y`` is ``x`` shifted left by one token, and text comes from
    ``llmlab.decoding.generate(model, idx, max_new_tokens)``.
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
