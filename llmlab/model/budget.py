"""What a model costs: its parameters (counted from a module or computed from a config) and
its floating-point operations per token (worked examples in each docstring).
"""

from __future__ import annotations

from torch import nn

from llmlab.model.config import ModelConfig

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
