"""Chapter 04 exercise 7: BERT's masked-LM inputs and labels (``mask_tokens``: 15% of the
non-special tokens, then 80/10/10), checked on its statistics and its invariants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llmlab.course.checks import CheckFailed, exercise, expect_shape, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch04._common import pair_of, rng
from llmlab.training import objectives

# --------------------------------------------------------------------------------------------
# Reference: the learner's function, implemented with llmlab.training


def reference_mask_tokens(
    ids: torch.Tensor, vocab_size: int, mask_id: int, generator: torch.Generator,
    mlm_probability: float = 0.15, special_ids: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: choose each non-special token with ``mlm_probability``; a chosen token
    becomes ``mask_id`` (80%), a random id (10%) or stays (10%). Labels: the original id
    where chosen, -100 elsewhere (llmlab.training.objectives.mask_tokens).

    >>> ids = torch.tensor([[1, 7, 8, 9, 2]])
    >>> inputs, labels = reference_mask_tokens(ids, 10, mask_id=3, special_ids=[1, 2],
    ...     mlm_probability=0.5, generator=torch.Generator().manual_seed(0))
    >>> labels
    tensor([[-100, -100,    8,    9, -100]])
    """
    return objectives.mask_tokens(ids, vocab_size, mask_id, generator, mlm_probability,
                                  special_ids)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure the check fails them


def _mask_with(ids, vocab_size, mask_id, generator, mlm_probability=0.15, special_ids=(), *,
               always_mask=False, labels_everywhere=False, mask_specials=False,
               use_gen=True):
    gen = generator if use_gen else None
    special = torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype))
    chosen = torch.rand(ids.shape, generator=gen) < mlm_probability
    if not mask_specials:
        chosen &= ~special
    draw = torch.rand(ids.shape, generator=gen)
    to_mask = chosen & ((draw < 0.8) | always_mask)
    to_random = chosen & ~to_mask & (draw < 0.9)
    random_ids = torch.randint(vocab_size, ids.shape, generator=gen, dtype=ids.dtype)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = ids.clone() if labels_everywhere else torch.where(chosen, ids, -100)
    return inputs, labels


def _mask_always_mask_token(ids, vocab_size, mask_id, generator, mlm_probability=0.15,
                            special_ids=()):
    return _mask_with(ids, vocab_size, mask_id, generator, mlm_probability, special_ids,
                      always_mask=True)


def _mask_labels_everywhere(ids, vocab_size, mask_id, generator, mlm_probability=0.15,
                            special_ids=()):
    return _mask_with(ids, vocab_size, mask_id, generator, mlm_probability, special_ids,
                      labels_everywhere=True)


def _mask_special_tokens_too(ids, vocab_size, mask_id, generator, mlm_probability=0.15,
                             special_ids=()):
    return _mask_with(ids, vocab_size, mask_id, generator, mlm_probability, special_ids,
                      mask_specials=True)


def _mask_ignores_generator(ids, vocab_size, mask_id, generator, mlm_probability=0.15,
                            special_ids=()):
    return _mask_with(ids, vocab_size, mask_id, generator, mlm_probability, special_ids,
                      use_gen=False)


# --------------------------------------------------------------------------------------------
# 7. Masked-LM masking


PAD, CLS, SEP, MASK = 0, 1, 2, 3
_VOCAB = 1000


def _mlm_batch(seed: int, rows: int, length: int) -> torch.Tensor:
    """Rows ``[CLS] words... [SEP] [PAD]...``, with different amounts of padding."""
    ids = torch.randint(4, _VOCAB, (rows, length), generator=rng(seed))
    ids[:, 0] = CLS
    lengths = torch.randint(length // 2, length, (rows,), generator=rng(seed + 1))
    for row, n in enumerate(lengths.tolist()):
        ids[row, n] = SEP
        ids[row, n + 1:] = PAD
    return ids


def _masking_invariants(ids: torch.Tensor, inputs: Any, labels: Any, call: str,
                        special_ids: Sequence[int]) -> None:
    for name, got in (("inputs", inputs), ("labels", labels)):
        expect_shape(got, ids.shape, f"{call}: {name}")
        if got.dtype != ids.dtype:
            raise CheckFailed(f"{call}: {name} has dtype {got.dtype}, expected {ids.dtype}")
    chosen = labels != -100
    if (labels[chosen] != ids[chosen]).any():
        raise CheckFailed(f"{call}: where a token is chosen its label must be the ORIGINAL id "
                          "(what the model should recover), not the masked input.")
    if torch.equal(labels, ids):
        raise CheckFailed(f"{call}: every label is the original id. Labels must be -100 where "
                          "a token was not chosen, so the loss only counts the chosen 15%.")
    if (inputs[~chosen] != ids[~chosen]).any():
        raise CheckFailed(f"{call}: a token that was not chosen (label -100) was changed in "
                          "the inputs; only chosen tokens may change.")
    special = torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype))
    if chosen[special].any():
        raise CheckFailed(f"{call}: {int(chosen[special].sum())} special tokens ([CLS], [SEP], "
                          "[PAD]) were chosen; never choose a token in special_ids.")
    if ((inputs < 0) | (inputs >= _VOCAB)).any():
        raise CheckFailed(f"{call}: an input id is outside [0, vocab_size={_VOCAB}).")


@exercise("ch04.mask_tokens", title="masked-LM masking (15%, then 80/10/10)",
          reference=reference_mask_tokens,
          wrong_answers=[_mask_always_mask_token, _mask_labels_everywhere,
                         _mask_special_tokens_too, _mask_ignores_generator])
def check_mask_tokens(answer) -> None:
    require_callable(answer, "mask_tokens")
    specials = (PAD, CLS, SEP)
    small = torch.tensor([[CLS, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, SEP]])
    call = "mask_tokens on one sequence [CLS] 10..19 [SEP], mlm_probability=0.5"
    inputs, labels = pair_of(_call(answer, call, small.clone(), _VOCAB, MASK, rng(0), 0.5,
                                 special_ids=specials), call, "inputs, labels")
    _masking_invariants(small, inputs, labels, call, specials)

    for probability, seed in ((0.15, 1), (0.3, 2)):
        ids = _mlm_batch(50 + seed, 200, 256)
        call = (f"mask_tokens on a batch of 200 x 256 tokens with [CLS]/[SEP]/[PAD], "
                f"mlm_probability={probability}")
        inputs, labels = pair_of(_call(answer, call, ids.clone(), _VOCAB, MASK, rng(seed),
                                     probability, special_ids=specials), call, "inputs, labels")
        _masking_invariants(ids, inputs, labels, call, specials)
        eligible = ~torch.isin(ids, torch.tensor(specials))
        chosen = labels != -100
        rate = chosen.sum().item() / eligible.sum().item()
        if abs(rate - probability) > 0.01:
            raise CheckFailed(f"{call}: {rate:.1%} of the non-special tokens were chosen, "
                              f"expected {probability:.0%} (+-1%): each token is chosen "
                              "independently with probability mlm_probability.")
        n = chosen.sum().item()
        as_mask = (inputs[chosen] == MASK).sum().item() / n
        kept = (inputs[chosen] == ids[chosen]).sum().item() / n
        randomised = 1.0 - as_mask - kept
        for name, measured, target in (("became [MASK]", as_mask, 0.8),
                                       ("became a random token", randomised, 0.1),
                                       ("stayed unchanged", kept, 0.1)):
            if abs(measured - target) > 0.03:
                raise CheckFailed(
                    f"{call}: of the chosen tokens {as_mask:.1%} became [MASK], "
                    f"{randomised:.1%} a random token and {kept:.1%} stayed unchanged; expected "
                    f"80% / 10% / 10% ({name}: {measured:.1%}, expected {target:.0%}). One "
                    "uniform draw per chosen token: < 0.8 -> mask_id, 0.8-0.9 -> a random id, "
                    "else keep it.")
        if not torch.equal(ids, _mlm_batch(50 + seed, 200, 256)):
            raise CheckFailed(f"{call}: ids was modified in place; build new tensors "
                              "(torch.where, .clone()).")

    ids = _mlm_batch(60, 8, 64)
    first = pair_of(_call(answer, "mask_tokens with seed 5", ids.clone(), _VOCAB, MASK, rng(5),
                        special_ids=specials), "mask_tokens", "inputs, labels")
    again = pair_of(_call(answer, "mask_tokens with seed 5 again", ids.clone(), _VOCAB, MASK,
                        rng(5), special_ids=specials), "mask_tokens", "inputs, labels")
    other = pair_of(_call(answer, "mask_tokens with seed 6", ids.clone(), _VOCAB, MASK, rng(6),
                        special_ids=specials), "mask_tokens", "inputs, labels")
    if not (torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])):
        raise CheckFailed("mask_tokens twice with generators seeded alike gave different "
                          "masks: draw every random number with generator=generator.")
    if torch.equal(first[1], other[1]):
        raise CheckFailed("mask_tokens with seeds 5 and 6 chose the same tokens: the choice "
                          "must come from the generator.")
