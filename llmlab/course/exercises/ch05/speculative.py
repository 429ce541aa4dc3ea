"""Chapter 05 exercises on speculative decoding: the greedy acceptance rule
(``accept_greedy``) and the sampling rule (``speculative_accept``: accept a draft token with
probability ``min(1, p/q)``, otherwise resample from the residual ``max(0, p - q)``).

The sampling check does not sample: it feeds the learner's function a grid of uniform
numbers ``u`` and adds up, exactly, the distribution of the token that comes out. The rule
is right when that distribution is the target's ``p`` whatever the draft ``q``.
"""

from __future__ import annotations

from typing import Any

import torch

from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch05._common import show

# --------------------------------------------------------------------------------------------
# References


def reference_accept_greedy(draft: list[int], target_best: list[int]) -> list[int]:
    """Keep the draft tokens while each equals the target's argmax at its position, then add
    one token of the target's: its correction at the first mismatch, or its next token
    (``target_best[len(draft)]``) when every draft token was accepted.

    >>> reference_accept_greedy([5, 7, 9], [5, 7, 2, 4])
    [5, 7, 2]
    >>> reference_accept_greedy([5, 7], [5, 7, 3])
    [5, 7, 3]
    """
    kept: list[int] = []
    for token, best in zip(draft, target_best, strict=False):
        if token != best:
            return kept + [best]
        kept.append(token)
    return kept + [target_best[len(draft)]]


def reference_speculative_accept(
    p: torch.Tensor, q: torch.Tensor, x: int, u: float,
) -> tuple[bool, torch.Tensor]:
    """Whether draft token ``x`` (drawn from ``q``) is accepted given a uniform ``u``, and the
    distribution the output token is drawn from: one-hot on ``x`` when ``u < min(1, p[x] /
    q[x])``, else ``max(0, p - q)`` renormalised.

    >>> p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    >>> reference_speculative_accept(p, q, 1, 0.9)     # 0.9 >= 0.5 / 0.75: rejected
    (False, tensor([1., 0.]))
    >>> reference_speculative_accept(p, q, 0, 0.9)     # p / q = 2: always accepted
    (True, tensor([1., 0.]))
    """
    if u < min(1.0, float(p[x] / q[x])):
        return True, torch.nn.functional.one_hot(torch.tensor(x), len(p)).to(p.dtype)
    residual = (p - q).clamp(min=0)
    return False, residual / residual.sum()


# --------------------------------------------------------------------------------------------
# Plausible mistakes


def _greedy_no_bonus(draft, target_best):  # all accepted: forgets the target's free token
    kept = []
    for token, best in zip(draft, target_best, strict=False):
        if token != best:
            return kept + [best]
        kept.append(token)
    return kept


def _greedy_keeps_draft_token(draft, target_best):  # keeps the rejected draft token
    kept = []
    for token, best in zip(draft, target_best, strict=False):
        kept.append(token)
        if token != best:
            return kept
    return kept + [target_best[len(draft)]]


def _greedy_keeps_every_match(draft, target_best):  # goes on after the first mismatch
    kept = [t for t, b in zip(draft, target_best, strict=False) if t == b]
    return kept + [target_best[len(kept)]]


def _sample_resample_from_p(p, q, x, u):  # a rejection resamples from p: x is over-counted
    if u < min(1.0, float(p[x] / q[x])):
        return True, torch.nn.functional.one_hot(torch.tensor(x), len(p)).to(p.dtype)
    return False, p.clone()


def _sample_inverted_ratio(p, q, x, u):  # q / p instead of p / q
    if u < min(1.0, float(q[x] / p[x])):
        return True, torch.nn.functional.one_hot(torch.tensor(x), len(p)).to(p.dtype)
    residual = (p - q).clamp(min=0)
    return False, residual / residual.sum()


def _sample_no_clamp(p, q, x, u):  # p - q without max(0, .): negative "probabilities"
    if u < min(1.0, float(p[x] / q[x])):
        return True, torch.nn.functional.one_hot(torch.tensor(x), len(p)).to(p.dtype)
    residual = p - q
    return False, residual / residual.abs().sum()


def _sample_always_accept(p, q, x, u):  # the draft's token is taken as it is
    return True, torch.nn.functional.one_hot(torch.tensor(x), len(p)).to(p.dtype)


# --------------------------------------------------------------------------------------------
# Greedy rule

_GREEDY_CASES: list[tuple[str, list[int], list[int]]] = [
    ("the second draft token differs from the target's choice", [5, 7, 9], [5, 3, 9, 4]),
    ("every draft token accepted (the target's next token comes free)", [5, 7], [5, 7, 3]),
    ("the first draft token is already wrong", [1, 2, 3], [4, 2, 3, 8]),
    ("a later token matches again after a mismatch", [6, 1, 6], [6, 2, 6, 0]),
    ("an empty draft (no guess): one plain greedy step", [], [11]),
]


@exercise("ch05.accept_greedy", title="speculative decoding: the greedy acceptance rule",
          reference=reference_accept_greedy,
          wrong_answers=[_greedy_no_bonus, _greedy_keeps_draft_token, _greedy_keeps_every_match])
def check_accept_greedy(answer: Any) -> None:
    require_callable(answer, "accept_greedy")
    for what, draft, best in _GREEDY_CASES:
        call = f"accept_greedy({draft}, target_best={best}) ({what})"
        got = _call(answer, call, list(draft), list(best))
        expected = reference_accept_greedy(draft, best)
        if isinstance(got, torch.Tensor):
            got = got.tolist()
        if got == expected:
            continue
        if not isinstance(got, list):
            raise CheckFailed(f"{call} returned {type(got).__name__}; return a list of ints")
        if got == expected[:-1]:
            hint = ("The target always contributes one token of its own: when every draft "
                    "token is accepted it is target_best[len(draft)], which the verify pass "
                    "computed anyway.")
        elif len(got) == len(expected) and got[:-1] == expected[:-1]:
            hint = ("At the first mismatch the target's own token (target_best[i]) replaces "
                    "the rejected draft token.")
        else:
            hint = ("Stop at the first draft token that differs from target_best: every later "
                    "draft token was predicted from a wrong prefix, so none of them can be "
                    "kept, even if it happens to match.")
        raise CheckFailed(f"{call}: returned {got}, expected {expected}. {hint}")


# --------------------------------------------------------------------------------------------
# Sampling rule

_SAMPLE_CASES: list[tuple[str, torch.Tensor, torch.Tensor]] = [
    ("a draft that prefers the tokens the target does not",
     torch.tensor([0.5, 0.3, 0.15, 0.05]), torch.tensor([0.1, 0.2, 0.3, 0.4])),
    ("a draft close to the target", torch.tensor([0.4, 0.4, 0.2]), torch.tensor([0.5, 0.3, 0.2])),
    ("a draft that never proposes token 2", torch.tensor([0.2, 0.3, 0.5]),
     torch.tensor([0.6, 0.4, 0.0])),
]
_GRID = 400  # uniform numbers u at the midpoints of 400 equal steps: exact to 1/400


def _output_distribution(answer: Any, p: torch.Tensor, q: torch.Tensor, what: str
                         ) -> torch.Tensor:
    """The distribution of the emitted token: x ~ q, then the answer's rule, averaged
    exactly over a grid of u."""
    total = torch.zeros_like(p)
    for x in range(len(p)):
        if q[x] == 0:
            continue
        for i in range(_GRID):
            u = (i + 0.5) / _GRID
            call = f"speculative_accept(p={show(p)}, q={show(q)}, x={x}, u={u:.4f}) for {what}"
            out = _call(answer, call, p.clone(), q.clone(), x, u)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise CheckFailed(f"{call} returned {type(out).__name__}; return a pair "
                                  "(accepted: bool, distribution: tensor of shape (V,))")
            accepted, dist = out
            if not isinstance(dist, torch.Tensor) or dist.shape != p.shape:
                raise CheckFailed(f"{call}: the distribution must be a tensor of shape "
                                  f"{tuple(p.shape)}; got {dist!r}")
            if (dist < -1e-6).any() or abs(float(dist.sum()) - 1) > 1e-4:
                raise CheckFailed(
                    f"{call}: the distribution {show(dist)} is not a probability distribution "
                    "(negative entries or a sum other than 1). The residual is max(0, p - q), "
                    "clamped at 0, then divided by its sum.")
            if bool(accepted) and not torch.allclose(dist, torch.eye(len(p))[x], atol=1e-6):
                raise CheckFailed(f"{call}: accepted, so the output token is x itself: return "
                                  f"a one-hot distribution on {x}; got {show(dist)}")
            total += q[x] * dist / _GRID
    return total


@exercise("ch05.speculative_accept", title="speculative decoding: the sampling rule",
          reference=reference_speculative_accept,
          wrong_answers=[_sample_resample_from_p, _sample_inverted_ratio, _sample_no_clamp,
                         _sample_always_accept])
def check_speculative_accept(answer: Any) -> None:
    require_callable(answer, "speculative_accept")
    for what, p, q in _SAMPLE_CASES:
        got = _output_distribution(answer, p, q, what)
        if torch.allclose(got, p, atol=4 / _GRID):
            continue
        hint = "Accept x when u < min(1, p[x] / q[x]); on rejection draw from max(0, p - q) " \
               "renormalised."
        if torch.allclose(got, q, atol=4 / _GRID):
            hint = ("The output follows the draft q: a draft token must be accepted only with "
                    "probability min(1, p[x] / q[x]) (u < that ratio).")
        elif torch.allclose(got, _output_distribution(_sample_resample_from_p, p, q, what),
                            atol=1e-4):
            hint = ("After a rejection, resample from the residual max(0, p - q) renormalised, "
                    "not from p: accepted draft tokens already supplied min(p, q) of each "
                    "token's probability, and only the missing part may be added.")
        elif torch.allclose(got, _output_distribution(_sample_inverted_ratio, p, q, what),
                            atol=1e-4):
            hint = "The acceptance ratio is p[x] / q[x] (target over draft), not q[x] / p[x]."
        raise CheckFailed(
            f"with target p = {show(p)} and draft q = {show(q)} ({what}), the token your rule "
            f"emits (x drawn from q, then accepted or resampled) is distributed as {show(got)}; "
            f"it must be p, whatever q. {hint}")
