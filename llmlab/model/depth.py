"""Probes for depth: what the residual stream and the gradients look like across the
blocks of a ``GPT``, with the residual connections on or off, and GPT-2's initialisation
of the layers that write into the stream.

These are measuring instruments for chapter 1; they never change how ``GPT`` computes.
``residual=False`` runs each pre-norm block as ``x = mlp(norm2(attn(norm1(x))))``: the
same sublayers and weights with the two skip connections removed.

>>> import torch
>>> from llmlab.model import GPT, ModelConfig
>>> config = ModelConfig.gpt2_style(vocab_size=50, context_length=8, n_layer=3,
...                                 n_head=2, d_model=16)
>>> model = GPT(config)
>>> idx = torch.randint(0, 50, (2, 8))
>>> residual_stream_stds(model, idx).shape      # the embeddings, then after each block
torch.Size([4])
>>> block_grad_norms(model, idx).shape          # one gradient norm per block
torch.Size([3])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmlab.attention import rotary_cos_sin, sinusoidal_positions
from llmlab.model.gpt import GPT, Block, lm_loss

#: The parameters that write into the residual stream: attention's output projection and
#: the MLP's down projection (two writes per block).
RESIDUAL_PROJECTIONS = ("o_proj.weight", "down_proj.weight")


def _embed(model: GPT, idx: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
    """The stream before the first block, and the rotary angles (``None`` unless rotary)."""
    cfg, T = model.config, idx.shape[1]
    if idx.dim() != 2:
        raise ValueError(f"idx must be 2-D (batch, time); got shape {tuple(idx.shape)}")
    x = model.tok_emb(idx)
    if cfg.position == "learned":
        return x + model.pos_emb(torch.arange(T, device=idx.device)), None
    if cfg.position == "sinusoidal":
        return x + sinusoidal_positions(T, cfg.d_model).to(x), None
    cos, sin = rotary_cos_sin(T, cfg.head_dim, cfg.rope_theta, device=idx.device)
    return x, (cos.to(x.dtype), sin.to(x.dtype))


def _run_block(block: Block, x: torch.Tensor, rope: tuple | None, residual: bool) -> torch.Tensor:
    if residual:
        return block(x, rope)
    if not block.pre_norm:
        raise ValueError("residual=False is defined for pre-norm blocks only "
                         "(build the model with pre_norm=True)")
    a = block.attn(block.norm1(x), rope=rope, is_causal=True)
    return block.mlp(block.norm2(a))


def residual_stream_stds(model: GPT, idx: torch.Tensor, residual: bool = True) -> torch.Tensor:
    """The standard deviation of the residual stream ``(n_layer + 1,)``: entry 0 after the
    embeddings, entry ``i`` after block ``i`` (before the final norm). No gradients.

    With GPT-2's initialisation the stream barely grows with depth; re-initialise the
    residual projections with the unscaled 0.02 and it grows like ``sqrt(n_layer)``:

    >>> import torch
    >>> from llmlab.model import GPT, ModelConfig
    >>> torch.manual_seed(0) and None
    >>> model = GPT(ModelConfig.gpt2_style(vocab_size=100, context_length=16, n_layer=32,
    ...                                    n_head=4, d_model=64))
    >>> idx = torch.randint(0, 100, (4, 16))
    >>> stds = residual_stream_stds(model, idx)
    >>> bool(stds[-1] / stds[0] < 1.5)
    True
    >>> init_residual_projections(model, std=0.02)
    >>> stds = residual_stream_stds(model, idx)
    >>> bool(stds[-1] / stds[0] > 4)
    True
    """
    with torch.no_grad():
        x, rope = _embed(model, idx)
        stds = [x.std()]
        for block in model.blocks:
            x = _run_block(block, x, rope, residual)
            stds.append(x.std())
    return torch.stack(stds).float().cpu()


def block_grad_norms(model: GPT, idx: torch.Tensor, residual: bool = True) -> torch.Tensor:
    """The gradient norm of each block's parameters ``(n_layer,)`` after one backward pass
    of the next-token loss on ``idx`` (``idx[:, :-1]`` predicts ``idx[:, 1:]``).

    Gradients already on the model are cleared first, and left at the values computed here.
    """
    model.zero_grad(set_to_none=True)
    x, rope = _embed(model, idx)
    for block in model.blocks:
        x = _run_block(block, x, rope, residual)
    logits = model.lm_head(model.norm_f(x))
    lm_loss(logits[:, :-1], idx[:, 1:]).backward()
    norms = []
    for block in model.blocks:
        squares = [p.grad.pow(2).sum() for p in block.parameters() if p.grad is not None]
        norms.append(torch.stack(squares).sum().sqrt() if squares else torch.tensor(0.0))
    return torch.stack(norms).detach().float().cpu()


def init_residual_projections(model: nn.Module, std: float) -> None:
    """Re-initialise every residual projection (``o_proj``, ``down_proj`` weights) from
    ``N(0, std²)``, in place. ``GPT`` itself uses GPT-2's ``0.02 / sqrt(2 * n_layer)``.

    >>> from llmlab.model import GPT, ModelConfig
    >>> model = GPT(ModelConfig.gpt2_style(vocab_size=10, context_length=4, n_layer=2,
    ...                                    n_head=2, d_model=16))
    >>> init_residual_projections(model, 0.0)
    >>> float(model.blocks[0].attn.o_proj.weight.abs().max())
    0.0
    """
    if not (isinstance(std, int | float) and math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be a finite number >= 0; got {std!r}")
    found = False
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(RESIDUAL_PROJECTIONS):
                if std > 0:
                    nn.init.normal_(p, std=std)
                else:
                    nn.init.zeros_(p)
                found = True
    if not found:
        raise ValueError("the model has no o_proj/down_proj weights: expected an llmlab GPT")
