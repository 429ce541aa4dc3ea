"""Training a WordPiece vocabulary: merges chosen by likelihood, not by frequency.

WordPiece (Schuster & Nakajima, 2012; BERT) builds its vocabulary like BPE, by merging
adjacent pieces, but it ranks a pair ``(a, b)`` by

    score(a, b) = count(ab) / (count(a) * count(b))

the gain in corpus likelihood of a unigram model when ``a b`` becomes one piece. A pair of
pieces that are frequent anyway scores low; a pair whose parts rarely occur apart scores
high. Words start as characters, the first bare and the others with the ``##``
continuation prefix; merging ``a`` with ``##b`` gives ``ab`` (it keeps ``a``'s prefix).
Google never published its trainer; this is the algorithm as the WordPiece papers and
Hugging Face's course describe it. (Hugging Face ``tokenizers``' ``WordPieceTrainer``
picks merges by frequency, as BPE does, and only writes the vocabulary in WordPiece's
format: chapter 2 measures that.)

>>> words = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}
>>> learn_wordpiece_merges(words, 1)  # g+s: rare pieces that always occur together
[('##g', '##s')]

BPE would merge ``u g``, the most frequent pair (20 times), first. After ``##gs`` six pairs
tie at exactly 1/36 and the greater pair as strings wins: ``('p', '##u')``.

>>> learn_wordpiece_merges(words, 3)
[('##g', '##s'), ('p', '##u'), ('h', '##u')]
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

__all__ = ["learn_wordpiece_merges", "train_wordpiece", "wordpiece_scores", "wordpiece_split"]


def wordpiece_split(word: str, prefix: str = "##") -> list[str]:
    """A word as WordPiece's starting pieces: its first character, then ``##`` + each other.

    >>> wordpiece_split("hugs")
    ['h', '##u', '##g', '##s']
    """
    return [char if i == 0 else prefix + char for i, char in enumerate(word)]


def wordpiece_scores(
    words: Mapping[tuple[str, ...], int],
) -> dict[tuple[str, str], float]:
    """The likelihood score ``count(ab) / (count(a) * count(b))`` of every adjacent pair.

    ``words`` maps each word, split into its current pieces, to how often it occurs; piece
    and pair counts are weighted by it. The score is computed as one division of two
    integers, so pairs whose true scores are equal get equal floats (ties are exact).

    >>> scores = wordpiece_scores({("h", "##u", "##g"): 10, ("p", "##u", "##g"): 5})
    >>> scores[("##u", "##g")], scores[("h", "##u")]
    (0.06666666666666667, 0.06666666666666667)
    """
    piece_counts: dict[str, int] = {}
    pair_counts: dict[tuple[str, str], int] = {}
    for pieces, count in words.items():
        for piece in pieces:
            piece_counts[piece] = piece_counts.get(piece, 0) + count
        for pair in itertools.pairwise(pieces):
            pair_counts[pair] = pair_counts.get(pair, 0) + count
    return {(a, b): n / (piece_counts[a] * piece_counts[b])
            for (a, b), n in pair_counts.items()}


def _merge_in_word(pieces: tuple[str, ...], pair: tuple[str, str], merged: str,
                   ) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return tuple(out)


def learn_wordpiece_merges(
    word_counts: Mapping[str, int], n_merges: int, prefix: str = "##",
) -> list[tuple[str, str]]:
    """The first ``n_merges`` WordPiece merges learned from word counts, in order.

    Each step merges the pair with the highest :func:`wordpiece_scores` score; ties go to
    the greater pair ``(a, b)`` compared as strings (a convention, as for BPE here). Stops
    early when every word is a single piece.

    >>> learn_wordpiece_merges({"aab": 1, "ab": 3}, 2)  # a+b is the most frequent pair...
    [('a', '##a'), ('aa', '##b')]
    """
    if not isinstance(n_merges, int) or n_merges < 0:
        raise ValueError(f"n_merges must be a non-negative int, got {n_merges!r}")
    for word, count in word_counts.items():
        if not isinstance(word, str) or not word or not isinstance(count, int) or count < 1:
            raise ValueError(f"word_counts must map non-empty words to positive int counts; "
                             f"got {word!r}: {count!r}")
    words: dict[tuple[str, ...], int] = {}
    for word, count in word_counts.items():
        pieces = tuple(wordpiece_split(word, prefix))
        words[pieces] = words.get(pieces, 0) + count
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        scores = wordpiece_scores(words)
        if not scores:
            break
        best = max(scores, key=lambda pair: (scores[pair], pair))
        merged = best[0] + best[1].removeprefix(prefix)
        merges.append(best)
        new_words: dict[tuple[str, ...], int] = {}
        for pieces, count in words.items():
            key = _merge_in_word(pieces, best, merged)
            new_words[key] = new_words.get(key, 0) + count
        words = new_words
    return merges


def train_wordpiece(
    word_counts: Mapping[str, int], vocab_size: int, prefix: str = "##",
    unk_token: str = "[UNK]",
) -> set[str]:
    """A WordPiece vocabulary of at most ``vocab_size`` entries, for :func:`wordpiece`.

    The vocabulary is ``unk_token``, every starting piece of every word (the alphabet), and
    one piece per merge, learned until the size is reached or nothing is left to merge.

    >>> vocab = train_wordpiece({"low": 5, "lower": 2, "newest": 6}, 16)
    >>> len(vocab), sorted(piece for piece in vocab if len(piece.lstrip("#")) > 1)
    (16, ['##er', '##st', '[UNK]', 'lo', 'low', 'ne', 'new', 'newe'])
    >>> train_wordpiece({"ab": 1}, 2)
    Traceback (most recent call last):
    ...
    ValueError: vocab_size 2 is smaller than unk_token plus the 2-piece alphabet (3)
    """
    alphabet = {piece for word in word_counts for piece in wordpiece_split(word, prefix)}
    if vocab_size < len(alphabet) + 1:
        raise ValueError(f"vocab_size {vocab_size} is smaller than unk_token plus the "
                         f"{len(alphabet)}-piece alphabet ({len(alphabet) + 1})")
    vocab = {unk_token, *alphabet}
    for a, b in learn_wordpiece_merges(word_counts, vocab_size - len(vocab), prefix):
        vocab.add(a + b.removeprefix(prefix))
    return vocab
