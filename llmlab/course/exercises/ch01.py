"""Chapter 01 (architecture) exercises: the pieces of a transformer, checked against
llmlab.model.

Each check runs the learner's function on a few cases, including an awkward one (odd
sizes, batch dimensions, extreme values, an all-zero vector), and says which case failed
and how. Attention and RoPE are chapter 03's exercises; this chapter's lab builds the
position table, the norm, the SwiGLU feed-forward layer, the parameter count, the
residual-stream probe, and ends with an open-ended experiment on initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmlab import attention, model
from llmlab.course.checks import (
    CheckFailed,
    call_learner,
    exercise,
    expect_close,
    expect_equal,
    require_callable,
)

# --------------------------------------------------------------------------------------------
# References: the shapes of the learner's functions, implemented with llmlab.model and
# llmlab.attention


def reference_sinusoidal_positions(n_positions: int, d_model: int) -> torch.Tensor:
    return attention.sinusoidal_positions(n_positions, d_model)


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    norm = model.RMSNorm(x.shape[-1], eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm(x).detach()


def reference_swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
                     w_down: torch.Tensor) -> torch.Tensor:
    """Llama's feed-forward layer from its three weight matrices (``nn.Linear`` layout,
    ``(out_features, in_features)``): ``llmlab.model.SwiGLU`` with those weights copied in.

    >>> x, w_gate, w_up = torch.randn(2, 8), torch.randn(20, 8), torch.randn(20, 8)
    >>> reference_swiglu(x, w_gate, w_up, torch.randn(8, 20)).shape
    torch.Size([2, 8])
    """
    d_ff, d_model = w_gate.shape
    config = model.ModelConfig.llama_style(vocab_size=2, d_model=d_model, n_head=1,
                                           n_layer=1, d_ff=d_ff)
    mlp = model.SwiGLU(config)
    with torch.no_grad():
        for layer, w in ((mlp.gate_proj, w_gate), (mlp.up_proj, w_up), (mlp.down_proj, w_down)):
            layer.weight.copy_(w)
        return mlp(x)


def reference_count_parameters(config: model.ModelConfig) -> int:
    return model.count_parameters(config)


def reference_residual_stream_stds(gpt: model.GPT, idx: torch.Tensor) -> torch.Tensor:
    return model.residual_stream_stds(gpt, idx)


def reference_residual_proj_std(n_layer: int) -> float:
    """GPT-2's rule: 0.02 shrunk by the square root of the number of residual writes."""
    return 0.02 / math.sqrt(2 * n_layer)


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


def _rms_norm_without_eps(x, weight, eps=1e-5):  # 0 / 0 on an all-zero vector
    return weight * x / x.pow(2).mean(-1, keepdim=True).sqrt()


def _swiglu_gelu(x, w_gate, w_up, w_down):  # GELU gate: that is GEGLU
    return (F.gelu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def _swiglu_gate_on_up(x, w_gate, w_up, w_down):  # SiLU on the wrong projection
    return (F.silu(x @ w_up.T) * (x @ w_gate.T)) @ w_down.T


def _swiglu_without_up(x, w_gate, w_up, w_down):  # a plain SiLU MLP: no multiplicative gate
    return F.silu(x @ w_gate.T) @ w_down.T


def _count_untied(config):  # counts the output layer although it shares the embeddings
    extra = config.vocab_size * config.d_model if config.tie_embeddings else 0
    return model.count_parameters(config) + extra


def _count_ignoring_gqa(config):  # as if every head had its own keys and values
    full = model.ModelConfig(**{**config.__dict__, "n_kv_head": config.n_head})
    return model.count_parameters(full)


def _count_without_norms(config):
    per_norm = config.d_model * (2 if config.norm == "layernorm" and config.bias else 1)
    return model.count_parameters(config) - per_norm * (2 * config.n_layer + 1)


def _stds_without_positions(gpt, idx):  # forgets the learned position table
    with torch.no_grad():
        x = gpt.tok_emb(idx)
        stds = [x.std()]
        for block in gpt.blocks:
            x = block(x)
            stds.append(x.std())
    return torch.stack(stds)


def _stds_without_embedding_entry(gpt, idx):  # only after the blocks: n_layer values
    return model.residual_stream_stds(gpt, idx)[1:]


def _stds_after_final_norm(gpt, idx):  # measures norm_f(x): always about 1
    with torch.no_grad():
        x = gpt.tok_emb(idx) + gpt.pos_emb(torch.arange(idx.shape[1]))
        stds = [gpt.norm_f(x).std()]
        for block in gpt.blocks:
            x = block(x)
            stds.append(gpt.norm_f(x).std())
    return torch.stack(stds)


def _proj_std_unscaled(n_layer):  # every layer initialised like the rest: the stream grows
    return 0.02


def _proj_std_zero(n_layer):  # blocks that write nothing at initialisation
    return 0.0


def _proj_std_fixed_small(n_layer):  # fine for a shallow model, too large at depth 48
    return 0.005


def _proj_std_over_shrunk(n_layer):  # 1 / n_layer instead of 1 / sqrt(2 n_layer)
    return 0.02 / n_layer


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
        # A padded or dead position: the norm must return zeros, not 0 / 0 = NaN.
        ("an all-zero vector (row 1 of a (3, 8) input)",
         torch.cat([torch.randn(1, 8, generator=g), torch.zeros(1, 8),
                    torch.randn(1, 8, generator=g)]), torch.ones(8)),
    ]


@exercise("ch01.rms_norm", title="RMSNorm", reference=reference_rms_norm,
          wrong_answers=[_rms_norm_without_sqrt, _rms_norm_subtracts_mean,
                         _rms_norm_ignores_weight, _rms_norm_without_eps])
def check_rms_norm(answer) -> None:
    require_callable(answer, "rms_norm")
    for what, x, weight in _norm_cases():
        expected = reference_rms_norm(x, weight)
        got = call_learner(answer, f"rms_norm for {what}", x.clone(), weight.clone())
        hint = ""
        if isinstance(got, torch.Tensor) and got.shape == x.shape:
            if torch.isnan(got).any() and not x.any(-1).all():
                hint = ("An all-zero vector has mean(x**2) = 0: add eps INSIDE the square "
                        "root, sqrt(mean(x**2) + eps), so the norm never divides by zero.")
            elif torch.allclose(got, _rms_norm_subtracts_mean(x, weight), atol=1e-4):
                hint = "You subtracted the mean: that is LayerNorm. RMSNorm only rescales."
            elif torch.allclose(got, _rms_norm_ignores_weight(x, weight), atol=1e-4):
                hint = "Multiply by the learned weight at the end."
        expect_close(got, expected, f"rms_norm for {what}", atol=1e-4,
                     hint=hint or "Divide by sqrt(mean(x**2) + eps) over the last dimension.")
    torch_norm = nn.RMSNorm(8, eps=1e-5)
    x = torch.randn(3, 8)
    expect_close(answer(x, torch.ones(8)), torch_norm(x).detach(),
                 "rms_norm compared with torch.nn.RMSNorm", atol=1e-4)


def _swiglu_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    cases = []
    for shape, d_ff in (((3, 8), 20), ((2, 5, 12), 32)):
        d = shape[-1]
        cases.append((f"x of shape {shape}, d_ff = {d_ff}", torch.randn(*shape, generator=g),
                      torch.randn(d_ff, d, generator=g) / math.sqrt(d),
                      torch.randn(d_ff, d, generator=g) / math.sqrt(d),
                      torch.randn(d, d_ff, generator=g) / math.sqrt(d_ff)))
    return cases


@exercise("ch01.swiglu", title="the SwiGLU feed-forward layer", reference=reference_swiglu,
          wrong_answers=[_swiglu_gelu, _swiglu_gate_on_up, _swiglu_without_up])
def check_swiglu(answer) -> None:
    require_callable(answer, "swiglu")
    for what, x, w_gate, w_up, w_down in _swiglu_cases():
        got = call_learner(answer, f"swiglu for {what}", x, w_gate, w_up, w_down,
                           hint="The weights are in nn.Linear's layout (out, in): x @ w.T.")
        hint = "down( SiLU(x W_gate) * (x W_up) ), each product as x @ w.T."
        if isinstance(got, torch.Tensor) and got.shape == x.shape:
            if torch.allclose(got, _swiglu_gelu(x, w_gate, w_up, w_down), atol=1e-5):
                hint = "That is GEGLU: SwiGLU's gate goes through SiLU (x * sigmoid(x))."
            elif torch.allclose(got, _swiglu_gate_on_up(x, w_gate, w_up, w_down), atol=1e-5):
                hint = "SiLU goes on the GATE projection (w_gate); w_up stays linear."
            elif torch.allclose(got, _swiglu_without_up(x, w_gate, w_up, w_down), atol=1e-5):
                hint = ("The gate must MULTIPLY a second projection, x @ w_up.T, element-wise "
                        "before the down projection.")
        expect_close(got, reference_swiglu(x, w_gate, w_up, w_down), f"swiglu for {what}",
                     atol=1e-5, hint=hint)


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


def _probe_models() -> list[tuple[str, model.GPT, torch.Tensor]]:
    cases = []
    for what, n_layer, proj_std in (("a 4-layer model with GPT-2's initialisation", 4, None),
                                    ("a 6-layer model with unscaled 0.02 projections", 6, 0.02)):
        torch.manual_seed(7)
        config = model.ModelConfig.gpt2_style(vocab_size=60, context_length=16,
                                              n_layer=n_layer, n_head=2, d_model=32)
        gpt = model.GPT(config)
        if proj_std is not None:
            model.init_residual_projections(gpt, proj_std)
        idx = torch.randint(0, 60, (3, 16), generator=torch.Generator().manual_seed(n_layer))
        cases.append((what, gpt, idx))
    return cases


@exercise("ch01.residual_stream_stds", title="measuring the residual stream across depth",
          reference=reference_residual_stream_stds,
          wrong_answers=[_stds_without_positions, _stds_without_embedding_entry,
                         _stds_after_final_norm])
def check_residual_stream_stds(answer) -> None:
    require_callable(answer, "residual_stream_stds")
    for what, gpt, idx in _probe_models():
        got = call_learner(answer, f"residual_stream_stds on {what}", gpt, idx)
        if isinstance(got, list | tuple):
            got = torch.tensor([float(v) for v in got])
        expected = reference_residual_stream_stds(gpt, idx)
        n = gpt.config.n_layer
        if isinstance(got, torch.Tensor) and got.shape == (n,):
            raise CheckFailed(f"residual_stream_stds on {what}: got {n} values, expected "
                              f"{n + 1}: the stream after the embeddings comes first, then "
                              "one value after each block.")
        hint = "Start from tok_emb(idx) + pos_emb(positions), then x = block(x) for each block."
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            if torch.allclose(got.float(), torch.ones_like(expected), atol=0.05):
                hint = ("Every value is about 1: you measured a normalised copy. Measure the "
                        "stream x itself; norm_f is applied only once, after the last block.")
            elif not torch.isclose(got[0].float(), expected[0], rtol=1e-3):
                hint = ("Entry 0 is off: the stream starts as token embeddings PLUS the "
                        "learned position embeddings.")
        expect_close(got, expected, f"residual_stream_stds on {what}", atol=1e-5, rtol=1e-3,
                     hint=hint)


#: The open-ended experiment's target: at initialisation the blocks must write something
#: into the stream, yet its size must not grow with depth.
STREAM_GROWTH_BAND = (1.1, 1.5)
PROBE_DEPTHS = (6, 48)


def stream_growth(proj_std: float, n_layer: int, seed: int = 0) -> float:
    """std(stream after the last block) / std(stream after the embeddings) for a GPT-2 style
    model (d_model 64, 4 heads) whose residual projections are initialised with ``proj_std``.

    >>> round(stream_growth(0.0, 6), 3)    # blocks that write nothing leave the stream alone
    1.0
    """
    torch.manual_seed(seed)
    config = model.ModelConfig.gpt2_style(vocab_size=100, context_length=32, n_layer=n_layer,
                                          n_head=4, d_model=64)
    gpt = model.GPT(config)
    torch.manual_seed(seed + 1)
    model.init_residual_projections(gpt, proj_std)
    idx = torch.randint(0, 100, (4, 32), generator=torch.Generator().manual_seed(seed))
    stds = model.residual_stream_stds(gpt, idx)
    return (stds[-1] / stds[0]).item()


@exercise("ch01.residual_proj_std", title="open-ended: an initialisation that survives depth",
          reference=reference_residual_proj_std,
          wrong_answers=[_proj_std_unscaled, _proj_std_zero, _proj_std_fixed_small,
                         _proj_std_over_shrunk])
def check_residual_proj_std(answer) -> None:
    require_callable(answer, "residual_proj_std")
    low, high = STREAM_GROWTH_BAND
    for n_layer in PROBE_DEPTHS:
        std = call_learner(answer, f"residual_proj_std({n_layer})", n_layer)
        if isinstance(std, torch.Tensor):
            std = std.item()
        if not isinstance(std, int | float) or not math.isfinite(std) or std < 0:
            raise CheckFailed(f"residual_proj_std({n_layer}) should return a number >= 0; "
                              f"got {std!r}")
        growth = stream_growth(float(std), n_layer)
        what = (f"with residual_proj_std({n_layer}) = {std:.3g}, the stream's std grows "
                f"{growth:.3f}x from the embeddings to the last of {n_layer} blocks")
        if growth < low:
            raise CheckFailed(f"{what}: below {low}x, the blocks barely write into the stream "
                              "at initialisation. Use a larger std.")
        if growth > high:
            raise CheckFailed(f"{what}: above {high}x. Each block adds two writes whose "
                              "variances add up, so the std must shrink as the model gets "
                              "deeper (how fast?).")
