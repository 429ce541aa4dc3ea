"""Chapter 05 (decoding) exercises: the building blocks of text generation, checked against
llmlab.decoding and llmlab.attention (whose functions the tests check against transformers).

1. ``apply_temperature``: the logits divided by the temperature (> 0);
2. ``top_k_filter``: each row's ``k`` best scores kept, the rest ``-inf``;
3. ``top_p_filter``: each row's smallest set of best tokens whose probabilities reach ``p``;
4. ``greedy_generate``: the greedy generation loop, the whole sequence fed at each step;
5. ``beam_step``: one step of beam search, the best (beam, token) extensions;
6. ``kv_cache_update``: new keys and values written into a pre-allocated KV cache.

Each check runs several cases, including awkward ones (a batch of rows, ties, ``p = 1``,
``k`` larger than the vocabulary, ``-inf`` already present, the first step of beam search
where only beam 0 is live), says which case failed with the expected and the actual value,
and names the classic mistake when the answer matches one.

Cut-offs are compared tie-tolerantly: when several tokens tie at the boundary, keeping
any of them is right, as long as the number of tokens and their scores are.

The checks live in one module per theme, each registering its exercises on import:
``filters`` (1 to 3), ``generation`` (4, 5) and ``kv_cache`` (6).
"""

from __future__ import annotations

# Sorted names are also the order of the exercises, so the registry lists them as the lab does.
from llmlab.course.exercises.ch05.filters import (
    reference_apply_temperature,
    reference_top_k_filter,
    reference_top_p_filter,
)
from llmlab.course.exercises.ch05.generation import reference_beam_step, reference_greedy_generate
from llmlab.course.exercises.ch05.kv_cache import reference_kv_cache_update

__all__ = [
    "reference_apply_temperature",
    "reference_beam_step",
    "reference_greedy_generate",
    "reference_kv_cache_update",
    "reference_top_k_filter",
    "reference_top_p_filter",
]
