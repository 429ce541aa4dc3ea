"""Chapter 02 exercise 4: encoding text with a merge list (``encode``), checked against
llmlab.tokenization's ``Tokenizer``; and ``reference_decode``, the decoding the lab gives
(joining bytes before decoding is a one-liner, so it is shown, not set as an exercise)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import pairwise

from llmlab import tokenization
from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch02._common import (
    Pair,
    as_ids,
    byte_merges,
    short,
    vocab_from_merges,
)
from llmlab.course.exercises.ch02.bpe_training import reference_merge, reference_train

# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.tokenization


def reference_encode(text: str, merges: Sequence[Pair]) -> list[int]:
    """Token ids of ``text``: each GPT-2 pre-token's bytes, merged lowest rank first.

    >>> reference_encode("hi hi!", [(104, 105), (32, 256)])
    [256, 257, 33]
    """
    table = {tuple(pair): (rank, 256 + rank) for rank, pair in enumerate(merges)}
    ids: list[int] = []
    for pretoken in tokenization.pretokenize(text):
        ids.extend(tokenization.apply_merges(list(pretoken.encode("utf-8")), table))
    return ids


def reference_decode(ids: Sequence[int], vocab: dict[int, bytes]) -> str:
    """The text behind ``ids``; invalid UTF-8 becomes U+FFFD.

    >>> reference_decode([104, 0xE2, 0x82, 0xAC], vocab_from_merges([]))
    'h€'
    """
    return tokenization.Tokenizer(vocab, []).decode(list(ids))


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


def _encode_without_pretokens(text, merges):
    table = {tuple(pair): (rank, 256 + rank) for rank, pair in enumerate(merges)}
    return tokenization.apply_merges(list(text.encode("utf-8")), table)


def _encode_leftmost_pair_first(text, merges):  # merges the first known pair in the text
    ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
    out = []
    for pretoken in tokenization.pretokenize(text):
        ids = list(pretoken.encode("utf-8"))
        while True:
            known = [pair for pair in pairwise(ids) if pair in ranks]
            if not known:
                break
            ids = reference_merge(ids, known[0], 256 + ranks[known[0]])
        out.extend(ids)
    return out


def _encode_latest_merge_first(text, merges):  # max instead of min over the ranks
    ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
    out = []
    for pretoken in tokenization.pretokenize(text):
        ids = list(pretoken.encode("utf-8"))
        while True:
            known = [pair for pair in pairwise(ids) if pair in ranks]
            if not known:
                break
            best = max(known, key=ranks.get)
            ids = reference_merge(ids, best, 256 + ranks[best])
        out.extend(ids)
    return out


# --------------------------------------------------------------------------------------------
# 4. Encoding

_ENCODE_TRAINING_TEXT = (
    "the cat sat on the mat; the hat is on the cat.\n"
    "that cat, this hat, these mats!  Then the   cats sat.\n" * 3
    + "abc abc bcd bcd bcd bcd\n"
)

_ENCODE_CASES: list[tuple[str, str]] = [
    ("a sentence from the training text", "the cat sat on the mat;"),
    ("words never seen in training", "The catamaran hatched a thesis."),
    ("rank order matters: in ' abcd', 'bc' + 'd' was learned before 'a' + 'bc'", "abc abcd"),
    ("whitespace runs, newlines and indentation", "the  cat\n\n    return  \n"),
    ("emoji and Chinese (no merge applies: raw bytes)", "猫 👋🏽!"),
    ("an empty string", ""),
]


@functools.cache
def _encode_merges() -> tuple[Pair, ...]:
    return tuple(reference_train(_ENCODE_TRAINING_TEXT, 256 + 40))


@exercise("ch02.encode", title="encoding with merges", reference=reference_encode,
          wrong_answers=[_encode_without_pretokens, _encode_leftmost_pair_first,
                         _encode_latest_merge_first])
def check_encode(answer) -> None:
    require_callable(answer, "encode")
    merges = list(_encode_merges())
    vocab = vocab_from_merges(merges)
    library = tokenization.Tokenizer(vocab, byte_merges(merges))
    for what, text in _ENCODE_CASES:
        call = f"encode({text!r}, merges) for {what}"
        got = as_ids(_call(answer, call, text, list(merges)), call)
        expected = library.encode(text)
        if got == expected:
            continue
        hint = ("Pre-tokenize, then in each pre-token repeatedly merge the pair with the lowest "
                "rank (earliest learned) until no learned pair is left.")
        if got == _encode_without_pretokens(text, merges):
            hint = "Encode each pre-token of pretokenize(text) on its own, then concatenate."
        elif got == _encode_leftmost_pair_first(text, merges):
            hint = ("You merged the leftmost known pair; merge the pair with the lowest rank "
                    "(learned earliest) wherever it is.")
        elif got == _encode_latest_merge_first(text, merges):
            hint = "Lowest rank first (min, not max): merges are applied in training order."
        shown = [vocab.get(i, b"?") for i in got if isinstance(i, int)]
        raise CheckFailed(f"{call} is {short(got)} (pieces {short(shown)}), expected "
                          f"{short(expected)} (pieces {short([vocab[i] for i in expected])}). "
                          f"{hint}")
