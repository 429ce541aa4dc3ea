"""Chapter 02 (tokenization) exercises: byte-level BPE in six small functions, checked against
llmlab.tokenization.

1. ``count_pairs``: how often each adjacent pair of ids occurs (pairs overlap);
2. ``merge``: every occurrence of a pair replaced by a new id, left to right;
3. ``train``: the BPE training loop, most frequent pair first, ties broken by bytes;
4. ``encode``: text to ids, each pre-token merged lowest rank first;
5. ``decode``: ids to text, invalid UTF-8 as U+FFFD;
6. ``split_special``: text cut around special tokens, kept whole, longest first.

The learner's functions work on token ids: ids 0..255 are the single bytes, and the i-th
merge creates id ``256 + i``. A merge list is therefore a list of id pairs,
``[(116, 104), (256, 101), ...]`` ("t"+"h" becomes 256, then 256+"e" becomes 257). The checks
turn those pairs into llmlab's byte merges to compare with ``learn_merges`` and
``Tokenizer``.

Each check runs several cases, including awkward ones (empty input, repeated ids, emoji,
ties, overlapping special tokens), says which case failed with the expected and the actual
value, and names the classic mistake when the answer matches one.

The checks live in one module per theme, each registering its exercises on import:
``bpe_training`` (1 to 3), ``encode_decode`` (4, 5) and ``special_tokens`` (6).
"""

from __future__ import annotations

from llmlab.course.exercises.ch02._common import Pair, byte_merges, vocab_from_merges

# Sorted names are also the order of the exercises, so the registry lists them as the lab does.
from llmlab.course.exercises.ch02.bpe_training import (
    reference_count_pairs,
    reference_merge,
    reference_train,
)
from llmlab.course.exercises.ch02.encode_decode import reference_decode, reference_encode
from llmlab.course.exercises.ch02.special_tokens import reference_split_special

__all__ = [
    "Pair",
    "byte_merges",
    "reference_count_pairs",
    "reference_decode",
    "reference_encode",
    "reference_merge",
    "reference_split_special",
    "reference_train",
    "vocab_from_merges",
]
