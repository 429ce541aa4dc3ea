"""Chapter 05's open-ended experiment: choose a sampling temperature at which at least 85%
of the words that ``shakespeare-gpt`` (the model trained in chapter 4) writes are words of
its corpus. The check does not compare with a stored answer: it samples again with the
learner's temperature and measures the share of real words."""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import torch

from llmlab import assets, decoding
from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call

TARGET_SHARE = 0.85
PROMPT = "ROMEO:\n"
N_SAMPLES, N_CHARS = 8, 120


@functools.cache
def _model_and_words() -> tuple[Any, Any, frozenset[str]]:
    model, tokenizer = assets.load("shakespeare-gpt")
    words = frozenset(re.findall(r"[a-z]+", assets.load("shakespeare").lower()))
    return model, tokenizer, words


def real_word_share(temperature: float, seed: int = 0) -> float:
    """Share of the words in 8 samples of 120 characters (after ``ROMEO:``) drawn from
    ``shakespeare-gpt`` at ``temperature`` that occur in the Shakespeare corpus."""
    model, tokenizer, words = _model_and_words()
    prompt = torch.tensor([tokenizer.encode(PROMPT)] * N_SAMPLES)
    out = decoding.generate(model, prompt, N_CHARS, decoding.SamplingConfig(
        temperature=temperature), generator=torch.Generator().manual_seed(seed))
    written = [w for row in out for w in
               re.findall(r"[a-z]+", tokenizer.decode(row[prompt.shape[1]:]).lower())]
    return sum(w in words for w in written) / max(len(written), 1)


def reference_choose_temperature() -> float:
    """A temperature cold enough for >= 85% real words, warm enough to still sample."""
    return 0.3


def _too_hot() -> float:  # the model's own distribution: it invents many words
    return 1.0


def _zero() -> float:  # 0 is not a temperature: that would be greedy decoding
    return 0.0


def _as_text() -> str:
    return "0.5"


@exercise("ch05.choose_temperature", title="experiment: a temperature for real words",
          reference=reference_choose_temperature, wrong_answers=[_too_hot, _zero, _as_text])
def check_choose_temperature(answer: Any) -> None:
    require_callable(answer, "choose_temperature")
    temperature = _call(answer, "choose_temperature()")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise CheckFailed(f"choose_temperature() returned {temperature!r} "
                          f"({type(temperature).__name__}); return a number such as 0.7")
    if not 0.05 <= temperature <= 5 or not math.isfinite(temperature):
        raise CheckFailed(f"choose_temperature() returned {temperature}: choose a temperature "
                          "between 0.05 and 5 (0 would be greedy decoding, not sampling)")
    shares = [real_word_share(temperature, seed) for seed in (0, 1)]
    share = sum(shares) / len(shares)
    if share < TARGET_SHARE:
        raise CheckFailed(
            f"at temperature {temperature}, {share:.0%} of the words in 16 fresh samples are "
            f"Shakespeare's (seeds 0 and 1: {shares[0]:.0%}, {shares[1]:.0%}); the goal is "
            f"{TARGET_SHARE:.0%}. Lower temperatures sharpen the distribution: try colder.")
