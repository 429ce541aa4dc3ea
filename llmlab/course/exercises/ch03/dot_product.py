"""Chapter 03 exercise 1: scaled dot-product attention with a boolean mask (``attention``),
checked against llmlab.attention and ``F.scaled_dot_product_attention``."""

from __future__ import annotations

import math
from typing import Any

import torch

from llmlab import attention
from llmlab.course.checks import call_learner as _call
from llmlab.course.checks import exercise, expect_close, expect_shape, require_callable
from llmlab.course.exercises.ch03._common import NEG_INF, first_hint, noise

# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.attention


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(E), masked) v``; a query with every key masked gives zeros.

    >>> q = torch.tensor([[0.0, 2.0]]); k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> reference_attention(q, k, torch.tensor([[10.0], [20.0]]))
    tensor([[18.0443]])
    >>> reference_attention(q, k, torch.tensor([[10.0], [20.0]]), torch.tensor([[True, False]]))
    tensor([[10.]])
    """
    return attention.scaled_dot_product_attention(q, k, v, mask)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


def _attention_with(q, k, v, mask=None, *, scale=None, dim=-1, invert=False, naive=False):
    """Variants of attention, each with one classic mistake; fully masked rows give zeros."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(mask if invert else ~mask, NEG_INF)
    if naive:  # exp without subtracting the maximum: overflows to inf, inf / inf = NaN
        exps = scores.exp()
        weights = exps / exps.sum(dim, keepdim=True)
    else:
        weights = scores.softmax(dim)
    return (weights if naive else weights.nan_to_num(0.0)) @ v


def _attention_no_scale(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, scale=1.0)


def _attention_softmax_over_queries(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, dim=-2)


def _attention_mask_inverted(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, invert=True)


def _attention_naive_exp(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, naive=True)


def _attention_divides_by_d(q, k, v, mask=None):
    return _attention_with(q, k, v, mask, scale=1 / q.shape[-1])


# --------------------------------------------------------------------------------------------
# 1. Scaled dot-product attention with a boolean mask


def _attention_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
    padding = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]
    everything_masked = torch.ones(4, 6, dtype=torch.bool)
    everything_masked[2] = False  # query 2 is padding: no key to read
    return [
        ("one query, two keys (the worked example)", torch.tensor([[0.0, 2.0]]),
         torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[10.0], [20.0]]), None),
        ("q, k, v of shape (2, 3, 5, 16), no mask", noise(1, 2, 3, 5, 16), noise(2, 2, 3, 5, 16),
         noise(3, 2, 3, 5, 16), None),
        ("more keys than queries (L=3, S=8) and values of another width (Ev=5)",
         noise(4, 3, 8), noise(5, 8, 8), noise(6, 8, 5), None),
        ("a causal mask (6, 6) on (1, 2, 6, 8)", noise(7, 1, 2, 6, 8), noise(8, 1, 2, 6, 8),
         noise(9, 1, 2, 6, 8), torch.ones(6, 6, dtype=torch.bool).tril()),
        ("a padding mask (2, 1, 1, 7): the second sequence has 4 real keys",
         noise(10, 2, 2, 3, 4), noise(11, 2, 2, 7, 4), noise(12, 2, 2, 7, 3), padding),
        ("a single position (L = S = 1)", noise(13, 2, 1, 4), noise(14, 2, 1, 4),
         noise(15, 2, 1, 4), torch.ones(1, 1, dtype=torch.bool)),
        ("large scores (entries ~30, so q.k/sqrt(d) is in the thousands)",
         noise(16, 2, 4, 8, scale=30.0), noise(17, 2, 4, 8, scale=30.0), noise(18, 2, 4, 3),
         None),
        ("query 2 of 4 has every key masked (it must output zeros, not NaN)", noise(19, 4, 8),
         noise(20, 6, 8), noise(21, 6, 2), everything_masked),
    ]


_ATTENTION_MISTAKES = [
    (_attention_no_scale, "Divide the scores by sqrt(d) (d = q.shape[-1]) before the softmax."),
    (_attention_divides_by_d, "Scale by 1/sqrt(d), not 1/d."),
    (_attention_softmax_over_queries, "Softmax over the keys (dim=-1): each query's weights "
     "sum to 1, not each key's."),
    (_attention_mask_inverted, "True means 'may attend': fill the scores with -inf where the "
     "mask is False (masked_fill(~mask, -inf))."),
]


@exercise("ch03.attention", title="scaled dot-product attention with a mask",
          reference=reference_attention,
          wrong_answers=[_attention_no_scale, _attention_softmax_over_queries,
                         _attention_mask_inverted, _attention_naive_exp])
def check_attention(answer) -> None:
    require_callable(answer, "attention")
    for what, q, k, v, mask in _attention_cases():
        args = (q, k, v) if mask is None else (q, k, v, mask)
        call = f"attention(...) for {what}"
        got = _call(answer, call, *(a.clone() for a in args))
        expected = reference_attention(*args)
        expect_shape(got, expected.shape, f"{call}: the output")
        hint = first_hint(got, args, _ATTENTION_MISTAKES,
                           "softmax(q @ k.transpose(-2, -1) / sqrt(d), masked with -inf where "
                           "the mask is False) @ v.", atol=1e-4)
        if torch.isnan(got).any() or torch.isinf(got).any():
            if "large" in what:
                hint = ("exp() of large scores overflows to inf (inf/inf = NaN): subtract each "
                        "row's maximum first, or use torch.softmax, which does.")
            elif "every key masked" in what:
                hint = ("A row of only -inf has no softmax (0/0 = NaN). Set the weights of "
                        "masked keys to 0 after the softmax, e.g. "
                        "weights.masked_fill(~mask, 0.0).")
        expect_close(got, expected, call, atol=1e-4, hint=hint)
    q, k, v = noise(22, 1, 2, 5, 8), noise(23, 1, 2, 9, 8), noise(24, 1, 2, 9, 8)
    mask = torch.ones(5, 9, dtype=torch.bool).tril(diagonal=4)
    library = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    expect_close(_call(answer, "attention(...) on torch's example", q, k, v, mask), library,
                 "attention compared with F.scaled_dot_product_attention (bool attn_mask)",
                 atol=1e-4)
