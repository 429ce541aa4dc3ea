"""Chapter 02 exercises 1 to 3: counting adjacent pairs (``count_pairs``), one merge
(``merge``) and the BPE training loop (``train``), checked against llmlab.tokenization's
``get_pair_counts``, ``merge_pair`` and ``learn_merges``."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

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

# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.tokenization


def reference_count_pairs(ids: Sequence[int]) -> dict[Pair, int]:
    """How often each adjacent pair occurs in ``ids`` (pairs overlap).

    >>> reference_count_pairs([97, 97, 97, 98])
    {(97, 97): 2, (97, 98): 1}
    """
    return tokenization.get_pair_counts(list(ids))


def reference_merge(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """``ids`` with every occurrence of ``pair`` replaced by ``new_id``, left to right.

    >>> reference_merge([97, 97, 97], (97, 97), 256)
    [256, 97]
    """
    return tokenization.merge_pair(list(ids), tuple(pair), new_id)


def reference_train(text: str, vocab_size: int) -> list[Pair]:
    """Byte-level BPE merges learned on ``text`` (GPT-2 pre-tokens), as id pairs.

    The most frequent pair is merged first; ties go to the pair whose bytes are greater
    (``(vocab[a], vocab[b])`` compared as a tuple), as llmlab's ``learn_merges`` does.
    Stops early when no pair is left.

    >>> reference_train("ab cd ab cd", 259)  # c+d wins a three-way tie, then a+b beats " "+cd
    [(99, 100), (97, 98), (32, 256)]
    """
    if not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"vocab_size must be an int of at least 256 (the byte tokens), "
                         f"got {vocab_size!r}")
    word_counts = Counter(tokenization.pretokenize(text))
    words = [list(word.encode("utf-8")) for word in word_counts]
    freqs = list(word_counts.values())
    vocab = tokenization.initial_vocab()
    merges: list[Pair] = []
    for new_id in range(256, vocab_size):
        counts: dict[Pair, int] = {}
        for word, freq in zip(words, freqs, strict=True):
            tokenization.get_pair_counts(word, counts, freq)
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        vocab[new_id] = vocab[best[0]] + vocab[best[1]]
        merges.append(best)
        words = [tokenization.merge_pair(word, best, new_id) for word in words]
    return merges


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


def _count_pairs_non_overlapping(ids):  # steps two at a time: a,a,a has one (a, a)
    counts: dict = {}
    for i in range(0, len(ids) - 1, 2):
        counts[ids[i], ids[i + 1]] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def _count_pairs_distinct(ids):  # every pair counted once, however often it occurs
    return dict.fromkeys(pairwise(ids), 1)


def _count_pairs_misses_last(ids):  # off by one
    counts: dict = {}
    for i in range(len(ids) - 2):
        counts[ids[i], ids[i + 1]] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def _count_pairs_wraps_around(ids):  # zip(ids, ids[1:] + ids[:1])
    return dict(Counter(zip(ids, list(ids[1:]) + list(ids[:1]), strict=True)))


def _merge_right_to_left(ids, pair, new_id):
    return reference_merge(list(ids)[::-1], (pair[1], pair[0]), new_id)[::-1]


def _merge_steps_one(ids, pair, new_id):  # after a match, moves one position instead of two
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 1
            if i + 1 >= len(ids) or (ids[i], ids[i + 1]) != tuple(pair):
                i += 1
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_drops_last(ids, pair, new_id):  # loops over pairs, forgets the last id
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_first_only(ids, pair, new_id):
    ids = list(ids)
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2:]
    return ids


def _train_loop(text, vocab_size, *, pretokens=True, weighted=True, tie_break="bytes"):
    """Variants of the training loop, each with one classic mistake."""
    word_counts = Counter(tokenization.pretokenize(text)) if pretokens else Counter([text])
    words = [list(word.encode("utf-8")) for word in word_counts if word]
    freqs = [n if weighted else 1 for word, n in word_counts.items() if word]
    vocab = tokenization.initial_vocab()
    merges = []
    for new_id in range(256, vocab_size):
        counts: dict = {}
        for word, freq in zip(words, freqs, strict=True):
            tokenization.get_pair_counts(word, counts, freq)
        if not counts:
            break
        if tie_break == "bytes":
            best = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        elif tie_break == "ids":
            best = max(counts, key=lambda p: (counts[p], p))
        else:  # max(counts, key=counts.get): the first pair seen wins a tie
            best = max(counts, key=counts.get)
        vocab[new_id] = vocab[best[0]] + vocab[best[1]]
        merges.append(best)
        words = [tokenization.merge_pair(word, best, new_id) for word in words]
    return merges


def _train_ties_first_seen(text, vocab_size):
    return _train_loop(text, vocab_size, tie_break="first")


def _train_ties_by_id(text, vocab_size):
    return _train_loop(text, vocab_size, tie_break="ids")


def _train_without_pretokens(text, vocab_size):
    return _train_loop(text, vocab_size, pretokens=False)


def _train_ignores_word_counts(text, vocab_size):
    return _train_loop(text, vocab_size, weighted=False)


# --------------------------------------------------------------------------------------------
# Helpers for the checks


def _as_pairs(value: Any, what: str) -> list[Pair]:
    """The learner's merge list as a list of (int, int) tuples, or a failure saying why not."""
    if not isinstance(value, (list, tuple)):
        raise CheckFailed(f"{what} returned {type(value).__name__}, expected a list of "
                          "(int, int) pairs")
    pairs = []
    for i, pair in enumerate(value):
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
                isinstance(x, bytes) for x in pair):
            raise CheckFailed(f"{what}: merge {i} is {pair!r}, a pair of bytes. Return the "
                              "pair of token ids that was merged, e.g. (116, 104) for t+h.")
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(isinstance(x, int) for x in pair)):
            raise CheckFailed(f"{what}: merge {i} is {pair!r}, expected a pair of ints")
        pairs.append((int(pair[0]), int(pair[1])))
    return pairs


def _show_pair(pair: Pair, vocab: dict[int, bytes]) -> str:
    left, right = (vocab.get(token_id, b"?") for token_id in pair)
    return f"{pair} = {left!r} + {right!r}"


# --------------------------------------------------------------------------------------------
# 1. Counting pairs

_COUNT_CASES: list[tuple[str, list[int]]] = [
    ("an empty list", []),
    ("a single id", [7]),
    ("the bytes of 'aaaab' (pairs overlap)", list(b"aaaab")),
    ("[1, 2, 3, 1, 2]", [1, 2, 3, 1, 2]),
    ("the bytes of 'aaa'", list(b"aaa")),
    ("the bytes of 'héllo 👋' (multi-byte characters)", list("héllo 👋".encode())),
    ("ids above 255, as after some merges", [256, 300, 256, 300, 256, 7]),
]


@exercise("ch02.count_pairs", title="counting adjacent pairs", reference=reference_count_pairs,
          wrong_answers=[_count_pairs_non_overlapping, _count_pairs_distinct,
                         _count_pairs_misses_last, _count_pairs_wraps_around])
def check_count_pairs(answer) -> None:
    require_callable(answer, "count_pairs")
    for what, ids in _COUNT_CASES:
        call = f"count_pairs({ids}) for {what}"
        got = _call(answer, call, list(ids))
        if not isinstance(got, dict):
            raise CheckFailed(f"{call} returned {type(got).__name__}, expected a dict "
                              "{(left, right): count}")
        got = {pair: n for pair, n in got.items() if n}  # a Counter may keep zeros
        expected = reference_count_pairs(ids)
        if got == expected:
            continue
        hint = "Every position i with a right neighbour gives the pair (ids[i], ids[i + 1])."
        if got == _count_pairs_non_overlapping(ids):
            hint = ("Pairs overlap: in a, a, a the pair (a, a) occurs twice (positions 0-1 and "
                    "1-2). Move one position at a time, not two.")
        elif got == _count_pairs_distinct(ids):
            hint = "Count every occurrence, not just whether a pair occurs."
        elif got == _count_pairs_misses_last(ids):
            hint = "Off by one: the last pair (ids[-2], ids[-1]) is missing."
        elif got == _count_pairs_wraps_around(ids):
            hint = "The last id has no right neighbour: don't pair it with the first."
        raise CheckFailed(f"{call} is {got}, expected {expected}. {hint}")


# --------------------------------------------------------------------------------------------
# 2. One merge

_MERGE_CASES: list[tuple[str, list[int], Pair, int]] = [
    ("[1, 2, 3, 1, 2] merging (1, 2) into 4", [1, 2, 3, 1, 2], (1, 2), 4),
    ("a, a, a merging (a, a) into 256", list(b"aaa"), (97, 97), 256),
    ("a, a, a, a merging (a, a) into 256", list(b"aaaa"), (97, 97), 256),
    ("the pair at the very end", [5, 1, 2], (1, 2), 9),
    ("the pair absent (only (2, 1) occurs)", [2, 1, 2, 1], (1, 2), 9),
    ("an empty list", [], (1, 2), 9),
    ("a single id", [1], (1, 2), 9),
    ("ids above 255", [256, 257, 256, 257, 5], (256, 257), 258),
]


@exercise("ch02.merge", title="one merge", reference=reference_merge,
          wrong_answers=[_merge_right_to_left, _merge_steps_one, _merge_drops_last,
                         _merge_first_only])
def check_merge(answer) -> None:
    require_callable(answer, "merge")
    for what, ids, pair, new_id in _MERGE_CASES:
        call = f"merge({ids}, {pair}, {new_id}) for {what}"
        given = list(ids)
        got = as_ids(_call(answer, call, given, pair, new_id), call)
        if given != ids:
            raise CheckFailed(f"{call} changed its input list into {given}. Build and return "
                              "a new list instead.")
        expected = reference_merge(ids, pair, new_id)
        if got == expected:
            continue
        hint = ("Scan left to right; where ids[i], ids[i + 1] is the pair, emit new_id and skip "
                "both; otherwise emit ids[i] and move one step.")
        if got == _merge_right_to_left(ids, pair, new_id):
            hint = "Scan from the left: in a, a, a the first two merge, leaving [X, a]."
        elif got == _merge_steps_one(ids, pair, new_id):
            hint = "After a match, skip both ids (i += 2): one id cannot be in two merges."
        elif got == _merge_drops_last(ids, pair, new_id):
            hint = "The last id is lost: when no pair starts at the last position, keep it."
        elif got == _merge_first_only(ids, pair, new_id):
            hint = "Replace every occurrence, not just the first."
        raise CheckFailed(f"{call} is {got}, expected {expected}. {hint}")


# --------------------------------------------------------------------------------------------
# 3. The training loop

_TRAIN_CASES: list[tuple[str, str, int]] = [
    ("the textbook example", "low low low low low lower lower newest newest newest newest "
     "newest newest widest widest widest", 256 + 8),
    ("a three-way tie: (' ', 'c'), ('a', 'b') and ('c', 'd') occur twice each",
     "ab cd ab cd", 256 + 3),
    ("a tie between a merged token (256 = b'aa') and two bytes", "aaa yz", 256 + 3),
    ("an empty text", "", 300),
    ("vocab_size 256 (no merges)", "hello hello", 256),
    ("a text that runs out of pairs before vocab_size", "ab ab", 300),
    ("repeated letters", "aaaa aaaa aaaa aaa", 256 + 6),
    ("accents and emoji (multi-byte characters)", "héllo héllo 👋👋 naïve 👋 héllo", 256 + 12),
    ("a few lines of verse", "To be, or not to be, that is the question:\nWhether 'tis "
     "nobler in the mind to suffer\nThe slings and arrows of outrageous fortune,\nOr to take "
     "arms against a sea of troubles\n", 256 + 30),
]


@functools.cache
def _library_merges(text: str, vocab_size: int) -> tuple[tuple[bytes, bytes], ...]:
    """What llmlab's incremental trainer learns from the same text."""
    vocab = tokenization.initial_vocab()
    merges = tokenization.learn_merges(tokenization.count_pretokens(text), vocab,
                                       vocab_size - 256)
    return tuple(merges)


@exercise("ch02.train", title="the BPE training loop", reference=reference_train,
          wrong_answers=[_train_ties_first_seen, _train_ties_by_id, _train_without_pretokens,
                         _train_ignores_word_counts])
def check_train(answer) -> None:
    require_callable(answer, "train")
    for what, text, vocab_size in _TRAIN_CASES:
        call = f"train({short(text, 40)}, {vocab_size}) for {what}"
        got = _as_pairs(_call(answer, call, text, vocab_size,
                              hint="When no pair is left, stop early (counts is empty)."), call)
        expected = reference_train(text, vocab_size)
        library = list(_library_merges(text, vocab_size))
        if got == expected:
            if byte_merges(got) != library:
                raise RuntimeError(f"llmlab bug: reference_train and learn_merges disagree on "
                                   f"{what}")
            continue
        hints = []
        for wrong, hint in (
            (_train_ties_first_seen, "Ties: max(counts, key=counts.get) keeps the first pair "
             "seen. Break ties by the pair's bytes: key=(count, vocab[a], vocab[b])."),
            (_train_ties_by_id, "Ties are broken by the bytes (vocab[a], vocab[b]), not by the "
             "ids: id 256 may stand for b'aa', which is smaller than b'y'."),
            (_train_without_pretokens, "Split the text with pretokenize(text) first, so that no "
             "merge crosses a word boundary."),
            (_train_ignores_word_counts, "A pre-token occurring n times adds n to each of its "
             "pairs' counts."),
        ):
            if got == wrong(text, vocab_size):
                hints.append(hint)
                break
        if len(got) != len(expected):
            if not hints and len(got) > vocab_size - 256:
                hints.append("vocab_size counts the 256 byte tokens: make vocab_size - 256 "
                             "merges at most.")
            elif not hints and len(expected) < vocab_size - 256:
                hints.append("The text runs out of pairs: stop when none is left.")
            elif not hints and len(got) < len(expected):
                hints.append("Make vocab_size - 256 merges (new ids 256 .. vocab_size - 1); "
                             "stop earlier only when no pair is left.")
        hint = " ".join(hints) or ("Merge the most frequent pair; on a tie, the pair with the "
                                   "greater bytes (vocab[a], vocab[b]).")
        vocab = vocab_from_merges(expected)
        for i, (mine, theirs) in enumerate(zip(got, expected, strict=False)):
            if mine != theirs:
                got_vocab = tokenization.initial_vocab()
                for rank, (left, right) in enumerate(got[:i + 1]):
                    if left in got_vocab and right in got_vocab:
                        got_vocab[256 + rank] = got_vocab[left] + got_vocab[right]
                raise CheckFailed(
                    f"{call}: merge {i} (new id {256 + i}) is {_show_pair(mine, got_vocab)}, "
                    f"expected {_show_pair(theirs, vocab)}. {hint}")
        raise CheckFailed(f"{call} made {len(got)} merges, expected {len(expected)}. {hint}")
