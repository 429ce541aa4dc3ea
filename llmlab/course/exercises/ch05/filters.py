"""Chapter 05 exercises 1 and 2: the cut-offs applied to the next-token scores before
sampling: top-k (``top_k_filter``) and top-p (nucleus, ``top_p_filter``), checked against
llmlab.decoding.

Cut-offs are compared tie-tolerantly: when several tokens tie at the boundary, keeping
any of them is right, as long as the number of tokens and their scores are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmlab import decoding
from llmlab.course.checks import CheckFailed, exercise, expect_shape, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch05._common import NEG_INF, same, show

# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.decoding


def reference_top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep each row's ``k`` best scores (and any tied with the k-th); the rest become -inf.

    >>> reference_top_k_filter(torch.tensor([[3.0, 1.0, 1.0, 0.0]]), 2)  # a tie for 2nd
    tensor([[3., 1., 1., -inf]])
    """
    return decoding.top_k_filter(logits, k)


def reference_top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep each row's smallest set of best tokens whose probabilities reach ``p``.

    >>> reference_top_p_filter(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 0.7)  # 0.64 + 0.24
    tensor([[2., 1., -inf, -inf]])
    """
    return decoding.top_p_filter(logits, p)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


def _top_k_exactly_k(logits, k):  # keeps exactly k indices: ties with the k-th are dropped
    k = min(k, logits.shape[-1])
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(-1, logits.topk(k, dim=-1).indices, True)
    return logits.masked_fill(~keep, NEG_INF)


def _top_k_drops_kth(logits, k):  # <= instead of <: the k-th best goes too
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits <= kth, NEG_INF)


def _top_k_zero_fill(logits, k):  # removed tokens get 0, which is still a probable score
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, 0.0)


def _top_k_smallest(logits, k):  # topk(largest=False): keeps the worst tokens
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1, largest=False).values[:, -1:]
    return logits.masked_fill(logits > kth, NEG_INF)


def _filter_sorted(logits, remove_sorted, order):
    return logits.masked_fill(remove_sorted.scatter(-1, order, remove_sorted), NEG_INF)


def _top_p_drops_crossing(logits, p):  # keeps tokens while the running total stays <= p
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) > p
    remove[:, 0] = False
    return _filter_sorted(logits, remove, order)


def _top_p_no_fallback(logits, p):  # the same, and a row whose best token exceeds p is emptied
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    remove = sorted_logits.softmax(dim=-1).cumsum(dim=-1) > p
    return _filter_sorted(logits, remove, order)


def _top_p_ascending(logits, p):  # sorted the wrong way: the unlikely tail is kept
    sorted_logits, order = logits.sort(dim=-1)
    probs = sorted_logits.softmax(dim=-1)
    remove = probs.cumsum(dim=-1) - probs >= p
    remove[:, 0] = False
    return _filter_sorted(logits, remove, order)


def _top_p_unsorted(logits, p):  # running total in vocabulary order, never sorted
    probs = logits.softmax(dim=-1)
    remove = probs.cumsum(dim=-1) - probs >= p
    remove[:, 0] = False
    return logits.masked_fill(remove, NEG_INF)


def _top_p_not_scattered_back(logits, p):  # returns the filtered scores in sorted order
    sorted_logits, _ = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    remove = probs.cumsum(dim=-1) - probs >= p
    return sorted_logits.masked_fill(remove, NEG_INF)


# --------------------------------------------------------------------------------------------
# Helpers for the checks


def _tokens(indices: list[int]) -> str:
    return f"{len(indices)} token{'s' if len(indices) != 1 else ''} {indices}"


def _matching_hint(got: Any, args: tuple, wrong_answers: list[tuple[Callable[..., Any], str]],
                   default: str) -> str:
    """The hint of the first plausible mistake whose output on ``args`` equals the learner's."""
    for wrong, hint in wrong_answers:
        try:
            if same(got, wrong(*(a.clone() if isinstance(a, torch.Tensor) else a
                                  for a in args))):
                return hint
        except Exception:  # a wrong answer may itself fail on this case: then it is not it
            continue
    return default


def _compare_filtered(got: Any, logits: torch.Tensor, expected: torch.Tensor, call: str,
                      hint: str) -> None:
    """A cut-off's output: kept scores unchanged, removed ones -inf, and per row the same
    number of tokens with the same scores as the reference (any choice among ties)."""
    expect_shape(got, expected.shape, f"{call} returned a tensor that")
    if not got.is_floating_point():
        raise CheckFailed(f"{call} returned dtype {got.dtype}: return the logits (floats) with "
                          "the removed tokens set to float('-inf')")
    if torch.isnan(got).any():
        row = int(torch.isnan(got).any(dim=-1).nonzero()[0])
        raise CheckFailed(f"{call}: row {row} contains NaN ({show(got[row])}). {hint}")
    for row in range(expected.shape[0]):
        kept = ~torch.isneginf(got[row])
        changed = kept & ~torch.isclose(got[row], logits[row], atol=1e-6)
        if changed.any():
            j = int(changed.nonzero()[0])
            raise CheckFailed(
                f"{call}: row {row}, token {j} has score {got[row, j].item():.4g} but its logit "
                f"is {logits[row, j].item():.4g}. Keep the scores of kept tokens unchanged and "
                f"set removed tokens to float('-inf') (0 is still a likely score). {hint}")
        want = ~torch.isneginf(expected[row])
        same_scores = int(kept.sum()) == int(want.sum()) and torch.allclose(
            got[row][kept].sort().values, expected[row][want].sort().values, atol=1e-6)
        if not same_scores:
            mine, theirs = kept.nonzero().flatten().tolist(), want.nonzero().flatten().tolist()
            raise CheckFailed(
                f"{call}: row {row} keeps {_tokens(mine)}, expected {_tokens(theirs)} (logits "
                f"{show(logits[row])}). {hint}")


# --------------------------------------------------------------------------------------------
# 1. Top-k

_g = torch.Generator().manual_seed(6)
_TOP_K_CASES: list[tuple[str, torch.Tensor, int]] = [
    ("one row, k = 2", torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 2),
    ("a batch of 3 rows, k = 3", 3 * torch.randn(3, 10, generator=_g), 3),
    ("ties with the k-th best (three tokens share the 2nd place), k = 2",
     torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0, -2.0]]), 2),
    ("k = 1 (greedy)", torch.tensor([[0.1, 0.7, -0.3, 0.6]]), 1),
    ("k equal to the vocabulary size", torch.tensor([[0.5, -0.5, 1.5]]), 3),
    ("k larger than the vocabulary", torch.tensor([[0.5, -0.5, 1.5], [2.0, 2.0, 0.0]]), 10),
    ("-inf already present, more than the finite tokens asked for",
     torch.tensor([[NEG_INF, 2.0, NEG_INF, 1.0, 0.0]]), 4),
]


@exercise("ch05.top_k", title="the top-k cut-off", reference=reference_top_k_filter,
          wrong_answers=[_top_k_exactly_k, _top_k_drops_kth, _top_k_zero_fill, _top_k_smallest])
def check_top_k(answer) -> None:
    require_callable(answer, "top_k_filter")
    for what, logits, k in _TOP_K_CASES:
        call = f"top_k_filter(logits, {k}) for {what}"
        got = _call(answer, call, logits.clone(), k,
                    hint="k may exceed the vocabulary: use min(k, logits.shape[-1]).")
        expected = reference_top_k_filter(logits, k)
        if same(got, expected):
            continue
        hint = _matching_hint(got, (logits, k), [
            (_top_k_exactly_k,
             "Tokens tied with the k-th best are kept too (as transformers does): compare each "
             "score with the k-th best value (logits < kth -> -inf) instead of keeping exactly "
             "the k indices topk returned."),
            (_top_k_drops_kth,
             "Off by one: the k-th best itself stays. Remove scores strictly below it (<, not "
             "<=)."),
            (_top_k_smallest,
             "Keep the highest scores: topk's default largest=True."),
        ], "Per row, find the k-th best score (logits.topk(k, dim=-1).values[:, -1:]) and set "
           "every score below it to -inf.")
        _compare_filtered(got, logits, expected, call, hint)
        raise CheckFailed(f"{call}: row 0 is {show(got[0])}, expected {show(expected[0])}. "
                          f"{hint}")


# --------------------------------------------------------------------------------------------
# 2. Top-p

_g = torch.Generator().manual_seed(0)
_TOP_P_CASES: list[tuple[str, torch.Tensor, float]] = [
    ("probabilities 0.64, 0.24, 0.09, 0.03 and p = 0.7 (the best alone is not enough)",
     torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 0.7),
    ("the same tokens in another order", torch.tensor([[-1.0, 0.0, 2.0, 1.0]]), 0.7),
    ("p = 0.5, below the best token's 0.64 (keep the best alone)",
     torch.tensor([[0.0, 2.0, -1.0, 1.0]]), 0.5),
    ("p = 0.9 (three tokens reach 0.97)", torch.tensor([[1.0, -1.0, 0.0, 2.0]]), 0.9),
    ("a batch of 3 rows, p = 0.8", 2 * torch.randn(3, 12, generator=_g), 0.8),
    ("two tied best tokens (0.42 each), p = 0.5", torch.tensor([[1.0, 0.0, 1.0, -3.0]]), 0.5),
    ("a tiny p = 0.01 (at least one token always stays)",
     torch.tensor([[0.2, 0.1, 0.0, 0.3]]), 0.01),
    ("p = 1 (everything stays) with -inf present",
     torch.tensor([[0.5, NEG_INF, 0.0, -1.0, 1.0]]), 1.0),
    ("-inf present, p = 0.9", torch.tensor([[NEG_INF, 1.0, NEG_INF, 0.0, 2.0]]), 0.9),
]


@exercise("ch05.top_p", title="the top-p (nucleus) cut-off", reference=reference_top_p_filter,
          wrong_answers=[_top_p_drops_crossing, _top_p_no_fallback, _top_p_ascending,
                         _top_p_unsorted])
def check_top_p(answer) -> None:
    require_callable(answer, "top_p_filter")
    for what, logits, p in _TOP_P_CASES:
        call = f"top_p_filter(logits, {p}) for {what}"
        got = _call(answer, call, logits.clone(), p)
        expected = reference_top_p_filter(logits, p)
        if same(got, expected):
            continue
        hint = _matching_hint(got, (logits, p), [
            (_top_p_drops_crossing,
             "You removed the token whose probability makes the total cross p. Keep it: the "
             "kept set is the smallest one whose total reaches p, so remove a token only when "
             "the tokens before it already reach p (cumsum - probs >= p)."),
            (_top_p_no_fallback,
             "A row lost every token: when the best token alone has more than p, it must still "
             "stay (at least one token is always kept). And keep the token that crosses p."),
            (_top_p_ascending,
             "Sort descending (best first): the nucleus is made of the most likely tokens."),
            (_top_p_unsorted,
             "Sort the probabilities (best first) before the running total: in vocabulary "
             "order the total means nothing."),
            (_top_p_not_scattered_back,
             "The result must be in vocabulary order: map the sorted decisions back with "
             "scatter (or index with the sort order) before masking the original logits."),
        ], "Sort probabilities best first; remove a token when the ones before it already add "
           "up to p or more; always keep the best; then map back to vocabulary order.")
        _compare_filtered(got, logits, expected, call, hint)
