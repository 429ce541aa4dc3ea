"""Byte-level BPE from scratch: training, encoding, decoding and GPT-2's files.

The chapter builds a tokenizer in small steps, each one a function below:

1. ``split_on_special_tokens`` and ``pretokenize``: cut text into special tokens and
   pre-tokens (GPT-2's regex), so that no merge ever crosses a word or a special token.
2. ``get_pair_counts`` and ``merge_pair``: count adjacent pairs, replace one pair.
3. ``learn_merges_naive``: the textbook loop (recount every pair after every merge).
   ``learn_merges``: the same result, updating the pair counts incrementally.
4. ``train_bpe``: the whole trainer on a text file (``train_bpe_naive`` for comparison).
5. ``Tokenizer``: encode and decode with a vocabulary and its merges, including GPT-2's
   own files (``Tokenizer.from_files``, ``Tokenizer.gpt2``).
6. ``to_hf_tokenizer``: the same tokenizer in Hugging Face ``tokenizers``, to cross-check.
7. ``read_tiktoken_ranks``, ``merges_from_ranks``, ``Tokenizer.from_ranks``: OpenAI's
   cl100k_base / o200k_base encodings (a rank per token, no merge list) in the same
   ``Tokenizer``, with their own pre-tokenisation patterns.

Token ids: the trainer gives ids 0..255 to the single bytes (id ``b`` is ``bytes([b])``),
then one id per special token, then one id per merge, in the order they were learned.
"""

from __future__ import annotations

import heapq
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import regex

if TYPE_CHECKING:
    import tokenizers

__all__ = [
    "CL100K_PATTERN",
    "GPT2_PATTERN",
    "O200K_PATTERN",
    "Tokenizer",
    "apply_merges",
    "bert_pretokenize",
    "build_merge_table",
    "bytes_to_unicode",
    "count_pretokens",
    "count_pretokens_in_file",
    "find_chunk_boundaries",
    "get_pair_counts",
    "initial_vocab",
    "learn_merges",
    "learn_merges_naive",
    "merge_pair",
    "merges_from_ranks",
    "pretokenize",
    "read_tiktoken_ranks",
    "split_on_special_tokens",
    "to_hf_tokenizer",
    "train_bpe",
    "train_bpe_naive",
    "wordpiece",
]

#: GPT-2's pre-tokenisation pattern: contractions, letter runs, digit runs, punctuation
#: runs (each may take one leading space), and whitespace runs.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_PRETOKEN_RE = regex.compile(GPT2_PATTERN)

#: cl100k_base's pattern (GPT-4, GPT-3.5): case-insensitive contractions, a letter run may
#: take one leading non-letter (not a newline), digits in groups of at most three,
#: punctuation keeps trailing newlines, and whitespace up to a newline stays together.
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

#: o200k_base's pattern (GPT-4o): like cl100k, but words split at case changes
#: ("camelCase" -> "camel", "Case"), keep their contraction suffix, and marks (\p{M})
#: count as letters, which suits scripts such as Devanagari.
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

#: Files at least this big are pre-tokenised by several processes (when allowed).
PARALLEL_MIN_BYTES = 4 * 1024 * 1024

Pair = tuple[int, int]
T = TypeVar("T")


# --------------------------------------------------------------------------------------
# 1. Special tokens and pre-tokens
# --------------------------------------------------------------------------------------


def _check_special_tokens(special_tokens: Iterable[str] | None) -> list[str]:
    """Special tokens as a list without duplicates (first occurrence kept), checked."""
    tokens = list(dict.fromkeys(special_tokens or ()))
    for token in tokens:
        if not isinstance(token, str) or not token:
            raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
    return tokens


def _special_regex(special_tokens: Sequence[str]) -> regex.Pattern[str] | None:
    """A regex matching any special token, the longest one first where several match."""
    if not special_tokens:
        return None
    longest_first = sorted(special_tokens, key=len, reverse=True)
    return regex.compile("|".join(regex.escape(token) for token in longest_first))


def split_on_special_tokens(
    text: str, special_tokens: Sequence[str] | None, keep: bool = False
) -> list[str]:
    """Cut ``text`` at every special token; keep the special tokens as pieces if asked.

    Where special tokens overlap, the longest one wins. Empty pieces are dropped.

    >>> split_on_special_tokens("a<|eot|>b<|eot|><|eot|>c", ["<|eot|>"])
    ['a', 'b', 'c']
    >>> split_on_special_tokens("a<|eot|><|eot|>b", ["<|eot|>", "<|eot|><|eot|>"], keep=True)
    ['a', '<|eot|><|eot|>', 'b']
    """
    pattern = _special_regex(_check_special_tokens(special_tokens))
    if pattern is None:
        return [text] if text else []
    if keep:
        pattern = regex.compile(f"({pattern.pattern})")
    return [piece for piece in pattern.split(text) if piece]


def pretokenize(
    text: str, special_tokens: Sequence[str] | None = None, pattern: str | None = None
) -> list[str]:
    """GPT-2's pre-tokens of ``text``; special tokens are cut out first (and dropped).

    Every character of the text (special tokens aside) lands in exactly one pre-token.
    ``pattern`` replaces GPT-2's regex, e.g. with ``CL100K_PATTERN``.

    >>> pretokenize("Hello, world!<|endoftext|>It's  42", ["<|endoftext|>"])
    ['Hello', ',', ' world', '!', 'It', "'s", ' ', ' 42']
    >>> pretokenize("I'LL pay 12345", pattern=CL100K_PATTERN)
    ['I', "'LL", ' pay', ' ', '123', '45']
    """
    splitter = _PRETOKEN_RE if pattern is None else _compile_pattern(pattern)
    return [
        pretoken
        for piece in split_on_special_tokens(text, special_tokens)
        for pretoken in splitter.findall(piece)
    ]


def _compile_pattern(pattern: str) -> regex.Pattern[str]:
    """A pre-tokenisation regex, or an error saying why ``pattern`` cannot be one."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty regex string, got {pattern!r}")
    try:
        compiled = regex.compile(pattern)
    except regex.error as error:
        raise ValueError(f"pattern {pattern!r} is not a valid regex: {error}") from None
    if compiled.match(""):
        raise ValueError(f"pattern {pattern!r} matches the empty string; every pre-token "
                         "must hold at least one character")
    return compiled


def count_pretokens(text: str, special_tokens: Sequence[str] | None = None) -> Counter[bytes]:
    """How often each pre-token occurs, as UTF-8 bytes: the trainer's input.

    >>> count_pretokens("the cat, the hat")
    Counter({b'the': 1, b' cat': 1, b',': 1, b' the': 1, b' hat': 1})
    """
    counts = Counter(pretokenize(text, special_tokens))
    return Counter({pretoken.encode("utf-8"): n for pretoken, n in counts.items()})


# --------------------------------------------------------------------------------------
# Pre-tokenising a large file with several processes
# --------------------------------------------------------------------------------------


def find_chunk_boundaries(
    path: str | os.PathLike, num_chunks: int, split_token: bytes
) -> list[int]:
    """Byte offsets that cut a file into about ``num_chunks`` pieces, each cut placed at
    the start of an occurrence of ``split_token`` (so no cut falls inside a document).

    Starts at ``[0, size/n, 2 size/n, ..., size]`` and moves every inner guess forward to
    the next occurrence; duplicates are removed, so fewer chunks may come back.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "tiny.txt"
    ...     _ = path.write_bytes(b"aaaa|bbbb|cccc|dd")
    ...     find_chunk_boundaries(path, 3, b"|")
    [0, 9, 14, 17]
    """
    if not split_token:
        raise ValueError("split_token must not be empty")
    size = os.path.getsize(path)
    guesses = [size * i // max(num_chunks, 1) for i in range(max(num_chunks, 1))] + [size]
    block = 1 << 16
    with open(path, "rb") as f:
        for i in range(1, len(guesses) - 1):
            pos = guesses[i]
            guesses[i] = size
            while pos < size:
                f.seek(pos)
                data = f.read(block + len(split_token) - 1)
                found = data.find(split_token)
                if found != -1:
                    guesses[i] = pos + found
                    break
                pos += block
    return sorted(set(guesses))


def _safe_split_token(special_tokens: Sequence[str]) -> str | None:
    """A special token at whose occurrences a file can be cut without changing how the
    whole text splits into special tokens, or None.

    A token ``s`` is unsafe when some special token ends with a proper prefix of ``s``
    (an earlier match could straddle the cut; this includes ``s`` overlapping itself) or
    contains ``s`` without being ``s`` repeated.
    """
    for s in special_tokens:
        safe = True
        for u in special_tokens:
            if u != s and s in u and u != s * (len(u) // len(s)):
                safe = False
            if any(u.endswith(s[:k]) for k in range(1, len(s))):
                safe = False
        if safe:
            return s
    return None


def _count_chunk(args: tuple[str, int, int, list[str]]) -> Counter[str]:
    """Worker: pre-token counts of bytes ``start:end`` of a file."""
    path, start, end, special_tokens = args
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode("utf-8")
    return Counter(pretokenize(text, special_tokens))


def count_pretokens_in_file(
    path: str | os.PathLike,
    special_tokens: Sequence[str] | None = None,
    num_processes: int | None = None,
) -> Counter[bytes]:
    """``count_pretokens`` of a UTF-8 file, in several processes for large files.

    The file is cut only at occurrences of a special token (``find_chunk_boundaries``),
    so every process sees whole documents and the counts equal the one-process counts.
    ``num_processes=None`` uses one process below ``PARALLEL_MIN_BYTES`` and up to 8
    (one per CPU) above. Without a suitable special token the file is read in one piece.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training file not found: {path}")
    special_tokens = _check_special_tokens(special_tokens)
    size = path.stat().st_size
    if num_processes is None:
        num_processes = 1 if size < PARALLEL_MIN_BYTES else min(os.cpu_count() or 1, 8)
    split_token = _safe_split_token(special_tokens)
    if num_processes <= 1 or split_token is None:
        return count_pretokens(path.read_bytes().decode("utf-8"), special_tokens)
    cuts = find_chunk_boundaries(path, num_processes * 4, split_token.encode("utf-8"))
    jobs = [(str(path), a, b, special_tokens) for a, b in pairwise(cuts)]
    total: Counter[str] = Counter()
    with ProcessPoolExecutor(num_processes) as pool:
        for counts in pool.map(_count_chunk, jobs):
            total.update(counts)
    return Counter({pretoken.encode("utf-8"): n for pretoken, n in total.items()})


# --------------------------------------------------------------------------------------
# 2. Pairs
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
    for token in _check_special_tokens(special_tokens):
        vocab[len(vocab)] = token.encode("utf-8")
    return vocab


def _best_pair(counts: Mapping[Pair, int], vocab: Mapping[int, bytes]) -> Pair:
    """The most frequent pair; ties go to the lexicographically greater byte pair.

    >>> _best_pair({(97, 98): 2, (120, 121): 2, (98, 99): 1}, initial_vocab())
    (120, 121)
    """
    return max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))


# --------------------------------------------------------------------------------------
# 3. Learning merges: naive and incremental
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
# 4. Training on a file
# --------------------------------------------------------------------------------------


def _check_training_args(
    input_path: str | os.PathLike, vocab_size: int, special_tokens: Sequence[str] | None
) -> list[str]:
    special_tokens = _check_special_tokens(special_tokens)
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


# --------------------------------------------------------------------------------------
# 5. Encoding and decoding
# --------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte to a printable character, used in its files.

    Printable Latin-1 bytes stand for themselves; the others (control characters, space,
    ...) get the characters from U+0100 on, in byte order.

    >>> table = bytes_to_unicode()
    >>> table[ord("a")], table[ord(" ")], table[ord("\\n")], len(set(table.values()))
    ('a', 'Ġ', 'Ċ', 256)
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return dict(sorted(table.items()))


def build_merge_table(
    vocab: Mapping[int, bytes], merges: Sequence[tuple[bytes, bytes]]
) -> dict[Pair, tuple[int, int]]:
    """Turn byte merges into ``{(left_id, right_id): (rank, merged_id)}``.

    Where two ids hold the same bytes, the smaller id is used.

    >>> vocab = {**initial_vocab(), 256: b"ab", 257: b"abc"}
    >>> build_merge_table(vocab, [(b"a", b"b"), (b"ab", b"c")])
    {(97, 98): (0, 256), (256, 99): (1, 257)}
    """
    ids: dict[bytes, int] = {}
    for token_id, piece in sorted(vocab.items()):
        ids.setdefault(piece, token_id)
    table: dict[Pair, tuple[int, int]] = {}
    for rank, (left, right) in enumerate(merges):
        missing = [piece for piece in (left, right, left + right) if piece not in ids]
        if missing:
            raise ValueError(f"merge {rank} {(left, right)!r}: {missing[0]!r} is not in the vocab")
        table.setdefault((ids[left], ids[right]), (rank, ids[left + right]))
    return table


def apply_merges(ids: Sequence[int], merge_table: Mapping[Pair, tuple[int, int]]) -> list[int]:
    """Encode one pre-token: repeatedly merge the pair with the lowest rank.

    >>> table = {(97, 98): (0, 256), (256, 99): (1, 257)}
    >>> apply_merges(list(b"abcab"), table)
    [257, 256]
    """
    ids = list(ids)
    while len(ids) > 1:
        best, best_rank = None, None
        for pair in pairwise(ids):
            entry = merge_table.get(pair)
            if entry is not None and (best_rank is None or entry[0] < best_rank):
                best, best_rank = pair, entry[0]
        if best is None:
            break
        ids = merge_pair(ids, best, merge_table[best][1])
    return ids


class Tokenizer:
    """A byte-level BPE tokenizer: GPT-2's pre-tokens, merges applied by rank.

    ``vocab`` maps ids to bytes and must hold all 256 single bytes; ``merges`` lists
    byte pairs, earliest first. Special tokens are never split; a special token missing
    from ``vocab`` gets the next free id. ``pattern`` replaces GPT-2's pre-tokenisation
    regex (``CL100K_PATTERN``, ``O200K_PATTERN``, or your own).

    >>> vocab = {**initial_vocab(), 256: b" t", 257: b"he", 258: b" the"}
    >>> tok = Tokenizer(vocab, [(b" ", b"t"), (b"h", b"e"), (b" t", b"he")], ["<|eot|>"])
    >>> tok.encode("the the<|eot|>")
    [116, 257, 258, 259]
    >>> tok.decode([116, 257, 258, 259])
    'the the<|eot|>'
    """

    #: How many pre-tokens the encoder remembers (it forgets them all when full).
    cache_size = 100_000

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] | None = None,
        pattern: str | None = None,
    ):
        self.pattern = GPT2_PATTERN if pattern is None else pattern
        self._pretoken_re = _PRETOKEN_RE if pattern is None else _compile_pattern(pattern)
        self.vocab: dict[int, bytes] = dict(vocab)
        self.merges = list(merges)
        self.special_tokens = _check_special_tokens(special_tokens)
        ids: dict[bytes, int] = {}
        for token_id, piece in sorted(self.vocab.items()):
            ids.setdefault(piece, token_id)
        missing = [b for b in range(256) if bytes([b]) not in ids]
        if missing:
            raise ValueError(f"vocab must hold all 256 single bytes; missing {missing[:8]}")
        self.byte_ids = [ids[bytes([b])] for b in range(256)]
        self.special_ids: dict[str, int] = {}
        for token in self.special_tokens:
            piece = token.encode("utf-8")
            if piece not in ids:
                ids[piece] = max(self.vocab) + 1
                self.vocab[ids[piece]] = piece
            self.special_ids[token] = ids[piece]
        self.merge_table = build_merge_table(self.vocab, self.merges)
        self._special_re = _special_regex(self.special_tokens)
        self._longest_special = max(map(len, self.special_tokens), default=0)
        self._cache: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        custom = "" if self.pattern == GPT2_PATTERN else ", custom pattern"
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={self.special_tokens}{custom})"
        )

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self.vocab)

    # ---- encoding --------------------------------------------------------------------

    def _encode_pretoken(self, pretoken: str) -> list[int]:
        """Ids of one pre-token, from the cache when seen before."""
        ids = self._cache.get(pretoken)
        if ids is None:
            byte_ids = self.byte_ids
            ids = apply_merges([byte_ids[b] for b in pretoken.encode("utf-8")], self.merge_table)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[pretoken] = ids
        return ids

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        """Append the ids of ``text`` (no special tokens in it) to ``out``."""
        cache = self._cache
        for pretoken in self._pretoken_re.findall(text):
            ids = cache.get(pretoken)
            out.extend(ids if ids is not None else self._encode_pretoken(pretoken))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens map to their own ids.

        >>> tok = Tokenizer(initial_vocab(), [])
        >>> tok.encode("hi!")
        [104, 105, 33]
        """
        out: list[int] = []
        start = 0
        if self._special_re is not None:
            for match in self._special_re.finditer(text):
                self._encode_ordinary(text[start : match.start()], out)
                out.append(self.special_ids[match.group()])
                start = match.end()
        self._encode_ordinary(text[start:], out)
        return out

    def _encode_prefix(self, text: str) -> tuple[list[int], str]:
        """Encode the part of ``text`` that more text cannot change; return the rest.

        A special token starting within ``longest - 1`` characters of the end could still
        grow into a longer one, so it is left for later. In the last ordinary piece, the
        last two pre-tokens are left too: GPT-2's pattern looks at most three characters
        past a pre-token's start and one past its end, so every earlier pre-token is final.
        (The same holds for ``CL100K_PATTERN`` and ``O200K_PATTERN``: a whitespace run
        splits into at most two pre-tokens, and the tests stream both against ``encode``.)
        """
        out: list[int] = []
        start = 0
        undecided = len(text) - self._longest_special + 1 if self._longest_special else len(text)
        if self._special_re is not None:
            for match in self._special_re.finditer(text):
                if match.start() >= undecided:
                    break
                self._encode_ordinary(text[start : match.start()], out)
                out.append(self.special_ids[match.group()])
                start = match.end()
        end = max(start, undecided)
        pretokens = self._pretoken_re.findall(text, start, end)  # they cover text[start:end]
        if len(pretokens) < 3:
            return out, text[start:]
        cache = self._cache
        for pretoken in pretokens[:-2]:
            ids = cache.get(pretoken)
            out.extend(ids if ids is not None else self._encode_pretoken(pretoken))
        return out, text[end - len(pretokens[-1]) - len(pretokens[-2]) :]

    def encode_iterable(self, iterable: Iterable[str], chunk_chars: int = 1 << 16) -> Iterator[int]:
        """Stream the ids of a large text given in pieces (e.g. an open file's lines).

        Yields exactly ``encode("".join(iterable))`` while holding only about
        ``chunk_chars`` characters (more if a single pre-token is longer).

        >>> tok = Tokenizer(initial_vocab(), [], ["<|eot|>"])
        >>> list(tok.encode_iterable(["a <|e", "ot|> b"])) == tok.encode("a <|eot|> b")
        True
        """
        pieces: list[str] = []
        size, threshold = 0, chunk_chars
        for piece in iterable:
            pieces.append(piece)
            size += len(piece)
            if size >= threshold:
                ids, rest = self._encode_prefix("".join(pieces))
                yield from ids
                pieces, size = [rest], len(rest)
                threshold = max(chunk_chars, 2 * size)  # a huge pre-token: grow, stay linear
        yield from self.encode("".join(pieces))

    # ---- decoding --------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes behind ``ids``.

        >>> Tokenizer(initial_vocab(), []).decode_bytes([104, 105])
        b'hi'
        """
        if hasattr(ids, "tolist"):  # numpy arrays, torch tensors
            ids = ids.tolist()
        ids = list(ids)
        try:
            return b"".join([self.vocab[i] for i in ids])
        except (KeyError, TypeError):
            bad = [i for i in ids if not isinstance(i, int) or i not in self.vocab]
            raise ValueError(
                f"cannot decode: ids {bad[:10]} are not in the vocabulary "
                f"({self.vocab_size} ids, {min(self.vocab)}..{max(self.vocab)})"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD.

        >>> tok = Tokenizer(initial_vocab(), [])
        >>> tok.decode(tok.encode("héllo")), tok.decode([104, 0xC3])
        ('héllo', 'h\\ufffd')
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---- GPT-2 files -----------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        vocab_path: str | os.PathLike,
        merges_path: str | os.PathLike,
        special_tokens: Sequence[str] | None = None,
    ) -> Tokenizer:
        """Load GPT-2's format: ``encoder.json`` (token -> id) and ``vocab.bpe`` (merges).

        Both files write bytes with ``bytes_to_unicode``'s printable characters.
        """
        vocab_path, merges_path = Path(vocab_path), Path(merges_path)
        for path in (vocab_path, merges_path):
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer file not found: {path}")
        to_byte = {char: byte for byte, char in bytes_to_unicode().items()}

        def to_bytes(token: str) -> bytes:
            try:
                return bytes(to_byte[char] for char in token)
            except KeyError:  # written raw, e.g. an added special token with a space
                return token.encode("utf-8")

        encoder = json.loads(vocab_path.read_text(encoding="utf-8"))
        vocab = {int(token_id): to_bytes(token) for token, token_id in encoder.items()}
        merges = []
        lines = merges_path.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip() or (number == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{merges_path}:{number}: expected two tokens, got {line!r}")
            merges.append((to_bytes(parts[0]), to_bytes(parts[1])))
        return cls(vocab, merges, special_tokens)

    @classmethod
    def gpt2(cls, directory: str | os.PathLike | None = None) -> Tokenizer:
        """GPT-2's tokenizer (50,257 ids, ``<|endoftext|>`` special), from the course asset
        ``gpt2-bpe`` or from ``directory`` holding ``encoder.json`` and ``vocab.bpe``."""
        if directory is None:
            from llmlab import assets

            directory = assets.path("gpt2-bpe")
        directory = Path(directory)
        return cls.from_files(
            directory / "encoder.json", directory / "vocab.bpe", ["<|endoftext|>"]
        )

    # ---- tiktoken's format -------------------------------------------------------------

    @classmethod
    def from_ranks(
        cls,
        ranks: Mapping[bytes, int],
        pattern: str,
        special_tokens: Mapping[str, int] | None = None,
        merges: Sequence[tuple[bytes, bytes]] | None = None,
    ) -> Tokenizer:
        """A tokenizer from tiktoken-style ranks (token bytes -> id = merge priority).

        ``special_tokens`` maps each special token to its id. ``merges`` (the result of
        ``merges_from_ranks(ranks)``) may be passed when already computed: recovering them
        takes seconds for 100k tokens.

        >>> ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"abc": 257}
        >>> tok = Tokenizer.from_ranks(ranks, GPT2_PATTERN, {"<|end|>": 300})
        >>> tok.encode("abc ab<|end|>")
        [257, 32, 256, 300]
        """
        vocab = {rank: piece for piece, rank in ranks.items()}
        if len(vocab) != len(ranks):
            raise ValueError("ranks must give every token its own id; some ids repeat")
        special_tokens = dict(special_tokens or {})
        for token, token_id in special_tokens.items():
            if token_id in vocab:
                raise ValueError(f"special token {token!r} has id {token_id}, which the ranks "
                                 f"already give to {vocab[token_id]!r}")
            vocab[token_id] = token.encode("utf-8")
        if merges is None:
            merges = merges_from_ranks(ranks)
        return cls(vocab, merges, list(special_tokens), pattern=pattern)


# --------------------------------------------------------------------------------------
# 6. The same tokenizer in Hugging Face `tokenizers`
# --------------------------------------------------------------------------------------


def to_hf_tokenizer(
    vocab: Mapping[int, bytes],
    merges: Sequence[tuple[bytes, bytes]],
    special_tokens: Sequence[str] | None = None,
) -> tokenizers.Tokenizer:
    """A ``tokenizers.Tokenizer`` (ByteLevel BPE) with our vocab and merges, for
    cross-checking: its ids equal ``Tokenizer(vocab, merges, special_tokens).encode``."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    special_tokens = _check_special_tokens(special_tokens)
    table = bytes_to_unicode()

    def as_str(piece: bytes) -> str:
        return "".join(table[byte] for byte in piece)

    special_bytes = {token.encode("utf-8"): token for token in special_tokens}
    hf_vocab: dict[str, int] = {}
    for token_id, piece in sorted(vocab.items()):
        key = special_bytes[piece] if piece in special_bytes else as_str(piece)
        hf_vocab.setdefault(key, token_id)
    next_id = max(vocab) + 1
    for token in special_tokens:  # like Tokenizer: missing special tokens get new ids
        if token not in hf_vocab:
            hf_vocab[token] = next_id
            next_id += 1
    model = models.BPE(vocab=hf_vocab, merges=[(as_str(a), as_str(b)) for a, b in merges])
    hf = HFTokenizer(model)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    return hf


# --------------------------------------------------------------------------------------
# 7. tiktoken's encodings: ranks instead of merges
# --------------------------------------------------------------------------------------


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read a ``.tiktoken`` file: one ``<base64 of the token's bytes> <rank>`` per line.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "tiny.tiktoken"
    ...     _ = path.write_text("IQ== 0\\nYWI= 1\\n")
    ...     read_tiktoken_ranks(path)
    {b'!': 0, b'ab': 1}
    """
    import base64
    import binascii

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiktoken rank file not found: {path}")
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            message = f"{path}:{number}: expected '<base64> <rank>', got {line[:60]!r}"
            raise ValueError(message) from None
    return ranks


def _split_by_ranks(piece: bytes, ranks: Mapping[bytes, int], below: int) -> list[bytes]:
    """tiktoken's BPE on ``piece`` using only tokens ranked below ``below``: merge the
    adjacent pair whose concatenation has the lowest rank until none is left."""
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
# 8. WordPiece (BERT): a different pre-tokeniser and greedy longest-match segmentation
# --------------------------------------------------------------------------------------

#: CJK ideograph blocks: BERT cuts around each of these characters (no spaces in Chinese).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _bert_char(char: str, lowercase: bool) -> str:
    """One character after BERT's normaliser: controls dropped, any space becomes " ",
    CJK ideographs padded with spaces, accents stripped and case folded (if lowercase)."""
    import unicodedata

    code = ord(char)
    if char in "\t\n\r" or (char.isspace() and unicodedata.category(char)[0] != "C"):
        return " "
    if code in (0, 0xFFFD) or unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs"):
        return ""  # unassigned code points (Cn) stay, and become [UNK]
    if lowercase:
        # per character, like the Rust normaliser (str.lower would pick a final sigma)
        decomposed = unicodedata.normalize("NFD", char)
        char = "".join(c.lower() for c in decomposed if unicodedata.category(c) != "Mn")
    if any(low <= code <= high for low, high in _CJK_RANGES):
        return f" {char} "
    return char


def _is_bert_punctuation(char: str) -> bool:
    import unicodedata

    return (char.isascii() and not char.isalnum() and not char.isspace()) or \
        unicodedata.category(char).startswith("P")


def bert_pretokenize(text: str, lowercase: bool = True) -> list[str]:
    """BERT's words: normalise, split on whitespace, and cut every punctuation mark off.

    Matches Hugging Face's ``BertNormalizer`` + ``BertPreTokenizer`` (tested with MiniLM's
    vocabulary), except for characters that Python's Unicode tables and the Rust ones
    classify differently (a few recent additions such as U+061D) and NUL characters.

    >>> bert_pretokenize("Héllo, World! 你好 don't")
    ['hello', ',', 'world', '!', '你', '好', 'don', "'", 't']
    """
    normalised = "".join(_bert_char(char, lowercase) for char in text)
    words = []
    for chunk in normalised.split(" "):
        start = 0
        for i, char in enumerate(chunk):
            if _is_bert_punctuation(char):
                words += [chunk[start:i], char] if i > start else [char]
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


def wordpiece(
    word: str,
    vocab: Mapping[str, int] | set[str],
    unk_token: str = "[UNK]",
    prefix: str = "##",
    max_chars: int = 100,
) -> list[str]:
    """Split one word into the longest vocabulary pieces, left to right (BERT's WordPiece).

    Pieces after the first carry ``prefix``. If some part of the word matches nothing,
    the whole word becomes ``unk_token``: WordPiece has no byte fallback.

    >>> vocab = {"token", "##ization", "##s", "un", "##believ", "##able"}
    >>> wordpiece("tokenization", vocab), wordpiece("unbelievable", vocab)
    (['token', '##ization'], ['un', '##believ', '##able'])
    >>> wordpiece("tokenizer", vocab)
    ['[UNK]']
    """
    if len(word) > max_chars:
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [unk_token]
        pieces.append(piece)
        start = end
    return pieces
