"""Constrained decoding: only the tokens that keep the text on its way to a full match of
a regular expression (a JSON object, a yes/no answer...) may be chosen.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import regex
import torch

from llmlab.decoding.loop import Stepper, check_model_inputs
from llmlab.decoding.processors import NEG_INF, SamplingConfig, process_logits
from llmlab.model import GPT, eval_mode

# ----------------------------------------------------------------------------- constrained decoding


def token_strings(tokenizer: Any, vocab_size: int) -> list[str | None]:
    """The text each token id stands for, or None for ids that cannot be used on their
    own in constrained decoding (the middle of a multi-byte character, or nothing)."""
    out: list[str | None] = []
    for token in range(vocab_size):
        try:
            text = tokenizer.decode([token])
        except (KeyError, IndexError, ValueError):
            text = ""
        out.append(text if text and "\ufffd" not in text else None)
    return out


def json_object_pattern(fields: Mapping[str, str], max_string: int = 40) -> str:
    """A regex for a one-line JSON object with exactly ``fields`` (name -> ``"string"``,
    ``"integer"``, ``"number"`` or ``"boolean"``), in that order, ``{"a": 1, "b": "x"}``
    style. Every text it matches is valid JSON.

    >>> import json, regex
    >>> pattern = json_object_pattern({"name": "string", "age": "integer"})
    >>> json.loads(regex.fullmatch(pattern, '{"name": "Ada", "age": 36}').group())
    {'name': 'Ada', 'age': 36}
    """
    values = {
        "string": r'"[^"\\\x00-\x1f]{0,' + str(max_string) + '}"',
        "integer": r"-?(0|[1-9][0-9]{0,8})",
        "number": r"-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?",
        "boolean": r"(true|false)",
    }
    if not fields:
        raise ValueError("json_object_pattern needs at least one field")
    parts = []
    for name, kind in fields.items():
        if kind not in values:
            raise ValueError(f"field {name!r}: type must be one of {sorted(values)}; got {kind!r}")
        if not name or any(c in name for c in '"\\') or not name.isprintable():
            raise ValueError(f"field names must be plain printable text; got {name!r}")
        parts.append(regex.escape(json.dumps(name)) + ": " + values[kind])
    return r"\{" + ", ".join(parts) + r"\}"


class RegexConstraint:
    """Which tokens may come next so that the text can still end up matching ``pattern``.

    ``strings[token]`` is the text of each token id (``token_strings``). A token is allowed
    when the text plus its string is a prefix of some full match (``regex``'s partial
    matching), and EOS is allowed once the text is a full match.

    >>> constraint = RegexConstraint(r"(yes|no)!", ["y", "n", "es", "o", "!", "x"])
    >>> [t for t in range(6) if constraint.allows("", t)], constraint.allows("yes", 4)
    ([0, 1], True)
    """

    def __init__(self, pattern: str, strings: Sequence[str | None],
                 eos_token_id: int | None = None):
        try:
            self.regex = regex.compile(pattern)
        except regex.error as error:
            raise ValueError(f"pattern {pattern!r} is not a valid regex: {error}") from None
        self.pattern, self.strings, self.eos_token_id = pattern, strings, eos_token_id

    def complete(self, text: str) -> bool:
        return self.regex.fullmatch(text) is not None

    def allows(self, text: str, token: int) -> bool:
        if token == self.eos_token_id:
            return self.complete(text)
        piece = self.strings[token]
        return piece is not None and self.regex.fullmatch(text + piece, partial=True) is not None


@torch.no_grad()
def constrained_generate(
    model: GPT,
    tokenizer: Any,
    prompt: str,
    pattern: str,
    max_new_tokens: int = 64,
    config: SamplingConfig | None = None,
    *,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
    strings: Sequence[str | None] | None = None,
) -> str:
    """Generate text that fully matches the regex ``pattern``, whatever the model prefers.

    At each step only the tokens a ``RegexConstraint`` allows can be chosen. Without an
    ``eos_token_id`` generation stops at the first full match; with one, EOS becomes
    allowed there and the model decides whether to go on while the pattern lets it.
    Greedy decoding tries tokens best first and takes the first allowed one (it rarely
    tests more than a handful); sampling tests them all. Raises ``RuntimeError`` if
    ``max_new_tokens`` runs out before the match is complete.
    """
    config = config or SamplingConfig(greedy=True)
    if strings is None:
        strings = token_strings(tokenizer, model.config.vocab_size)
    if len(strings) != model.config.vocab_size:
        raise ValueError(f"strings must give one entry per token ({model.config.vocab_size}); "
                         f"got {len(strings)}")
    constraint = RegexConstraint(pattern, strings, eos_token_id)
    ids = torch.tensor([list(tokenizer.encode(prompt))])
    check_model_inputs(model, ids, max_new_tokens)
    stepper = Stepper(model, 1, ids.shape[1] + max_new_tokens)
    text = ""
    with eval_mode(model):
        for _ in range(max_new_tokens):
            if eos_token_id is None and constraint.complete(text):
                return text
            scores = process_logits(stepper.next_logits(ids).float(), ids, config)[0]
            token = _choose_allowed(scores, functools.partial(constraint.allows, text),
                                    config.greedy, generator)
            if token is None:
                raise RuntimeError(f"no token can continue {text!r} towards {pattern!r}")
            if token == eos_token_id:
                return text
            text += strings[token]
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    if not constraint.complete(text):
        raise RuntimeError(f"max_new_tokens={max_new_tokens} ran out before the output "
                           f"matched the pattern; got {text!r}")
    return text


def _choose_allowed(
    scores: torch.Tensor, allowed: Any, greedy: bool, generator: torch.Generator | None,
) -> int | None:
    """The best allowed token (greedy) or a sample among the allowed ones; None if none."""
    if greedy:
        return next((int(t) for t in scores.argsort(descending=True)
                     if scores[t] > NEG_INF and allowed(int(t))), None)
    mask = torch.tensor([bool(scores[t] > NEG_INF) and allowed(t) for t in range(len(scores))])
    if not mask.any():
        return None
    probs = scores.masked_fill(~mask, NEG_INF).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
