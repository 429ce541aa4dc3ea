"""Small helpers shared by chapter 05's checks: ``-inf``, tensors compared with ``-inf`` in
the same places and shown rounded, and the tiny model that generates and uses a KV cache."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from llmlab.model import GPT, ModelConfig

NEG_INF = float("-inf")


def show(t: torch.Tensor) -> str:
    return str([round(v, 4) if math.isfinite(v) else v for v in t.tolist()])


def same(a: Any, b: torch.Tensor) -> bool:
    """Equal shapes and values, with -inf in the same places."""
    return (isinstance(a, torch.Tensor) and a.shape == b.shape and a.is_floating_point()
            and torch.equal(torch.isneginf(a), torch.isneginf(b))
            and torch.allclose(a.masked_fill(torch.isneginf(a), 0).float(),
                               b.masked_fill(torch.isneginf(b), 0).float(), atol=1e-5))


@functools.cache
def tiny_model() -> GPT:
    """A small random Llama-style model whose greedy output does not just repeat a token."""
    config = ModelConfig.llama_style(vocab_size=48, context_length=64, n_layer=2, d_model=32,
                                     n_head=4, n_kv_head=2, tie_embeddings=False)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = GPT(config)
    with torch.no_grad():  # a larger output layer: decisive logits (best token p ~ 0.3)
        model.lm_head.weight.mul_(10)
    return model.eval()
