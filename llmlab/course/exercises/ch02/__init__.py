"""Chapter 02 (tokenization) exercises: byte-level BPE in five small functions, WordPiece
training, and an experiment, checked against llmlab.tokenization.

1. ``count_pairs``: how often each adjacent pair of ids occurs (pairs overlap);
2. ``merge``: every occurrence of a pair replaced by a new id, left to right;
3. ``train``: the BPE training loop, most frequent pair first, ties broken by bytes;
4. ``encode``: text to ids, each pre-token merged lowest rank first;
5. ``split_special``: text cut around special tokens, kept whole, longest first;
6. ``train_wordpiece``: WordPiece merges ranked by count(ab) / (count(a) * count(b));
7. ``vocab_budget`` (experiment): the smallest BPE vocabulary that reaches 2.0 bytes per
   token on held-out text, checked by measuring the learner's choice.

The learner's functions work on token ids: ids 0..255 are the single bytes, and the i-th
merge creates id ``256 + i``. A merge list is therefore a list of id pairs,
``[(116, 104), (256, 101), ...]`` ("t"+"h" becomes 256, then 256+"e" becomes 257). The checks
turn those pairs into llmlab's byte merges to compare with ``learn_merges`` and
``Tokenizer``.

Each check runs several cases, including awkward ones (empty input, repeated ids, emoji,
ties, overlapping special tokens), says which case failed with the expected and the actual
value, and names the classic mistake when the answer matches one.

The checks live in one module per theme, each registering its exercises on import:
``bpe_training`` (1 to 3), ``encode_decode`` (4, and the decoding the lab gives),
``special_tokens`` (5), ``wordpiece_training`` (6) and ``vocab_budget`` (7).
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
from llmlab.course.exercises.ch02.vocab_budget import reference_choose_vocab_size
from llmlab.course.exercises.ch02.wordpiece_training import reference_train_wordpiece

__all__ = [
    "Pair",
    "byte_merges",
    "reference_choose_vocab_size",
    "reference_count_pairs",
    "reference_decode",
    "reference_encode",
    "reference_merge",
    "reference_split_special",
    "reference_train",
    "reference_train_wordpiece",
    "vocab_from_merges",
]
