"""Small helpers shared by chapter 02's checks: the merge-list type, the vocabulary and the
byte merges behind a merge list, short reprs and lists of ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmlab import tokenization
from llmlab.course.checks import CheckFailed

Pair = tuple[int, int]


def vocab_from_merges(merges: Sequence[Pair]) -> dict[int, bytes]:
    """The bytes behind every id: 256 single bytes, then one entry per merge.

    >>> vocab = vocab_from_merges([(104, 105), (256, 33)])
    >>> vocab[104], vocab[256], vocab[257], len(vocab)
    (b'h', b'hi', b'hi!', 258)
    """
    vocab = tokenization.initial_vocab()
    for rank, (left, right) in enumerate(merges):
        for token_id in (left, right):
            if token_id not in vocab:
                raise ValueError(f"merge {rank} ({left}, {right}) uses id {token_id}, which "
                                 f"does not exist yet (ids 0..{len(vocab) - 1} do)")
        vocab[256 + rank] = vocab[left] + vocab[right]
    return vocab


def byte_merges(merges: Sequence[Pair]) -> list[tuple[bytes, bytes]]:
    """Id merges in llmlab's format (pairs of byte strings), for ``Tokenizer``.

    >>> byte_merges([(104, 105), (256, 33)])
    [(b'h', b'i'), (b'hi', b'!')]
    """
    vocab = vocab_from_merges(merges)
    return [(vocab[left], vocab[right]) for left, right in merges]


def short(value: Any, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "..." + text[-1]


def as_ids(value: Any, what: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, int) for x in value):
        raise CheckFailed(f"{what} returned {short(value)}, expected a list of int ids")
    return list(value)
