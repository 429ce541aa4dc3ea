"""Characters as tokens: the tokenizer of character-level Shakespeare (chapter 4).

One id per distinct character, in sorted order, so the same text always gives the same
vocabulary; there are no merges and no unknown-byte fallback.

>>> tok = CharTokenizer.from_text("to be or not to be")
>>> tok.chars, tok.encode("bet")
(' benort', [1, 2, 6])
>>> CharTokenizer.from_state(tok.to_state()).decode([1, 2, 6])
'bet'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["CharTokenizer"]


class CharTokenizer:
    """One id per distinct character: the tokenizer of character-level Shakespeare.

    Ids follow the sorted order of the characters, so the same text always gives the
    same vocabulary.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.chars, tok.encode("hole")
    ('ehlo', [1, 3, 2, 0])
    >>> tok.encode("help")
    Traceback (most recent call last):
    ...
    ValueError: character 'p' is not in this tokenizer's vocabulary of 4 characters
    """

    def __init__(self, chars: str) -> None:
        if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
            raise ValueError(f"chars must be a non-empty string of distinct characters; "
                             f"got {repr(chars)[:40]}")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is every character of ``text``."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as error:
            raise ValueError(f"character {error.args[0]!r} is not in this tokenizer's "
                             f"vocabulary of {self.vocab_size} characters") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` (a list, a numpy array or a torch tensor)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        return "".join(self.chars[i] for i in ids)

    def to_state(self) -> dict[str, Any]:
        """``{"kind": "char", "chars": ...}``: the characters, in id order.

        >>> CharTokenizer("ab").to_state()
        {'kind': 'char', 'chars': 'ab'}
        """
        return {"kind": "char", "chars": self.chars}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CharTokenizer:
        """The tokenizer ``to_state`` described.

        >>> CharTokenizer.from_state({"kind": "gpt2"})
        Traceback (most recent call last):
        ...
        ValueError: CharTokenizer.from_state reads {'kind': 'char', 'chars': ...}, got kind 'gpt2'
        """
        kind = state.get("kind") if isinstance(state, Mapping) else None
        if kind != "char":
            raise ValueError("CharTokenizer.from_state reads {'kind': 'char', 'chars': ...}, "
                             f"got kind {kind!r}")
        if "chars" not in state:
            raise ValueError("tokenizer state of kind 'char' lacks 'chars'; write it with "
                             "CharTokenizer.to_state()")
        return cls(state["chars"])
