"""The byte-level BPE ``Tokenizer``: encode and decode with a vocabulary and its merges.

Encoding cuts text at special tokens, splits the rest into pre-tokens, and inside each
pre-token repeatedly merges the adjacent pair whose merge was learned first:

>>> vocab = {**initial_vocab(), 256: b"ab", 257: b"abc"}
>>> table = build_merge_table(vocab, [(b"a", b"b"), (b"ab", b"c")])
>>> apply_merges(list(b"abcab"), table)
[257, 256]
>>> tok = Tokenizer(vocab, [(b"a", b"b"), (b"ab", b"c")], ["<|eot|>"])
>>> tok.encode("abc ab<|eot|>"), tok.decode([257, 32, 256, 258])
([257, 32, 256, 258], 'abc ab<|eot|>')

A tokenizer saves itself as a JSON-ready dict and comes back from it with the same ids:

>>> Tokenizer.from_state(tok.to_state()).encode("abc ab<|eot|>")
[257, 32, 256, 258]

GPT-2's own files load with ``Tokenizer.from_files`` / ``Tokenizer.gpt2``, and
``to_hf_tokenizer`` builds the same tokenizer in Hugging Face ``tokenizers`` to cross-check.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmlab.tokenization.bpe import (  # noqa: F401  (initial_vocab: for the doctests)
    initial_vocab,
    merge_pair,
    merges_from_ranks,
)
from llmlab.tokenization.pretokens import (
    GPT2_PATTERN,
    check_special_tokens,
    compile_pattern,
    special_regex,
)

if TYPE_CHECKING:
    import tokenizers

__all__ = [
    "PUBLISHED",
    "Tokenizer",
    "apply_merges",
    "build_merge_table",
    "bytes_to_unicode",
    "to_hf_tokenizer",
]

Pair = tuple[int, int]

#: Published tokenizers whose tables the course fetches as assets: a ``Tokenizer`` named
#: after one saves only that name in its state. Name -> asset.
PUBLISHED = {"gpt2": "gpt2-bpe", "cl100k_base": "cl100k-base", "o200k_base": "o200k-base"}


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


def _b64(piece: bytes) -> str:
    return base64.b64encode(piece).decode("ascii")


def _unb64(text: Any, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ValueError(f"tokenizer state: {where} should be base64 text, got {text!r}") from None


class Tokenizer:
    """A byte-level BPE tokenizer: GPT-2's pre-tokens, merges applied by rank.

    ``vocab`` maps ids to bytes and must hold all 256 single bytes; ``merges`` lists
    byte pairs, earliest first. Special tokens are never split; a special token missing
    from ``vocab`` gets the next free id. ``pattern`` replaces GPT-2's pre-tokenisation
    regex (``CL100K_PATTERN``, ``O200K_PATTERN``, or your own). ``name`` says that these
    are the tables of a published tokenizer (a key of ``PUBLISHED``): ``to_state`` then
    records the name alone.

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
        *,
        name: str | None = None,
    ):
        if name is not None and name not in PUBLISHED:
            raise ValueError(f"name must be one of the published tokenizers "
                             f"{sorted(PUBLISHED)} or None, got {name!r}")
        self.name = name
        self.pattern = GPT2_PATTERN if pattern is None else pattern
        self._pretoken_re = compile_pattern(self.pattern)
        self.vocab: dict[int, bytes] = dict(vocab)
        self.merges = list(merges)
        self.special_tokens = check_special_tokens(special_tokens)
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
        self._special_re = special_regex(self.special_tokens)
        self._longest_special = max(map(len, self.special_tokens), default=0)
        self._cache: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        named = "" if self.name is None else f"{self.name!r}, "
        custom = "" if self.pattern == GPT2_PATTERN else ", custom pattern"
        return (
            f"Tokenizer({named}vocab_size={self.vocab_size}, merges={len(self.merges)}, "
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

    # ---- saving and restoring ------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer, as a JSON-serialisable dict.

        A published tokenizer records only its name (``{"kind": "gpt2"}``,
        ``{"kind": "tiktoken", "encoding": "cl100k_base"}``): its tables are a course asset.
        Any other records ``{"kind": "bpe", ...}`` with its vocabulary (id -> base64 of
        the token's bytes), its merges (base64 pairs, earliest first), its special tokens
        and its pre-tokenisation pattern.

        >>> tok = Tokenizer({**initial_vocab(), 256: b"hi"}, [(b"h", b"i")], ["<|eot|>"])
        >>> state = tok.to_state()
        >>> state["kind"], state["vocab"]["256"], state["merges"], state["special_tokens"]
        ('bpe', 'aGk=', [['aA==', 'aQ==']], ['<|eot|>'])
        """
        if self.name == "gpt2":
            return {"kind": "gpt2"}
        if self.name is not None:
            return {"kind": "tiktoken", "encoding": self.name}
        return {
            "kind": "bpe",
            "vocab": {str(token_id): _b64(piece) for token_id, piece in sorted(self.vocab.items())},
            "merges": [[_b64(left), _b64(right)] for left, right in self.merges],
            "special_tokens": list(self.special_tokens),
            "pattern": self.pattern,
        }

    #: The kinds of state ``from_state`` reads.
    STATE_KINDS = ("bpe", "gpt2", "tiktoken")

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Tokenizer:
        """The tokenizer ``to_state`` described (loading a published one's asset).

        >>> tok = Tokenizer({**initial_vocab(), 256: b"hi"}, [(b"h", b"i")])
        >>> Tokenizer.from_state(tok.to_state()).encode("hi!")
        [256, 33]
        >>> Tokenizer.from_state({"kind": "char", "chars": "ab"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Tokenizer.from_state reads the kinds ('bpe', 'gpt2', 'tiktoken'), got 'char'...
        """
        kind = state.get("kind") if isinstance(state, Mapping) else None
        if kind not in cls.STATE_KINDS:
            raise ValueError(f"Tokenizer.from_state reads the kinds {cls.STATE_KINDS}, got "
                             f"{kind!r}; llmlab.tokenization.from_state reads every "
                             "tokenizer's state")
        if kind == "gpt2":
            return cls.gpt2()
        if kind == "tiktoken":
            return cls._from_asset(state.get("encoding"))
        missing = [key for key in ("vocab", "merges", "special_tokens", "pattern")
                   if key not in state]
        if missing:
            raise ValueError(f"tokenizer state of kind 'bpe' lacks {missing}; write it with "
                             "Tokenizer.to_state()")
        table, pairs = state["vocab"], state["merges"]
        if not isinstance(table, Mapping) or not all(str(key).isdigit() for key in table):
            raise ValueError("tokenizer state: vocab should map ids (digit strings) to base64 "
                             f"text, got {str(table)[:60]}")
        if not isinstance(pairs, list) or not all(len(pair) == 2 for pair in pairs):
            raise ValueError("tokenizer state: merges should be a list of [base64, base64] "
                             f"pairs, got {str(pairs)[:60]}")
        vocab = {int(token_id): _unb64(piece, f"vocab[{token_id!r}]")
                 for token_id, piece in table.items()}
        merges = [(_unb64(left, f"merge {rank}"), _unb64(right, f"merge {rank}"))
                  for rank, (left, right) in enumerate(pairs)]
        return cls(vocab, merges, state["special_tokens"], state["pattern"])

    @classmethod
    def _from_asset(cls, encoding: Any) -> Tokenizer:
        """The published tokenizer ``encoding`` (a key of ``PUBLISHED``), from its asset."""
        from llmlab import assets

        if encoding not in PUBLISHED or encoding == "gpt2":
            known = sorted(set(PUBLISHED) - {"gpt2"})
            raise ValueError(f"tokenizer state of kind 'tiktoken' names encoding {encoding!r}; "
                             f"known encodings: {known}")
        tokenizer = assets.load(PUBLISHED[encoding])
        if not isinstance(tokenizer, cls):  # a loader that changed under us
            raise TypeError(f"asset {PUBLISHED[encoding]!r} loads as "
                            f"{type(tokenizer).__name__}, not Tokenizer")
        return tokenizer

    # ---- GPT-2 files -----------------------------------------------------------------

    @classmethod
    def from_files(
        cls,
        vocab_path: str | os.PathLike,
        merges_path: str | os.PathLike,
        special_tokens: Sequence[str] | None = None,
        *,
        name: str | None = None,
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
        return cls(vocab, merges, special_tokens, name=name)

    @classmethod
    def gpt2(cls, directory: str | os.PathLike | None = None) -> Tokenizer:
        """GPT-2's tokenizer (50,257 ids, ``<|endoftext|>`` special), from the course asset
        ``gpt2-bpe`` or from ``directory`` holding GPT-2's ``encoder.json`` and
        ``vocab.bpe``. Its state is just ``{"kind": "gpt2"}``."""
        if directory is None:
            from llmlab import assets

            directory = assets.path(PUBLISHED["gpt2"])
        directory = Path(directory)
        return cls.from_files(
            directory / "encoder.json", directory / "vocab.bpe", ["<|endoftext|>"], name="gpt2"
        )

    # ---- tiktoken's format -------------------------------------------------------------

    @classmethod
    def from_ranks(
        cls,
        ranks: Mapping[bytes, int],
        pattern: str,
        special_tokens: Mapping[str, int] | None = None,
        merges: Sequence[tuple[bytes, bytes]] | None = None,
        *,
        name: str | None = None,
    ) -> Tokenizer:
        """A tokenizer from tiktoken-style ranks (token bytes -> id = merge priority).

        ``special_tokens`` maps each special token to its id. ``merges`` (the result of
        ``merges_from_ranks(ranks)``) may be passed when already computed: recovering them
        takes seconds for 100k tokens.

        >>> from llmlab.tokenization.pretokens import GPT2_PATTERN
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
        return cls(vocab, merges, list(special_tokens), pattern=pattern, name=name)


# --------------------------------------------------------------------------------------
# The same tokenizer in Hugging Face `tokenizers`
# --------------------------------------------------------------------------------------


def to_hf_tokenizer(
    vocab: Mapping[int, bytes],
    merges: Sequence[tuple[bytes, bytes]],
    special_tokens: Sequence[str] | None = None,
) -> tokenizers.Tokenizer:
    """A ``tokenizers.Tokenizer`` (ByteLevel BPE) with our vocab and merges, for
    cross-checking: its ids equal ``Tokenizer(vocab, merges, special_tokens).encode``.

    >>> vocab = {**initial_vocab(), 256: b"ab"}
    >>> to_hf_tokenizer(vocab, [(b"a", b"b")]).encode("abc ab").ids
    [256, 99, 32, 256]
    """
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    special_tokens = check_special_tokens(special_tokens)
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
