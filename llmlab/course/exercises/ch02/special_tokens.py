"""Chapter 02 exercise 5: cutting text around special tokens, kept whole and longest first
(``split_special``), checked against llmlab.tokenization's ``split_on_special_tokens``."""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmlab import tokenization
from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call

# --------------------------------------------------------------------------------------------
# Reference: the learner's function, implemented with llmlab.tokenization


def reference_split_special(text: str, special_tokens: Sequence[str]) -> list[str]:
    """``text`` cut into ordinary pieces and whole special tokens (longest first).

    >>> reference_split_special("a<|eot|><|eot|>b", ["<|eot|>"])
    ['a', '<|eot|>', '<|eot|>', 'b']
    """
    return tokenization.split_on_special_tokens(text, list(special_tokens), keep=True)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure the check fails them


def _split_unescaped(text, special_tokens):  # "|" is a regex operator
    if not special_tokens:
        return [text] if text else []
    pattern = "(" + "|".join(sorted(special_tokens, key=len, reverse=True)) + ")"
    return [piece for piece in re.split(pattern, text) if piece]


def _split_in_given_order(text, special_tokens):  # the first listed wins, not the longest
    if not special_tokens:
        return [text] if text else []
    pattern = "(" + "|".join(map(re.escape, special_tokens)) + ")"
    return [piece for piece in re.split(pattern, text) if piece]


def _split_drops_specials(text, special_tokens):
    return tokenization.split_on_special_tokens(text, list(special_tokens))


def _split_keeps_empty_pieces(text, special_tokens):
    if not special_tokens:
        return [text]
    longest_first = sorted(special_tokens, key=len, reverse=True)
    return re.split("(" + "|".join(map(re.escape, longest_first)) + ")", text)


# --------------------------------------------------------------------------------------------
# 6. Special tokens

EOT = "<|endoftext|>"

_SPLIT_CASES: list[tuple[str, str, list[str]]] = [
    ("no special tokens", "hello world", []),
    ("an empty text", "", [EOT]),
    ("one special token in the middle", f"Hello{EOT}World", [EOT]),
    ("special tokens at both ends and twice in a row", f"{EOT}a{EOT}{EOT}", [EOT]),
    ("text that only looks special", "a <|endoftext| b |endoftext|> c <endoftext> d", [EOT]),
    ("overlapping special tokens, the shorter listed first", "x<|eot|><|eot|>y<|eot|>",
     ["<|eot|>", "<|eot|><|eot|>"]),
    ("two special tokens around unicode text", "héllo<|user|>👋 ça va?<|assistant|>",
     ["<|user|>", "<|assistant|>"]),
]


@exercise("ch02.split_special", title="keeping special tokens whole",
          reference=reference_split_special,
          wrong_answers=[_split_unescaped, _split_in_given_order, _split_drops_specials,
                         _split_keeps_empty_pieces])
def check_split_special(answer) -> None:
    require_callable(answer, "split_special")
    for what, text, special_tokens in _SPLIT_CASES:
        call = f"split_special({text!r}, {special_tokens}) for {what}"
        got = _call(answer, call, text, list(special_tokens))
        if not isinstance(got, list):
            raise CheckFailed(f"{call} returned {type(got).__name__}, expected a list of str")
        expected = reference_split_special(text, special_tokens)
        if got == expected:
            continue
        hint = ("Cut at every special token, keep the special tokens as pieces, drop empty "
                "pieces; where two special tokens overlap, the longest wins.")
        if "" in got and [piece for piece in got if piece] == expected:
            hint = "Drop the empty pieces that re.split leaves between adjacent matches."
        elif got == _split_unescaped(text, special_tokens):
            hint = "'|' is a regex operator: build the pattern from re.escape(token)."
        elif got == _split_in_given_order(text, special_tokens):
            hint = ("A regex alternation tries the alternatives in order: put the longest special "
                    "tokens first (sorted(special_tokens, key=len, reverse=True)).")
        elif got == _split_drops_specials(text, special_tokens):
            hint = ("Keep the special tokens as pieces of their own (a capturing group in "
                    "re.split keeps them).")
        raise CheckFailed(f"{call} is {got!r}, expected {expected!r}. {hint}")
