"""WordPiece (BERT): a different pre-tokeniser and greedy longest-match segmentation.

BERT normalises text (lower case, accents stripped), cuts it into words and punctuation
marks, and splits each word into the longest pieces its vocabulary holds, left to right;
pieces inside a word carry a ``##`` prefix.

>>> vocab = {"token", "##ization", "is", "fun", "!"}
>>> [piece for word in bert_pretokenize("Tokenization is FUN!")
...  for piece in wordpiece(word, vocab)]
['token', '##ization', 'is', 'fun', '!']
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

__all__ = ["bert_pretokenize", "wordpiece"]

#: CJK ideograph blocks: BERT cuts around each of these characters (no spaces in Chinese).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _bert_char(char: str, lowercase: bool) -> str:
    """One character after BERT's normaliser: controls dropped, any space becomes " ",
    CJK ideographs padded with spaces, accents stripped and case folded (if lowercase).

    >>> _bert_char("É", lowercase=True), _bert_char("\\t", lowercase=True), _bert_char("中", True)
    ('e', ' ', ' 中 ')
    """
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
    """ASCII symbols count as punctuation for BERT, as does every Unicode P* character.

    >>> _is_bert_punctuation("$"), _is_bert_punctuation("¿"), _is_bert_punctuation("a")
    (True, True, False)
    """
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
