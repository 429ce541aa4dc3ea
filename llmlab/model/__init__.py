"""A decoder-only transformer, written from scratch to be read in one sitting.

One configurable model covers the two families the course compares:

- **GPT-2 style**: learned positions, LayerNorm, GELU MLP, biases, tied embeddings.
- **Llama style**: rotary positions (RoPE), RMSNorm, SwiGLU MLP, no biases, and
  grouped-query attention (several query heads share one key/value head).

Every piece is a small module that the tests check against the library version
(``torch.nn.LayerNorm``, ``torch.nn.RMSNorm``, ``F.scaled_dot_product_attention``,
transformers' rotary helpers), and the whole model reproduces transformers' GPT-2 and
Llama logits once their weights are copied in (``GPT.from_hf``).

- ``config``: :class:`ModelConfig`, its two presets and ``ModelConfig.from_hf``.
- ``gpt``: the norms, MLPs, :class:`Block` and :class:`GPT`, and :func:`lm_loss`. The
  attention, positions and KV cache come from ``llmlab.attention``; generation is
  ``llmlab.decoding.generate``.
- ``budget``: :func:`count_parameters` and :func:`flops_per_token`.
- ``depth``: probes across the blocks (:func:`residual_stream_stds`,
  :func:`block_grad_norms`, with residuals on or off) and
  :func:`init_residual_projections`.

>>> import torch
>>> config = ModelConfig.llama_style(vocab_size=100, n_layer=2, n_head=4, n_kv_head=2)
>>> model = GPT(config)
>>> idx = torch.tensor([[1, 2, 3]])
>>> logits = model(idx)
>>> logits.shape                            # one row of logits per position
torch.Size([1, 3, 100])
>>> lm_loss(logits[:, :-1], idx[:, 1:]).item() > 0    # each position predicts the next
True
"""

from llmlab.model.budget import count_parameters, flops_per_token
from llmlab.model.config import ModelConfig
from llmlab.model.depth import (
    block_grad_norms,
    init_residual_projections,
    residual_stream_stds,
)
from llmlab.model.gpt import (
    GPT,
    MLP,
    Block,
    LayerNorm,
    RMSNorm,
    SwiGLU,
    eval_mode,
    lm_loss,
)

__all__ = [
    "ModelConfig",
    "eval_mode",
    "LayerNorm",
    "RMSNorm",
    "MLP",
    "SwiGLU",
    "Block",
    "GPT",
    "lm_loss",
    "count_parameters",
    "flops_per_token",
    "residual_stream_stds",
    "block_grad_norms",
    "init_residual_projections",
]
