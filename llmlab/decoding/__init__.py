"""Decoding: turning next-token logits into text, one strategy per small function.

A language model gives a score (logit) for every token of the vocabulary; decoding decides
which token comes next. One module per kind of strategy, each importing only the ones
above it:

- ``processors``: the *logit processors* (temperature, top-k, top-p, min-p, penalties,
  biases, constraints), each a pure function ``(logits (B, V), ...) -> logits (B, V)``,
  checked against the matching ``transformers`` ``LogitsProcessor``; :class:`SamplingConfig`
  bundles them and :func:`choose_next_token` picks a token.
- ``loop``: :func:`generate`, the one generation loop (``GPT`` has none of its own), over
  :func:`iter_next_tokens` and :class:`Stepper`; :func:`left_pad` for batches;
  :func:`stream_text` and :func:`generate_text` for text as it is written.
- ``search``: :func:`beam_search` (one step: :func:`beam_step`) and
  :func:`contrastive_search`.
- ``speculative``: :func:`speculative_generate` with a draft such as
  :func:`truncated_draft`; :func:`prompt_lookup_generate`, drafting with
  :func:`lookup_draft` (tokens copied from the context).
- ``constrained``: :func:`constrained_generate` to a regex (:class:`RegexConstraint`,
  :func:`json_object_pattern`).

>>> import torch
>>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
>>> top_k_filter(logits, 2)
tensor([[2., 1., -inf, -inf]])
>>> top_p_filter(logits, 0.7)  # the best token alone has p = 0.64 < 0.7: keep two
tensor([[2., 1., -inf, -inf]])
"""

from llmlab.decoding.constrained import (
    RegexConstraint,
    constrained_generate,
    json_object_pattern,
    token_strings,
)
from llmlab.decoding.loop import (
    Stepper,
    generate,
    generate_text,
    iter_next_tokens,
    left_pad,
    stream_text,
)
from llmlab.decoding.processors import (
    SamplingConfig,
    allow_only,
    apply_temperature,
    ban_sequences,
    choose_next_token,
    frequency_presence_penalty,
    logit_bias,
    min_p_filter,
    process_logits,
    repetition_penalty,
    token_counts,
    top_k_filter,
    top_p_filter,
)
from llmlab.decoding.search import Hypothesis, beam_search, beam_step, contrastive_search
from llmlab.decoding.speculative import (
    SpeculativeStats,
    lookup_draft,
    prompt_lookup_generate,
    speculative_generate,
    truncated_draft,
)

__all__ = [
    "apply_temperature", "top_k_filter", "top_p_filter", "min_p_filter",
    "repetition_penalty", "token_counts", "frequency_presence_penalty",
    "logit_bias", "ban_sequences", "allow_only",
    "SamplingConfig", "process_logits", "choose_next_token",
    "left_pad", "Stepper", "iter_next_tokens", "generate", "stream_text", "generate_text",
    "Hypothesis", "beam_step", "beam_search", "contrastive_search",
    "truncated_draft", "SpeculativeStats", "speculative_generate", "lookup_draft",
    "prompt_lookup_generate",
    "token_strings", "json_object_pattern", "RegexConstraint", "constrained_generate",
]
