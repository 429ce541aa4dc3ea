"""Chapter 05 (decoding) exercises: the building blocks of text generation, checked against
llmlab.decoding (whose functions the tests check against transformers).

1. ``top_k_filter``: each row's ``k`` best scores kept, the rest ``-inf``;
2. ``top_p_filter``: each row's smallest set of best tokens whose probabilities reach ``p``;
3. ``repetition_penalty``: CTRL's penalty on the tokens already generated;
4. ``greedy_generate``: the greedy generation loop, the whole sequence fed at each step;
5. ``beam_step``: one step of beam search, the best (beam, token) extensions;
6. ``accept_greedy``: speculative decoding's greedy acceptance rule;
7. ``speculative_accept``: its sampling rule, ``min(1, p/q)`` and the residual;
8. ``choose_temperature``: an open-ended experiment, a temperature at which at least 85% of
   the words ``shakespeare-gpt`` writes are real words (the check samples again).

Each check runs several cases, including awkward ones (a batch of rows, ties, ``p = 1``,
``k`` larger than the vocabulary, ``-inf`` already present, the first step of beam search
where only beam 0 is live, a draft that never proposes a token), says which case failed
with the expected and the actual value, and names the classic mistake when the answer
matches one.

The checks live in one module per theme, each registering its exercises on import:
``filters`` (1, 2), ``penalties`` (3), ``generation`` (4, 5), ``speculative`` (6, 7) and
``experiment`` (8).
"""

from __future__ import annotations

from llmlab.course.exercises.ch05.experiment import real_word_share, reference_choose_temperature
from llmlab.course.exercises.ch05.filters import reference_top_k_filter, reference_top_p_filter
from llmlab.course.exercises.ch05.generation import reference_beam_step, reference_greedy_generate
from llmlab.course.exercises.ch05.penalties import reference_repetition_penalty
from llmlab.course.exercises.ch05.speculative import (
    reference_accept_greedy,
    reference_speculative_accept,
)

__all__ = [
    "real_word_share",
    "reference_accept_greedy",
    "reference_beam_step",
    "reference_choose_temperature",
    "reference_greedy_generate",
    "reference_repetition_penalty",
    "reference_speculative_accept",
    "reference_top_k_filter",
    "reference_top_p_filter",
]
