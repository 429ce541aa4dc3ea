"""Pre-tokenisation: cut text into special tokens and pre-tokens before any merge.

A regex splits text into words, numbers, punctuation runs and whitespace (GPT-2's,
cl100k's or o200k's pattern), so that no BPE merge ever crosses a word boundary or a
special token. The trainer's input is how often each pre-token occurs.

>>> split_on_special_tokens("one<|endoftext|>two", ["<|endoftext|>"], keep=True)
['one', '<|endoftext|>', 'two']
>>> pretokenize("It's 12345 camelCase")
['It', "'s", ' 12345', ' camelCase']
>>> pretokenize("It's 12345 camelCase", pattern=O200K_PATTERN)
["It's", ' ', '123', '45', ' camel', 'Case']
>>> count_pretokens("to be or not to be")
Counter({b' be': 2, b'to': 1, b' or': 1, b' not': 1, b' to': 1})

Large files are counted in several processes (``count_pretokens_in_file``), each given a
slice of the file cut at a special token (``find_chunk_boundaries``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from pathlib import Path

import regex

__all__ = [
    "CL100K_PATTERN",
    "GPT2_PATTERN",
    "O200K_PATTERN",
    "PARALLEL_MIN_BYTES",
    "count_pretokens",
    "count_pretokens_in_file",
    "find_chunk_boundaries",
    "pretokenize",
    "split_on_special_tokens",
]

#: GPT-2's pre-tokenisation pattern: contractions, letter runs, digit runs, punctuation
#: runs (each may take one leading space), and whitespace runs.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_REGEX = regex.compile(GPT2_PATTERN)

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


# --------------------------------------------------------------------------------------
# Special tokens
# --------------------------------------------------------------------------------------


def check_special_tokens(special_tokens: Iterable[str] | None) -> list[str]:
    """Special tokens as a list without duplicates (first occurrence kept), checked.

    >>> check_special_tokens(["<|eot|>", "<pad>", "<|eot|>"])
    ['<|eot|>', '<pad>']
    """
    tokens = list(dict.fromkeys(special_tokens or ()))
    for token in tokens:
        if not isinstance(token, str) or not token:
            raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
    return tokens


def special_regex(special_tokens: Sequence[str]) -> regex.Pattern[str] | None:
    """A regex matching any special token, the longest one first where several match.

    >>> special_regex(["<a>", "<a><a>"]).findall("<a><a><a>")
    ['<a><a>', '<a>']
    """
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
    pattern = special_regex(check_special_tokens(special_tokens))
    if pattern is None:
        return [text] if text else []
    if keep:
        pattern = regex.compile(f"({pattern.pattern})")
    return [piece for piece in pattern.split(text) if piece]


# --------------------------------------------------------------------------------------
# Pre-tokens
# --------------------------------------------------------------------------------------


def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """A pre-tokenisation regex, or an error saying why ``pattern`` cannot be one.

    >>> compile_pattern(r"\\w*")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: pattern '\\\\w*' matches the empty string; every pre-token must hold ...
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty regex string, got {pattern!r}")
    if pattern == GPT2_PATTERN:
        return GPT2_REGEX
    try:
        compiled = regex.compile(pattern)
    except regex.error as error:
        raise ValueError(f"pattern {pattern!r} is not a valid regex: {error}") from None
    if compiled.match(""):
        raise ValueError(f"pattern {pattern!r} matches the empty string; every pre-token "
                         "must hold at least one character")
    return compiled


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
    splitter = GPT2_REGEX if pattern is None else compile_pattern(pattern)
    return [
        pretoken
        for piece in split_on_special_tokens(text, special_tokens)
        for pretoken in splitter.findall(piece)
    ]


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

    >>> _safe_split_token(["<|endoftext|>"]), _safe_split_token(["aa"])
    ('<|endoftext|>', None)
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

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "tiny.txt"
    ...     _ = path.write_text("a b<|eot|>a b<|eot|>b", encoding="utf-8")
    ...     count_pretokens_in_file(path, ["<|eot|>"], num_processes=2)
    Counter({b'a': 2, b' b': 2, b'b': 1})
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training file not found: {path}")
    special_tokens = check_special_tokens(special_tokens)
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
