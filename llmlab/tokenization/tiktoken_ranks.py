"""OpenAI's tiktoken encodings (cl100k_base, o200k_base): ranks instead of merges.

A ``.tiktoken`` file lists every token's bytes (base64) with its rank, which is both its
id and its merge priority; there is no merge list. ``merges_from_ranks`` (in ``bpe``, beside
the trainer whose merges it recovers) finds one, so the same ``Tokenizer`` encodes with
OpenAI's vocabularies (``Tokenizer.from_ranks``):

>>> ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"bc": 257, b"abc": 258}
>>> merges_from_ranks(ranks)
[(b'a', b'b'), (b'b', b'c'), (b'ab', b'c')]
>>> tok = Tokenizer.from_ranks(ranks, CL100K_PATTERN, {"<|endoftext|>": 259})
>>> tok.encode("abc<|endoftext|>")
[258, 259]

The assets ``cl100k-base`` and ``o200k-base`` are unpacked and checked by
``convert_asset`` (which also stores the recovered merges: recovering them takes seconds)
and loaded by ``load_asset``; the asset catalogue names both.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmlab.assets import AssetCorruptedError
from llmlab.tokenization.bpe import merges_from_ranks
from llmlab.tokenization.byte_level import Tokenizer
from llmlab.tokenization.pretokens import CL100K_PATTERN, O200K_PATTERN

__all__ = [
    "CL100K_SPECIAL_TOKENS",
    "ENCODINGS",
    "O200K_SPECIAL_TOKENS",
    "convert_asset",
    "load_asset",
    "read_tiktoken_ranks",
]

#: cl100k_base's special tokens and their ids, as tiktoken defines them.
CL100K_SPECIAL_TOKENS = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258,
                         "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
                         "<|endofprompt|>": 100276}
#: o200k_base's special tokens and their ids.
O200K_SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}

#: Each encoding's pre-tokenisation pattern and special tokens.
ENCODINGS: dict[str, tuple[str, dict[str, int]]] = {
    "cl100k_base": (CL100K_PATTERN, CL100K_SPECIAL_TOKENS),
    "o200k_base": (O200K_PATTERN, O200K_SPECIAL_TOKENS),
}

#: The file ``convert_asset`` writes the recovered merges to (one base64 pair per line).
MERGES_FILE = "merges.txt"


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read a ``.tiktoken`` file: one ``<base64 of the token's bytes> <rank>`` per line.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "tiny.tiktoken"
    ...     _ = path.write_text("IQ== 0\\nYWI= 1\\n")
    ...     read_tiktoken_ranks(path)
    {b'!': 0, b'ab': 1}
    """
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


# --------------------------------------------------------------------------------------
# The course assets cl100k-base and o200k-base
# --------------------------------------------------------------------------------------


def convert_asset(folder: Path, encoding: str, unpacked_sha256: str) -> None:
    """Unpack ``<encoding>.tiktoken.gz``, check it against the digest OpenAI publishes, and
    write the merges recovered from its ranks (one base64 pair per line) next to it.

    Runs once, when the asset is materialised; a file that does not unpack or does not
    match raises ``AssetCorruptedError`` (the asset store then says how to repair it).
    """
    packed = folder / f"{encoding}.tiktoken.gz"
    try:
        data = gzip.decompress(packed.read_bytes())
    except (OSError, EOFError) as error:
        raise AssetCorruptedError(f"{packed.name} is not a valid gzip file ({error}).") from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != unpacked_sha256:
        raise AssetCorruptedError(
            f"{packed.name} unpacks to a file with SHA-256 {actual}, expected {unpacked_sha256} "
            f"(the published {encoding}.tiktoken).")
    ranks_file = folder / f"{encoding}.tiktoken"
    ranks_file.write_bytes(data)
    packed.unlink()
    merges = merges_from_ranks(read_tiktoken_ranks(ranks_file))
    lines = [f"{base64.b64encode(a).decode()} {base64.b64encode(b).decode()}\n"
             for a, b in merges]
    (folder / MERGES_FILE).write_text("".join(lines), encoding="ascii")


def load_asset(folder: Path, encoding: str, tiktoken: bool = False,
               pattern: str | None = None, special_tokens: Mapping[str, int] | None = None
               ) -> Any:
    """llmlab's Tokenizer (pure Python, same ids as tiktoken), or with ``tiktoken=True`` a
    ``tiktoken.Encoding`` built from the same ranks (needs ``pip install tiktoken``).

    The pattern and special tokens of a known encoding come from ``ENCODINGS``; any other
    encoding must pass both.
    """
    if pattern is None or special_tokens is None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding {encoding!r} is none of {sorted(ENCODINGS)}: pass its "
                             "pattern= and special_tokens=")
        pattern = ENCODINGS[encoding][0] if pattern is None else pattern
        special_tokens = ENCODINGS[encoding][1] if special_tokens is None else special_tokens
    ranks = read_tiktoken_ranks(folder / f"{encoding}.tiktoken")
    if tiktoken:
        try:
            import tiktoken as tiktoken_library
        except ImportError as error:
            raise ImportError(f"load(..., tiktoken=True) needs the tiktoken package "
                              f"(`pip install tiktoken`); without it, load({encoding!r}) gives "
                              "llmlab's Tokenizer, which counts the same tokens.") from error
        return tiktoken_library.Encoding(name=encoding, pat_str=pattern, mergeable_ranks=ranks,
                                         special_tokens=dict(special_tokens))
    merges = []
    for number, line in enumerate(
            (folder / MERGES_FILE).read_text(encoding="ascii").splitlines(), start=1):
        try:
            left, right = line.split(" ")
            merges.append((base64.b64decode(left, validate=True),
                           base64.b64decode(right, validate=True)))
        except (ValueError, binascii.Error):
            raise AssetCorruptedError(f"{folder / MERGES_FILE}:{number}: expected two base64 "
                                      f"tokens, got {line[:60]!r}") from None
    # Named only when these are the published tables, so that to_state can say just that.
    name = encoding if encoding in ENCODINGS and (pattern, dict(special_tokens)) == \
        ENCODINGS[encoding] else None
    return Tokenizer.from_ranks(ranks, pattern, special_tokens, merges=merges, name=name)
