"""Tokenization from scratch (chapter 2): byte-level BPE, OpenAI's encodings, WordPiece,
and characters, one small module each.

- ``pretokens``: GPT-2's, cl100k's and o200k's pre-tokenisation patterns, special-token
  splitting, and pre-token counts of a large file in several processes
- ``bpe``: pair counts, ``merge_pair``, and learning merges (``learn_merges_naive``, the
  textbook loop; ``learn_merges``, incremental); ``train_bpe`` on a text file; and
  ``merges_from_ranks``, the merges hidden in a vocabulary ranked in merge order
- ``byte_level``: the ``Tokenizer`` (encode, decode, stream), GPT-2's files
  (``Tokenizer.gpt2``), and ``to_hf_tokenizer`` to cross-check with Hugging Face
- ``tiktoken_ranks``: cl100k_base / o200k_base (ranks, no merge list) in the same
  ``Tokenizer``, and the loaders of their course assets
- ``wordpieces``: BERT's pre-tokeniser and WordPiece segmentation
- ``wordpiece_training``: learning a WordPiece vocabulary by likelihood score
- ``chars``: ``CharTokenizer``, one id per character

Every tokenizer saves itself as a JSON-serialisable dict with a ``"kind"`` key, and
``from_state`` rebuilds whichever kind it is given:

>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as folder:
...     path = Path(folder) / "tiny.txt"
...     _ = path.write_text("low low low lower<|endoftext|>newest newest")
...     vocab, merges = train_bpe(path, 260, ["<|endoftext|>"])
>>> tok = Tokenizer(vocab, merges, ["<|endoftext|>"])
>>> tok.encode(" lowest<|endoftext|>")
[259, 101, 115, 116, 256]
>>> from_state(tok.to_state()).encode(" lowest<|endoftext|>")
[259, 101, 115, 116, 256]
>>> from_state(CharTokenizer("ab").to_state())
CharTokenizer(vocab_size=2)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmlab.tokenization.bpe import (
    get_pair_counts,
    initial_vocab,
    learn_merges,
    learn_merges_naive,
    merge_pair,
    merges_from_ranks,
    train_bpe,
    train_bpe_naive,
)
from llmlab.tokenization.byte_level import (
    Tokenizer,
    apply_merges,
    build_merge_table,
    bytes_to_unicode,
    to_hf_tokenizer,
)
from llmlab.tokenization.chars import CharTokenizer
from llmlab.tokenization.pretokens import (
    CL100K_PATTERN,
    GPT2_PATTERN,
    O200K_PATTERN,
    count_pretokens,
    count_pretokens_in_file,
    find_chunk_boundaries,
    pretokenize,
    split_on_special_tokens,
)
from llmlab.tokenization.tiktoken_ranks import read_tiktoken_ranks
from llmlab.tokenization.wordpiece_training import (
    learn_wordpiece_merges,
    train_wordpiece,
    wordpiece_scores,
    wordpiece_split,
)
from llmlab.tokenization.wordpieces import bert_pretokenize, wordpiece

__all__ = [
    "CL100K_PATTERN",
    "GPT2_PATTERN",
    "O200K_PATTERN",
    "CharTokenizer",
    "Tokenizer",
    "apply_merges",
    "bert_pretokenize",
    "build_merge_table",
    "bytes_to_unicode",
    "count_pretokens",
    "count_pretokens_in_file",
    "find_chunk_boundaries",
    "from_state",
    "get_pair_counts",
    "initial_vocab",
    "learn_merges",
    "learn_merges_naive",
    "learn_wordpiece_merges",
    "merge_pair",
    "merges_from_ranks",
    "pretokenize",
    "read_tiktoken_ranks",
    "split_on_special_tokens",
    "to_hf_tokenizer",
    "train_bpe",
    "train_bpe_naive",
    "train_wordpiece",
    "wordpiece",
    "wordpiece_scores",
    "wordpiece_split",
]

#: Which class rebuilds each kind of state.
_STATE_READERS: dict[str, Any] = {
    "char": CharTokenizer,
    **dict.fromkeys(Tokenizer.STATE_KINDS, Tokenizer),
}


def from_state(state: Mapping[str, Any]) -> CharTokenizer | Tokenizer:
    """The tokenizer that ``to_state()`` described, whatever its kind.

    >>> from_state({"kind": "char", "chars": "abc"}).encode("cab")
    [2, 0, 1]
    >>> from_state({"kind": "sentencepiece"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown tokenizer state kind 'sentencepiece'; known kinds: bpe, char, gpt2, ...
    """
    kind = state.get("kind") if isinstance(state, Mapping) else None
    reader = _STATE_READERS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        got = f"kind {kind!r}" if isinstance(state, Mapping) else f"a {type(state).__name__}"
        raise ValueError(f"unknown tokenizer state {got}; known kinds: "
                         f"{', '.join(sorted(_STATE_READERS))} (a dict written by a "
                         "tokenizer's to_state())")
    return reader.from_state(state)
