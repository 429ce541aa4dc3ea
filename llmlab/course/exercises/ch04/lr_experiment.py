"""Chapter 04 open-ended experiment: choose a peak learning rate for a tiny GPT and a fixed
budget of steps (``choose_learning_rate``). The check reruns the training with the
learner's choice and measures the property asked for: the validation loss after the budget
must be below ``TARGET``. Several rates pass; the sweep that finds one is the exercise."""

from __future__ import annotations

import functools
import math

import numpy as np

from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.training.experiments import QuickRun, quick_run

STEPS = 100  # the budget: optimizer steps of 16 windows of 32 characters
WARMUP = 10
TARGET = 3.1  # validation cross-entropy (nats per character) to beat after STEPS steps


@functools.lru_cache(maxsize=1)
def _data() -> tuple[np.ndarray, np.ndarray, int]:
    from llmlab import assets  # the asset store sits below every concept layer
    from llmlab.tokenization import CharTokenizer

    text = assets.load("shakespeare")
    tokenizer = CharTokenizer.from_text(text)
    ids = np.array(tokenizer.encode(text[:300_000]), dtype=np.int64)
    return ids[:250_000], ids[250_000:], tokenizer.vocab_size


def lr_experiment(lr: float) -> QuickRun:
    """The experiment's run: a 1-layer GPT (32 dimensions) on the first 250,000 characters of
    Shakespeare, ``STEPS`` steps of AdamW at peak rate ``lr`` (``WARMUP`` warm-up steps,
    cosine to ``lr / 10``), validated on the next 50,000 characters. Deterministic: the
    check reruns exactly this.

    >>> run = lr_experiment(3e-3)   # doctest: +SKIP
    >>> run.val_loss < TARGET       # doctest: +SKIP
    True
    """
    train_ids, val_ids, vocab_size = _data()
    return quick_run(train_ids, val_ids, vocab_size, lr=lr, steps=STEPS, warmup_steps=WARMUP)


def reference_choose_learning_rate() -> float:
    """One rate that meets the target (a sweep over 1e-3 ... 1e-1 finds a range of them)."""
    return 1e-2


def _too_small() -> float:  # AdamW's textbook default: far too timid for 100 steps
    return 1e-4


def _too_large() -> float:  # a tiny model tolerates a lot, not this much
    return 0.5


def _a_string() -> str:
    return "1e-2"


@exercise("ch04.choose_learning_rate", title="choose a learning rate (open-ended experiment)",
          reference=reference_choose_learning_rate,
          wrong_answers=[_too_small, _too_large, _a_string])
def check_choose_learning_rate(answer) -> None:
    require_callable(answer, "choose_learning_rate")
    lr = _call(answer, "choose_learning_rate()")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise CheckFailed(f"choose_learning_rate() returned {lr!r} ({type(lr).__name__}); "
                          "return the peak learning rate as a number, e.g. 0.001")
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise CheckFailed(f"choose_learning_rate() returned {lr!r}; a learning rate is a "
                          "positive number (at most 10)")
    run = lr_experiment(float(lr))
    if run.val_loss < TARGET:
        return
    start = run.evals[0]["val_loss"]
    if not math.isfinite(run.val_loss):
        verdict = "the loss became NaN/inf: the rate is far too large"
    elif np.mean(run.train_losses[-10:]) > np.mean(run.train_losses[:10]) - 0.5:
        verdict = ("the training loss barely moved: too small a rate learns too slowly in "
                   f"{STEPS} steps (or too large a rate keeps it bouncing): compare a few")
    else:
        verdict = ("it learns, but not enough in this budget: run lr_experiment at rates a "
                   "factor of about 3 apart (1e-3 ... 1e-1) and compare their validation losses")
    raise CheckFailed(f"with lr = {lr:g} the validation loss after {STEPS} steps is "
                      f"{run.val_loss:.3f} (from {start:.3f} at step 0), not below {TARGET}; "
                      f"{verdict}.")
