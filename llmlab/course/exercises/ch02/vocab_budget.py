"""Chapter 02 exercise 7, an open-ended experiment: how small can a BPE vocabulary be and
still reach a compression target on held-out text?

The learner trains byte-level BPE (``train_bpe``) on the first ``TRAIN_CHARS`` characters
of the course's Shakespeare, measures bytes per token on *The Tempest* (which those
characters do not include), and answers with a vocabulary size. The check recomputes the
property from that choice: the vocabulary must reach ``TARGET`` bytes per token, and one
10% smaller must not (so a generous guess fails), within ``MAX_VOCAB`` ids.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from llmlab import assets, tokenization
from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call

TRAIN_CHARS = 300_000
TARGET = 2.0
MAX_VOCAB = 2000
SMALLER = 0.9  # a vocabulary this much smaller must miss the target


def experiment_texts() -> tuple[str, str]:
    """The training text (the first ``TRAIN_CHARS`` characters) and *The Tempest*.

    >>> train, tempest = experiment_texts()
    >>> len(train), tempest[:40] in train
    (300000, False)
    """
    works = assets.path("shakespeare") / "works"
    tempest = next(works.glob("tempest*.txt")).read_text(encoding="utf-8")
    return assets.load("shakespeare")[:TRAIN_CHARS], tempest


@functools.cache
def _trained() -> tuple[dict[int, bytes], tuple[tuple[bytes, bytes], ...]]:
    """BPE trained once on the experiment's text with ``MAX_VOCAB`` ids; smaller
    vocabularies are prefixes of its merges (training is greedy and deterministic)."""
    train, _ = experiment_texts()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.txt"
        path.write_text(train, encoding="utf-8")
        vocab, merges = tokenization.train_bpe(path, MAX_VOCAB)
    return vocab, tuple(merges)


@functools.cache
def held_out_bytes_per_token(vocab_size: int) -> float:
    """Bytes per token on *The Tempest* of the BPE with ``vocab_size`` ids (256 + merges),
    trained on the experiment's text.

    >>> held_out_bytes_per_token(256)
    1.0
    """
    if not 256 <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be between 256 and {MAX_VOCAB}, got {vocab_size}")
    vocab, merges = _trained()
    _, tempest = experiment_texts()
    tokenizer = tokenization.Tokenizer(vocab, list(merges[:vocab_size - 256]))
    return len(tempest.encode("utf-8")) / len(tokenizer.encode(tempest))


def reference_choose_vocab_size() -> int:
    """The smallest vocabulary (to 1 id) that reaches ``TARGET`` bytes per token on *The
    Tempest*: bytes per token grows with every merge, so a binary search over sizes works.

    >>> size = reference_choose_vocab_size()
    >>> held_out_bytes_per_token(size) >= TARGET > held_out_bytes_per_token(size - 1)
    True
    """
    low, high = 256, MAX_VOCAB  # low misses the target, high reaches it
    while high - low > 1:
        middle = (low + high) // 2
        if held_out_bytes_per_token(middle) >= TARGET:
            high = middle
        else:
            low = middle
    return high


def _as_big_as_allowed() -> int:  # reaches the target, but far from the smallest
    return MAX_VOCAB


def _counts_merges_not_ids() -> int:  # the right number of merges, given as the vocab size
    return reference_choose_vocab_size() - 256


def _gpt2_sized() -> int:
    return 50_257


def _round_guess() -> int:  # a round number picked without measuring
    return 500


@exercise("ch02.vocab_budget", title="experiment: the smallest vocabulary for a target",
          reference=reference_choose_vocab_size,
          wrong_answers=[_as_big_as_allowed, _counts_merges_not_ids, _gpt2_sized, _round_guess])
def check_vocab_budget(answer) -> None:
    require_callable(answer, "choose_vocab_size")
    size = _call(answer, "choose_vocab_size()")
    if isinstance(size, bool) or not isinstance(size, int):
        raise CheckFailed(f"choose_vocab_size() returned {size!r}, expected an int: the number "
                          "of ids (256 bytes + the merges)")
    if not 256 <= size <= MAX_VOCAB:
        raise CheckFailed(f"choose_vocab_size() returned {size}: keep the vocabulary between "
                          f"256 and {MAX_VOCAB} ids")
    reached = held_out_bytes_per_token(size)
    if reached < TARGET:
        hint = ""
        if held_out_bytes_per_token(min(size + 256, MAX_VOCAB)) >= TARGET:
            hint = (" Is that the number of merges? A vocabulary holds the 256 bytes plus one "
                    "id per merge.")
        raise CheckFailed(f"a vocabulary of {size} ids gives {reached:.3f} bytes per token on "
                          f"The Tempest, below the target {TARGET}: it needs more merges."
                          f"{hint}")
    smaller = int(size * SMALLER)
    if smaller >= 256 and held_out_bytes_per_token(smaller) >= TARGET:
        raise CheckFailed(
            f"a vocabulary of {size} ids reaches {reached:.3f} bytes per token, but one 10% "
            f"smaller ({smaller} ids) still reaches {held_out_bytes_per_token(smaller):.3f} >= "
            f"{TARGET}: measure a few sizes and look for the smallest that reaches the target")
