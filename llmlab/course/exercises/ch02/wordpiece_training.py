"""Chapter 02 exercise 6: training a WordPiece vocabulary (``train_wordpiece``), merges
ranked by the likelihood score count(ab) / (count(a) * count(b)), checked against
llmlab.tokenization's ``learn_wordpiece_merges``."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from llmlab import tokenization
from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch02._common import short

StrPair = tuple[str, str]


def reference_train_wordpiece(word_counts: Mapping[str, int], n_merges: int) -> list[StrPair]:
    """The first ``n_merges`` WordPiece merges, highest likelihood score first.

    >>> reference_train_wordpiece({"aab": 1, "ab": 3}, 2)  # not a+b, the most frequent pair
    [('a', '##a'), ('aa', '##b')]
    """
    return tokenization.learn_wordpiece_merges(dict(word_counts), n_merges)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure the check fails them


def _wordpiece_loop(word_counts, n_merges, *, score="likelihood", weighted=True,
                    strip_prefix=True, ties="greater"):
    """Variants of the training loop, each with one classic mistake."""
    words = {}
    for word, count in word_counts.items():
        pieces = tuple(tokenization.wordpiece_split(word))
        words[pieces] = words.get(pieces, 0) + (count if weighted else 1)
    merges = []
    for _ in range(n_merges):
        pieces_n, pairs_n = {}, {}
        for pieces, count in words.items():
            for piece in pieces:
                pieces_n[piece] = pieces_n.get(piece, 0) + count
            for pair in itertools.pairwise(pieces):
                pairs_n[pair] = pairs_n.get(pair, 0) + count
        if not pairs_n:
            break
        if score == "frequency":  # BPE's rule
            scores = {p: float(n) for p, n in pairs_n.items()}
        else:
            scores = {(a, b): n / (pieces_n[a] * pieces_n[b]) for (a, b), n in pairs_n.items()}
        if ties == "greater":
            best = max(scores, key=lambda p: (scores[p], p))
        else:  # max(scores, key=scores.get): the first pair seen wins a tie
            best = max(scores, key=scores.get)
        merged = best[0] + (best[1].removeprefix("##") if strip_prefix else best[1])
        merges.append(best)
        new_words = {}
        for pieces, count in words.items():
            out, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(pieces[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + count
        words = new_words
    return merges


def _wordpiece_by_frequency(word_counts, n_merges):
    return _wordpiece_loop(word_counts, n_merges, score="frequency")


def _wordpiece_unweighted(word_counts, n_merges):
    return _wordpiece_loop(word_counts, n_merges, weighted=False)


def _wordpiece_keeps_inner_prefix(word_counts, n_merges):  # "h" + "##u" -> "h##u"
    return _wordpiece_loop(word_counts, n_merges, strip_prefix=False)


def _wordpiece_ties_first_seen(word_counts, n_merges):
    return _wordpiece_loop(word_counts, n_merges, ties="first")


# --------------------------------------------------------------------------------------------
# The check

_CASES: list[tuple[str, dict[str, int], int]] = [
    ("the likelihood beats frequency: a+b occurs most, a+a scores highest",
     {"aab": 1, "ab": 3}, 2),
    ("Hugging Face's course corpus (hug, pug, pun, bun, hugs)",
     {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}, 6),
    ("a single word repeated", {"banana": 3}, 4),
    ("a corpus that runs out of pairs before n_merges", {"ab": 2, "c": 5}, 5),
    ("n_merges = 0", {"low": 5, "lower": 2}, 0),
    ("an empty corpus", {}, 3),
    ("words from a line of verse", {"to": 2, "be": 2, "or": 1, "not": 1, "that": 1, "is": 1,
                                     "the": 1, "question": 1}, 10),
    ("low, lower, newest, widest (the BPE textbook corpus)",
     {"low": 5, "lower": 2, "newest": 6, "widest": 3}, 10),
]

_HINTS = (
    (_wordpiece_by_frequency, "That is BPE's rule (the most frequent pair). WordPiece ranks a "
     "pair by count(ab) / (count(a) * count(b))."),
    (_wordpiece_unweighted, "A word occurring n times adds n to the counts of each of its "
     "pieces and pairs."),
    (_wordpiece_keeps_inner_prefix, "Merging a with ##b gives a + b without the inner '##' "
     "(h + ##u -> hu, ##u + ##g -> ##ug)."),
    (_wordpiece_ties_first_seen, "Ties: max(scores, key=scores.get) keeps the first pair "
     "seen. Break ties by the pair itself: key=lambda p: (scores[p], p)."),
)


def _as_str_pairs(value: Any, what: str) -> list[StrPair]:
    if not isinstance(value, (list, tuple)):
        raise CheckFailed(f"{what} returned {type(value).__name__}, expected a list of "
                          "(str, str) pairs such as [('##g', '##s'), ...]")
    pairs = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(isinstance(x, str) for x in pair)):
            raise CheckFailed(f"{what}: merge {i} is {short(pair)}, expected a pair of "
                              "strings (the two pieces merged)")
        pairs.append((pair[0], pair[1]))
    return pairs


@exercise("ch02.train_wordpiece", title="training a WordPiece vocabulary",
          reference=reference_train_wordpiece,
          wrong_answers=[_wordpiece_by_frequency, _wordpiece_unweighted,
                         _wordpiece_keeps_inner_prefix, _wordpiece_ties_first_seen])
def check_train_wordpiece(answer) -> None:
    require_callable(answer, "train_wordpiece")
    for what, word_counts, n_merges in _CASES:
        call = f"train_wordpiece({short(word_counts, 50)}, {n_merges}) for {what}"
        got = _as_str_pairs(_call(answer, call, dict(word_counts), n_merges,
                                  hint="When no pair is left, stop early."), call)
        expected = reference_train_wordpiece(word_counts, n_merges)
        if got == expected:
            continue
        hint = next((text for wrong, text in _HINTS if got == wrong(word_counts, n_merges)),
                    "Score every adjacent pair by count(ab) / (count(a) * count(b)) and merge "
                    "the best; on a tie, the greater pair (a, b).")
        for i, (mine, theirs) in enumerate(zip(got, expected, strict=False)):
            if mine != theirs:
                raise CheckFailed(f"{call}: merge {i} is {mine}, expected {theirs}. {hint}")
        raise CheckFailed(f"{call} made {len(got)} merges, expected {len(expected)}. {hint}")
