"""Chapter 01 (architecture) exercises: the pieces of a transformer, checked against
llmlab.model and llmlab.attention.

Each check runs the learner's function on a few cases, including an awkward one (odd
sizes, batch and head dimensions, extreme values), and says which case failed and how.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmlab import attention, model
from llmlab.course.checks import CheckFailed, exercise, expect_close, expect_equal, require_callable

# --------------------------------------------------------------------------------------------
# References: the shapes of the learner's functions, implemented with llmlab.model and
# llmlab.attention (one teaching copy, reference_causal_attention, tested against its home)


def reference_sinusoidal_positions(n_positions: int, d_model: int) -> torch.Tensor:
    return attention.sinusoidal_positions(n_positions, d_model)


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    norm = model.RMSNorm(x.shape[-1], eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm(x).detach()


def reference_apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return attention.apply_rotary(x, cos, sin)


def reference_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention as the learner writes it: a teaching copy of
    ``llmlab.attention.scaled_dot_product_attention(q, k, v, is_causal=True)`` (the tests
    check that the two agree), kept in the chapter's own few lines.

    >>> q = k = v = torch.randn(1, 2, 4, 8)
    >>> from llmlab.attention import scaled_dot_product_attention
    >>> expected = scaled_dot_product_attention(q, k, v, is_causal=True)
    >>> torch.allclose(reference_causal_attention(q, k, v), expected, atol=1e-6)
    True
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    T = q.shape[-2]
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v


def reference_pre_norm_block(x, attn, mlp, norm1, norm2):
    """A pre-norm residual block from its four sublayers: a teaching copy of the pre-norm
    path of ``llmlab.model.Block.forward`` (the tests check that the two agree)."""
    x = x + attn(norm1(x))
    return x + mlp(norm2(x))


def reference_count_parameters(config: model.ModelConfig) -> int:
    return model.count_parameters(config)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


def _sinusoidal_swapped(n_positions, d_model):  # cosines on even dimensions
    return reference_sinusoidal_positions(n_positions, d_model).view(n_positions, -1, 2).flip(-1) \
        .reshape(n_positions, d_model)


def _sinusoidal_wrong_exponent(n_positions, d_model):  # pos / base**(i/d) instead of 2i/d
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = 10_000.0 ** (-torch.arange(0, d_model // 2, dtype=torch.float32) / d_model)
    out = torch.empty(n_positions, d_model)
    out[:, 0::2], out[:, 1::2] = (pos * freq).sin(), (pos * freq).cos()
    return out


def _rms_norm_without_sqrt(x, weight, eps=1e-5):
    return weight * x / (x.pow(2).mean(-1, keepdim=True) + eps)


def _rms_norm_subtracts_mean(x, weight, eps=1e-5):  # that is LayerNorm
    x = x - x.mean(-1, keepdim=True)
    return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _rms_norm_ignores_weight(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _rotary_interleaved(x, cos, sin):  # rotates (0,1), (2,3)... instead of (j, j + D/2)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    half = x.shape[-1] // 2
    c, s = cos[..., :half], sin[..., :half]
    return torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).flatten(-2)


def _rotary_wrong_direction(x, cos, sin):
    return reference_apply_rotary(x, cos, -sin)


def _attention_no_mask(q, k, v):
    return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v


def _attention_no_scaling(q, k, v):
    return reference_causal_attention(q * math.sqrt(q.shape[-1]), k, v)


def _attention_masks_diagonal(q, k, v):  # position t cannot see itself: row 0 becomes NaN
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    T = q.shape[-2]
    mask = torch.ones(T, T, dtype=torch.bool).triu(diagonal=0)
    return scores.masked_fill(mask, float("-inf")).softmax(-1).nan_to_num() @ v


def _post_norm_block(x, attn, mlp, norm1, norm2):
    x = norm1(x + attn(x))
    return norm2(x + mlp(x))


def _block_without_residual(x, attn, mlp, norm1, norm2):
    return mlp(norm2(attn(norm1(x))))


def _count_untied(config):  # counts the output layer although it shares the embeddings
    extra = config.vocab_size * config.d_model if config.tie_embeddings else 0
    return model.count_parameters(config) + extra


def _count_ignoring_gqa(config):  # as if every head had its own keys and values
    full = model.ModelConfig(**{**config.__dict__, "n_kv_head": config.n_head})
    return model.count_parameters(full)


def _count_without_norms(config):
    per_norm = config.d_model * (2 if config.norm == "layernorm" and config.bias else 1)
    return model.count_parameters(config) - per_norm * (2 * config.n_layer + 1)


# --------------------------------------------------------------------------------------------
# The checks


@exercise("ch01.sinusoidal_positions", title="sinusoidal position encodings",
          reference=reference_sinusoidal_positions,
          wrong_answers=[_sinusoidal_swapped, _sinusoidal_wrong_exponent])
def check_sinusoidal_positions(answer) -> None:
    require_callable(answer, "sinusoidal_positions")
    for n, d in ((4, 8), (50, 16), (7, 64)):
        expect_close(answer(n, d), reference_sinusoidal_positions(n, d),
                     f"sinusoidal_positions({n}, {d})", atol=1e-5,
                     hint="Even dimensions 2i hold sin(pos / 10000**(2i/d)), odd ones the "
                          "cosine of the same angle.")


def _norm_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        ("x of shape (2, 3, 8) with weight 1", torch.randn(2, 3, 8, generator=g), torch.ones(8)),
        ("x of shape (4, 16) with a random weight", 3 + 5 * torch.randn(4, 16, generator=g),
         torch.randn(16, generator=g)),
        ("large values (x ~ 1e3)", 1e3 * torch.randn(2, 32, generator=g), torch.ones(32)),
    ]


@exercise("ch01.rms_norm", title="RMSNorm", reference=reference_rms_norm,
          wrong_answers=[_rms_norm_without_sqrt, _rms_norm_subtracts_mean,
                         _rms_norm_ignores_weight])
def check_rms_norm(answer) -> None:
    require_callable(answer, "rms_norm")
    for what, x, weight in _norm_cases():
        expected = reference_rms_norm(x, weight)
        got = answer(x.clone(), weight.clone())
        hint = ""
        if isinstance(got, torch.Tensor) and got.shape == x.shape:
            if torch.allclose(got, _rms_norm_subtracts_mean(x, weight), atol=1e-4):
                hint = "You subtracted the mean: that is LayerNorm. RMSNorm only rescales."
            elif torch.allclose(got, _rms_norm_ignores_weight(x, weight), atol=1e-4):
                hint = "Multiply by the learned weight at the end."
        expect_close(got, expected, f"rms_norm for {what}", atol=1e-4,
                     hint=hint or "Divide by sqrt(mean(x**2) + eps) over the last dimension.")
    torch_norm = nn.RMSNorm(8, eps=1e-5)
    x = torch.randn(3, 8)
    expect_close(answer(x, torch.ones(8)), torch_norm(x).detach(),
                 "rms_norm compared with torch.nn.RMSNorm", atol=1e-4)


def _rotary_case(T: int, D: int, heads: int, theta: float = 10_000.0):
    g = torch.Generator().manual_seed(T * D)
    x = torch.randn(2, heads, T, D, generator=g)
    cos, sin = attention.rotary_cos_sin(T, D, theta)
    return x, cos, sin


@exercise("ch01.apply_rotary", title="rotary position embedding (RoPE)",
          reference=reference_apply_rotary,
          wrong_answers=[_rotary_interleaved, _rotary_wrong_direction])
def check_apply_rotary(answer) -> None:
    require_callable(answer, "apply_rotary")
    for T, D, heads in ((5, 8, 1), (16, 64, 3)):
        x, cos, sin = _rotary_case(T, D, heads)
        expect_close(answer(x, cos, sin), reference_apply_rotary(x, cos, sin),
                     f"apply_rotary on x of shape {tuple(x.shape)}", atol=1e-5,
                     hint="Pair dimension j with j + D/2 (the two halves), and rotate "
                          "(a, b) -> (a cos - b sin, b cos + a sin).")
    # The property that makes RoPE useful: q_m . k_n depends only on m - n, so moving every
    # token 3 positions later leaves all the attention scores unchanged.
    q, cos, sin = _rotary_case(9, 16, 1)
    k = q.flip(-2)[..., :6, :]
    q = q[..., :6, :]
    at_start = answer(q, cos[:6], sin[:6]) @ answer(k, cos[:6], sin[:6]).transpose(-2, -1)
    shifted = answer(q, cos[3:], sin[3:]) @ answer(k, cos[3:], sin[3:]).transpose(-2, -1)
    expect_close(shifted, at_start, "q.k scores after shifting every position by 3", atol=1e-4,
                 hint="The rotation angle must grow linearly with position (the cos/sin table).")


def _attention_cases():
    g = torch.Generator().manual_seed(3)
    return [(B, H, T, D, torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g),
             torch.randn(B, H, T, D, generator=g)) for B, H, T, D in ((1, 1, 4, 8), (2, 3, 9, 16))]


@exercise("ch01.causal_attention", title="causal scaled dot-product attention",
          reference=reference_causal_attention,
          wrong_answers=[_attention_no_mask, _attention_no_scaling, _attention_masks_diagonal])
def check_causal_attention(answer) -> None:
    require_callable(answer, "causal_attention")
    for B, H, T, D, q, k, v in _attention_cases():
        got = answer(q, k, v)
        what = f"causal_attention for q, k, v of shape {(B, H, T, D)}"
        first_row_wrong = (isinstance(got, torch.Tensor) and got.shape == q.shape
                           and not torch.allclose(got[..., 0, :], v[..., 0, :], atol=1e-5))
        if first_row_wrong:
            raise CheckFailed(
                f"{what}: the first position should return exactly v[0] (it can only see "
                "itself). Is the mask hiding the future (j > t) and nothing else?")
        expect_close(got, reference_causal_attention(q, k, v), what, atol=1e-5,
                     hint="softmax(q k^T / sqrt(d_k)) with -inf above the diagonal, times v.")
    q, k, v = (torch.randn(1, 2, 6, 8) for _ in range(3))
    torch_out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    expect_close(answer(q, k, v), torch_out,
                 "causal_attention compared with F.scaled_dot_product_attention", atol=1e-5)


class _Scale(nn.Module):
    """A stand-in sublayer that is easy to tell apart: multiplies by a constant."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


@exercise("ch01.pre_norm_block", title="a pre-norm residual block",
          reference=reference_pre_norm_block,
          wrong_answers=[_post_norm_block, _block_without_residual])
def check_pre_norm_block(answer) -> None:
    require_callable(answer, "pre_norm_block")
    torch.manual_seed(4)
    config = model.ModelConfig.llama_style(vocab_size=10, d_model=32, n_head=4, n_layer=1)
    block = model.Block(config).eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        expected = block(x, attention.rotary_cos_sin(5, config.head_dim))
        got = answer(x, lambda h: block.attn(h, is_causal=True), block.mlp, block.norm1,
                     block.norm2)
    expect_close(got, expected, "pre_norm_block with a real Llama-style block", atol=1e-5,
                 hint="Each sublayer reads norm(x) and its output is ADDED to x: "
                      "x = x + attn(norm1(x)); x = x + mlp(norm2(x)).")
    x = torch.ones(1, 2, 4)
    got = answer(x, _Scale(2.0), _Scale(3.0), _Scale(0.5), _Scale(0.5))
    # x + 2 * 0.5x = 2x, then 2x + 3 * 0.5 * 2x = 5x
    expect_close(got, 5 * x, "pre_norm_block with scaling stand-ins (attn=2x, mlp=3x, "
                 "norms=0.5x)", hint="Expected x + attn(norm1(x)) = 2x, then + mlp(norm2(.)) = 5x.")


def _count_configs() -> list[tuple[str, model.ModelConfig]]:
    return [
        ("a GPT-2 style config", model.ModelConfig.gpt2_style(
            vocab_size=100, context_length=32, n_layer=2, d_model=64, n_head=4)),
        ("a Llama style config with grouped-query attention", model.ModelConfig.llama_style(
            vocab_size=120, n_layer=3, d_model=48, n_head=6, n_kv_head=2)),
        ("an untied GPT-2 style config", model.ModelConfig.gpt2_style(
            vocab_size=50, context_length=16, n_layer=1, d_model=32, n_head=2,
            tie_embeddings=False)),
    ]


@exercise("ch01.count_parameters", title="counting parameters from the config",
          reference=reference_count_parameters,
          wrong_answers=[_count_untied, _count_ignoring_gqa, _count_without_norms])
def check_count_parameters(answer) -> None:
    require_callable(answer, "count_parameters")
    for what, config in _count_configs():
        expected = sum(p.numel() for p in model.GPT(config).parameters())
        got = answer(config)
        if isinstance(got, torch.Tensor):
            got = got.item()
        hints = []
        if got == _count_untied(config):
            hints.append("With tie_embeddings the output layer IS the embedding matrix: "
                         "count it once.")
        if got == _count_ignoring_gqa(config):
            hints.append("With n_kv_head < n_head the key and value projections are smaller.")
        if got == _count_without_norms(config):
            hints.append("Don't forget the norms: two per block and a final one.")
        expect_equal(got, expected, f"count_parameters for {what}", hint=" ".join(hints) or
                     "Count embeddings, per-block attention/MLP/norms, the final norm, and "
                     "the output layer if it is not tied.")
