"""Chapter 05 exercise on repetition: CTRL's repetition penalty (``repetition_penalty``),
checked against llmlab.decoding (itself checked against transformers'
``RepetitionPenaltyLogitsProcessor``)."""

from __future__ import annotations

from typing import Any

import torch

from llmlab import decoding
from llmlab.course.checks import CheckFailed, exercise, expect_shape, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch05._common import same, show


def reference_repetition_penalty(
    logits: torch.Tensor, input_ids: torch.Tensor, penalty: float,
) -> torch.Tensor:
    """Every token already in a row's ``input_ids`` gets its logit divided by ``penalty``
    if positive, multiplied by it if negative (once, however often it occurred).

    >>> reference_repetition_penalty(torch.tensor([[2.0, -1.0, 3.0]]),
    ...                              torch.tensor([[0, 1, 0]]), 2.0)
    tensor([[ 1., -2.,  3.]])
    """
    return decoding.repetition_penalty(logits, input_ids, penalty)


def _penalty_divides_all(logits, input_ids, penalty):  # a negative logit / 1.3 rises
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, input_ids, True)
    return torch.where(seen, logits / penalty, logits)


def _penalty_per_occurrence(logits, input_ids, penalty):  # penalty ** count
    counts = torch.zeros_like(logits).scatter_add(-1, input_ids, torch.ones_like(
        input_ids, dtype=logits.dtype))
    factor = penalty ** counts
    return torch.where(logits < 0, logits * factor, logits / factor)


def _penalty_first_row_history(logits, input_ids, penalty):  # one history for the batch
    seen = torch.zeros(logits.shape[-1], dtype=torch.bool)
    seen[input_ids[0]] = True
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def _penalty_unseen(logits, input_ids, penalty):  # penalises the tokens NOT generated yet
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, input_ids, True)
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, logits, penalised)


_g = torch.Generator().manual_seed(7)
_CASES: list[tuple[str, torch.Tensor, torch.Tensor, float]] = [
    ("one row, positive and negative logits seen", torch.tensor([[2.0, -1.0, 3.0, -0.5]]),
     torch.tensor([[0, 1]]), 2.0),
    ("a token seen three times (penalised once)", torch.tensor([[1.5, 0.5, -2.0]]),
     torch.tensor([[0, 0, 0, 2]]), 1.3),
    ("a batch of 2 rows with different histories", 2 * torch.randn(2, 8, generator=_g),
     torch.tensor([[1, 2, 3], [5, 6, 6]]), 1.5),
    ("penalty 1 (no change)", torch.tensor([[0.4, -0.4, 1.0]]), torch.tensor([[0, 1, 2]]), 1.0),
]


@exercise("ch05.repetition_penalty", title="the repetition penalty",
          reference=reference_repetition_penalty,
          wrong_answers=[_penalty_divides_all, _penalty_per_occurrence,
                         _penalty_first_row_history, _penalty_unseen])
def check_repetition_penalty(answer: Any) -> None:
    require_callable(answer, "repetition_penalty")
    for what, logits, ids, penalty in _CASES:
        call = f"repetition_penalty(logits, input_ids={ids.tolist()}, {penalty}) for {what}"
        given = logits.clone()
        got = _call(answer, call, given, ids.clone(), penalty)
        if not torch.equal(given, logits):
            raise CheckFailed(f"{call} changed the caller's logits: return a new tensor "
                              "(torch.where builds one).")
        expected = reference_repetition_penalty(logits, ids, penalty)
        if same(got, expected):
            continue
        expect_shape(got, expected.shape, f"{call} returned a tensor that")
        row = int((~torch.isclose(got, expected, atol=1e-5)).any(dim=-1).nonzero()[0])
        token = int((~torch.isclose(got[row], expected[row], atol=1e-5)).nonzero()[0])
        seen = token in ids[row].tolist()
        before = logits[row, token].item()
        if not seen:
            hint = (f"token {token} does not occur in row {row}'s input_ids, so its logit "
                    "must stay as it is; and each row uses its own history.")
        elif before < 0 and got[row, token] > before:
            hint = (f"token {token}'s logit {before:.3g} is negative: dividing it by the "
                    "penalty makes it *larger* (more likely). Multiply negative logits, divide "
                    "positive ones, so a repeat always becomes less likely.")
        elif ids[row].tolist().count(token) > 1:
            hint = (f"token {token} occurs {ids[row].tolist().count(token)} times, and CTRL's "
                    "penalty applies once per token seen, not once per occurrence.")
        else:
            hint = "Divide the positive logits of seen tokens by the penalty, multiply negative."
        raise CheckFailed(f"{call}: row {row} is {show(got[row])}, expected "
                          f"{show(expected[row])} (token {token}). {hint}")
