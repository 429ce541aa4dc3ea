"""Learning byte-level BPE merges: count adjacent pairs, merge the most frequent, repeat.

The trainer gives ids 0..255 to the single bytes (id ``b`` is ``bytes([b])``), then one id
per special token, then one id per merge, in the order the merges were learned.

>>> vocab = initial_vocab()
>>> learn_merges({b"low": 5, b"lower": 2, b"newest": 6}, vocab, 2)
[(b'w', b'e'), (b'l', b'o')]
>>> vocab[256], vocab[257]
(b'we', b'lo')

``learn_merges_naive`` is the textbook loop (recount every pair after every merge);
``learn_merges`` gives the same merges, updating the pair counts incrementally.
``train_bpe`` runs the whole trainer on a text file (``train_bpe_naive`` for comparison).
``merges_from_ranks`` recovers the merges from a vocabulary ranked in merge order (how
OpenAI's tiktoken files store their BPE).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from llmlab.tokenization.pretokens import check_special_tokens, count_pretokens_in_file

__all__ = [
    "get_pair_counts",
    "initial_vocab",
    "learn_merges",
    "learn_merges_naive",
    "merge_pair",
    "merges_from_ranks",
    "train_bpe",
    "train_bpe_naive",
]

Pair = tuple[int, int]
T = TypeVar("T")


# --------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------


def get_pair_counts(
    ids: Sequence[T], counts: dict[tuple[T, T], int] | None = None, weight: int = 1
) -> dict[tuple[T, T], int]:
    """Count adjacent pairs in ``ids``, adding ``weight`` per occurrence to ``counts``.

    >>> get_pair_counts([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    >>> get_pair_counts([1, 2], {(1, 2): 5}, weight=10)
    {(1, 2): 15}
    """
    counts = {} if counts is None else counts
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge_pair(ids: Sequence[T], pair: tuple[T, T], new_token: T) -> list[T]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_token``, left to right.

    Works on token ids or on the byte pieces of a word.

    >>> merge_pair([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]
    >>> merge_pair([b"a", b"a", b"a"], (b"a", b"a"), b"aa")
    [b'aa', b'a']
    """
    first, second = pair
    out: list[T] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == first and ids[i + 1] == second:
            out.append(new_token)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def initial_vocab(special_tokens: Sequence[str] | None = None) -> dict[int, bytes]:
    """The vocabulary before any merge: the 256 single bytes, then the special tokens.

    >>> vocab = initial_vocab(["<|endoftext|>"])
    >>> len(vocab), vocab[104], vocab[256]
    (257, b'h', b'<|endoftext|>')
    """
    vocab = {b: bytes([b]) for b in range(256)}
    for token in check_special_tokens(special_tokens):
        vocab[len(vocab)] = token.encode("utf-8")
    return vocab


def _best_pair(counts: Mapping[Pair, int], vocab: Mapping[int, bytes]) -> Pair:
    """The most frequent pair; ties go to the lexicographically greater byte pair.

    >>> _best_pair({(97, 98): 2, (120, 121): 2, (98, 99): 1}, initial_vocab())
    (120, 121)
    """
    return max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))


# --------------------------------------------------------------------------------------
# Learning merges: naive and incremental
# --------------------------------------------------------------------------------------


def learn_merges_naive(
    word_counts: Mapping[bytes, int], vocab: dict[int, bytes], num_merges: int
) -> list[tuple[bytes, bytes]]:
    """The textbook BPE loop: count all pairs, merge the best, repeat.

    ``vocab`` is extended in place with one entry per merge. Stops early when no pair is
    left.

    >>> vocab = initial_vocab()
    >>> learn_merges_naive({b"low": 5, b"lower": 2, b"newest": 6}, vocab, 3)
    [(b'w', b'e'), (b'l', b'o'), (b'we', b's')]
    >>> vocab[256], vocab[258]
    (b'we', b'wes')
    """
    words = [list(word) for word in word_counts]
    freqs = list(word_counts.values())
    next_id = max(vocab) + 1
    merges = []
    for _ in range(num_merges):
        counts: dict[Pair, int] = {}
        for word, freq in zip(words, freqs, strict=True):
            get_pair_counts(word, counts, freq)
        if not counts:
            break
        pair = _best_pair(counts, vocab)
        vocab[next_id] = vocab[pair[0]] + vocab[pair[1]]
        merges.append((vocab[pair[0]], vocab[pair[1]]))
        words = [merge_pair(word, pair, next_id) for word in words]
        next_id += 1
    return merges


def _descending(token: bytes) -> tuple[int, ...]:
    """A key that sorts byte strings in reverse order (a min-heap then pops the greatest).

    >>> sorted([b"a", b"ab", b"b"], key=_descending)
    [b'b', b'ab', b'a']
    """
    return (*(255 - byte for byte in token), 256)


class _PairStats:
    """Pair counts, the words holding each pair, and a heap to find the best pair.

    The heap is lazy: every count change pushes a new entry, and entries whose count is
    no longer current are thrown away when they reach the top.
    """

    def __init__(self, words: list[list[int]], freqs: list[int], vocab: dict[int, bytes]):
        self.words, self.freqs, self.vocab = words, freqs, vocab
        self.counts: dict[Pair, int] = {}
        self.where: dict[Pair, set[int]] = {}
        for i, (word, freq) in enumerate(zip(words, freqs, strict=True)):
            for pair in pairwise(word):
                self.counts[pair] = self.counts.get(pair, 0) + freq
                self.where.setdefault(pair, set()).add(i)
        self.keys = {token: _descending(piece) for token, piece in vocab.items()}
        self.heap = [self._entry(pair, n) for pair, n in self.counts.items()]
        heapq.heapify(self.heap)

    def _entry(self, pair: Pair, count: int) -> tuple[Any, ...]:
        return (-count, self.keys[pair[0]], self.keys[pair[1]], pair)

    def pop_best(self) -> Pair | None:
        """The most frequent pair (greatest bytes on ties), or None when none is left."""
        while self.heap:
            neg_count, _, _, pair = self.heap[0]
            if self.counts.get(pair) == -neg_count:
                return pair
            heapq.heappop(self.heap)
        return None

    def merge(self, pair: Pair, new_id: int) -> None:
        """Merge ``pair`` into ``new_id`` in every word holding it; update the counts."""
        self.keys[new_id] = _descending(self.vocab[new_id])
        delta: dict[Pair, int] = {}
        for i in self.where.pop(pair, ()):
            old, freq = self.words[i], self.freqs[i]
            new = merge_pair(old, pair, new_id)
            self.words[i] = new
            old_pairs, new_pairs = list(pairwise(old)), list(pairwise(new))
            for p in old_pairs:
                delta[p] = delta.get(p, 0) - freq
            for p in new_pairs:
                delta[p] = delta.get(p, 0) + freq
            new_set = set(new_pairs)
            for p in set(old_pairs) - new_set:
                if p != pair:
                    self.where[p].discard(i)
            for p in new_set:
                self.where.setdefault(p, set()).add(i)
        for p, change in delta.items():
            if change == 0:
                continue
            count = self.counts.get(p, 0) + change
            if count > 0:
                self.counts[p] = count
                heapq.heappush(self.heap, self._entry(p, count))
            else:
                self.counts.pop(p, None)
                self.where.pop(p, None)


def learn_merges(
    word_counts: Mapping[bytes, int],
    vocab: dict[int, bytes],
    num_merges: int,
    progress: bool = False,
) -> list[tuple[bytes, bytes]]:
    """Same merges as ``learn_merges_naive``, with incremental pair counts.

    After merging a pair, only the words that held it are touched: their old pairs are
    subtracted and their new pairs added, and a heap gives the next best pair.

    >>> vocab = initial_vocab()
    >>> learn_merges({b"low": 5, b"lower": 2, b"newest": 6}, vocab, 3)
    [(b'w', b'e'), (b'l', b'o'), (b'we', b's')]
    """
    stats = _PairStats([list(w) for w in word_counts], list(word_counts.values()), vocab)
    next_id = max(vocab) + 1
    merges = []
    steps: Iterable[int] = range(num_merges)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="BPE merges")
    for _ in steps:
        pair = stats.pop_best()
        if pair is None:
            break
        vocab[next_id] = vocab[pair[0]] + vocab[pair[1]]
        merges.append((vocab[pair[0]], vocab[pair[1]]))
        stats.merge(pair, next_id)
        next_id += 1
    return merges


# --------------------------------------------------------------------------------------
# Merges hidden in ranks (tiktoken's files keep none)
# --------------------------------------------------------------------------------------


def _split_by_ranks(piece: bytes, ranks: Mapping[bytes, int], below: int) -> list[bytes]:
    """tiktoken's BPE on ``piece`` using only tokens ranked below ``below``: merge the
    adjacent pair whose concatenation has the lowest rank until none is left.

    >>> _split_by_ranks(b"abc", {b"ab": 256, b"bc": 257}, below=258)
    [b'ab', b'c']
    """
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best, best_rank = -1, below
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def merges_from_ranks(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list hidden in tiktoken-style ranks.

    tiktoken keeps no merges: it repeatedly joins the adjacent pair whose concatenation
    has the lowest rank. Running that on a token's own bytes, with only the tokens ranked
    before it, leaves exactly two pieces: the merge that created the token.

    >>> ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"bc": 257, b"abc": 258}
    >>> merges_from_ranks(ranks)  # "abc" comes from "ab" + "c": "ab" ranks before "bc"
    [(b'a', b'b'), (b'b', b'c'), (b'ab', b'c')]
    """
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"ranks must hold all 256 single bytes; missing {missing[:8]}")
    merges = []
    for piece, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(piece) < 2:
            continue
        parts = _split_by_ranks(piece, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"token {piece!r} (rank {rank}) cannot be built by merging two "
                             f"earlier tokens (it splits into {parts!r}): not BPE ranks")
        merges.append((parts[0], parts[1]))
    return merges


# --------------------------------------------------------------------------------------
# Training on a file
# --------------------------------------------------------------------------------------


def _check_training_args(
    input_path: str | os.PathLike, vocab_size: int, special_tokens: Sequence[str] | None
) -> list[str]:
    special_tokens = check_special_tokens(special_tokens)
    smallest = 256 + len(special_tokens)
    if not isinstance(vocab_size, int) or vocab_size < smallest:
        raise ValueError(
            f"vocab_size must be at least {smallest} (256 byte tokens + "
            f"{len(special_tokens)} special tokens), got {vocab_size!r}"
        )
    if not Path(input_path).is_file():
        raise FileNotFoundError(f"training file not found: {input_path}")
    return special_tokens


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: Sequence[str] | None = None,
    *,
    num_processes: int | None = None,
    progress: bool = False,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a byte-level BPE tokenizer on a UTF-8 text file.

    Returns ``(vocab, merges)``: ``vocab`` maps ids to bytes (256 single bytes, the special
    tokens, one entry per merge); ``merges`` lists the merged byte pairs in order. Fewer
    merges come back if the text runs out of pairs.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "tiny.txt"
    ...     _ = path.write_text("low low low lower<|endoftext|>newest newest")
    ...     vocab, merges = train_bpe(path, 260, ["<|endoftext|>"])
    >>> merges  # ("o", "w") and ("l", "o") both occur 4 times: the greater pair wins
    [(b'o', b'w'), (b'l', b'ow'), (b' ', b'low')]
    >>> vocab[256], vocab[259]
    (b'<|endoftext|>', b' low')
    """
    special_tokens = _check_training_args(input_path, vocab_size, special_tokens)
    word_counts = count_pretokens_in_file(input_path, special_tokens, num_processes)
    vocab = initial_vocab(special_tokens)
    merges = learn_merges(word_counts, vocab, vocab_size - len(vocab), progress)
    return vocab, merges


def train_bpe_naive(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: Sequence[str] | None = None,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """``train_bpe`` with the naive loop (every pair recounted after every merge).

    The reference the fast trainer is tested and benchmarked against.
    """
    special_tokens = _check_training_args(input_path, vocab_size, special_tokens)
    word_counts = count_pretokens_in_file(input_path, special_tokens, num_processes=1)
    vocab = initial_vocab(special_tokens)
    merges = learn_merges_naive(word_counts, vocab, vocab_size - len(vocab))
    return vocab, merges
