"""Chapter 05 (decoding) exercises: the building blocks of text generation, checked against
llmlab.decoding and llmlab.attention (whose functions the tests check against transformers).

Six small functions: temperature, the top-k and top-p (nucleus) cut-offs, a greedy
generation loop, one step of beam search, and writing new keys and values into a
pre-allocated KV cache. Each check runs several cases, including awkward ones (a batch of
rows, ties, ``p = 1``, ``k`` larger than the vocabulary, ``-inf`` already present, the
first step of beam search where only beam 0 is live), says which case failed with the
expected and the actual value, and names the classic mistake when the answer matches one.

Cut-offs are compared tie-tolerantly: when several tokens tie at the boundary, keeping
any of them is right, as long as the number of tokens and their scores are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from llmlab import decoding
from llmlab.attention import KVCache
from llmlab.course.checks import CheckFailed, exercise, expect_shape, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.model import GPT, ModelConfig

NEG_INF = float("-inf")
Candidates = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.decoding and llmlab.attention


def reference_apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature``; a temperature <= 0 raises ``ValueError``.

    >>> reference_apply_temperature(torch.tensor([[2.0, 1.0, 0.0]]), 0.5)
    tensor([[4., 2., 0.]])
    """
    return decoding.apply_temperature(logits, temperature)


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


def reference_greedy_generate(
    model: GPT, input_ids: torch.Tensor, max_new_tokens: int,
) -> torch.Tensor:
    """``input_ids (B, T)`` followed by ``max_new_tokens`` greedy tokens, ``(B, T + n)``,
    each step recomputing the whole sequence (no cache), as the learner's loop does."""
    return decoding.generate(model, input_ids, max_new_tokens, use_cache=False)


def reference_beam_step(
    beam_scores: torch.Tensor, log_probs: torch.Tensor, num_candidates: int,
) -> Candidates:
    """The best ``num_candidates`` (beam, token) extensions, best first: their scores
    (the beam's summed log-probability plus the token's), beam indices and tokens
    (``llmlab.decoding.beam_step``, the step of ``beam_search``).

    >>> scores, beams, tokens = reference_beam_step(
    ...     torch.tensor([-1.0, -2.0]), torch.log(torch.tensor([[0.6, 0.4], [0.9, 0.1]])), 2)
    >>> beams.tolist(), tokens.tolist()      # both children of beam 0 beat beam 1 + token 0
    ([0, 0], [0, 1])
    >>> [round(s, 2) for s in scores.tolist()]   # -1 + log 0.6, -1 + log 0.4 (-2.11 is 3rd)
    [-1.51, -1.92]
    """
    return decoding.beam_step(beam_scores, log_probs, num_candidates)


def reference_kv_cache_update(
    cache_k: torch.Tensor, cache_v: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
    length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``k_new, v_new (B, H, T, D)`` into the buffers ``(B, H, max_len, D)`` at
    positions ``length .. length + T - 1``; return the filled part, positions ``0 .. length
    + T - 1``. This is ``llmlab.attention.KVCache.update`` for one layer.

    >>> cache_k, cache_v = torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2)
    >>> k, v = reference_kv_cache_update(cache_k, cache_v, torch.ones(1, 1, 1, 2),
    ...                                  torch.ones(1, 1, 1, 2), length=2)
    >>> k.shape, cache_k[0, 0, :, 0].tolist()
    (torch.Size([1, 1, 3, 2]), [0.0, 0.0, 1.0, 0.0])
    """
    cache = KVCache([cache_k], [cache_v])
    cache.length = length
    return cache.update(0, k_new, v_new)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


def _temperature_multiplies(logits, temperature):
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    return logits * temperature


def _temperature_returns_probabilities(logits, temperature):
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    return (logits / temperature).softmax(dim=-1)


def _temperature_in_place(logits, temperature):  # divides the caller's tensor
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    return logits.div_(temperature)


def _temperature_unchecked(logits, temperature):  # 0 gives inf and nan instead of an error
    return logits / temperature


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


def _greedy_reads_position_0(model, input_ids, max_new_tokens):  # logits[:, 0], not [:, -1]
    ids = input_ids
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = model(ids)[:, 0].argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
    return ids


def _greedy_never_appends(model, input_ids, max_new_tokens):  # always feeds the prompt
    ids = input_ids
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = model(input_ids)[:, -1].argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
    return ids


def _greedy_samples(model, input_ids, max_new_tokens):  # samples instead of taking the best
    ids = input_ids
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            probs = model(ids)[:, -1].softmax(dim=-1)
            next_id = torch.multinomial(probs, 1, generator=generator)
            ids = torch.cat([ids, next_id], dim=1)
    return ids


def _greedy_returns_new_only(model, input_ids, max_new_tokens):
    return reference_greedy_generate(model, input_ids, max_new_tokens)[:, input_ids.shape[1]:]


def _beam_without_beam_score(beam_scores, log_probs, num_candidates):
    best = log_probs.reshape(-1).topk(num_candidates)
    vocab = log_probs.shape[1]
    return best.values, best.indices // vocab, best.indices % vocab


def _beam_wrong_divisor(beam_scores, log_probs, num_candidates):  # // num_beams, not // vocab
    num_beams = log_probs.shape[0]
    best = (beam_scores[:, None] + log_probs).reshape(-1).topk(num_candidates)
    return best.values, best.indices // num_beams, best.indices % num_beams


def _beam_best_token_per_beam(beam_scores, log_probs, num_candidates):  # one child per beam
    best_log_prob, token = log_probs.max(dim=-1)
    scores = beam_scores + best_log_prob
    order = scores.argsort(descending=True)[:num_candidates]
    return scores[order], order, token[order]


def _beam_multiplies(beam_scores, log_probs, num_candidates):  # log-probabilities add
    vocab = log_probs.shape[1]
    best = (beam_scores[:, None] * log_probs).reshape(-1).topk(num_candidates)
    return best.values, best.indices // vocab, best.indices % vocab


def _cache_concatenates(cache_k, cache_v, k_new, v_new, length):  # never writes the buffers
    return (torch.cat([cache_k[:, :, :length], k_new], dim=2),
            torch.cat([cache_v[:, :, :length], v_new], dim=2))


def _cache_ignores_length(cache_k, cache_v, k_new, v_new, length):  # writes at position 0
    T = k_new.shape[2]
    cache_k[:, :, :T] = k_new
    cache_v[:, :, :T] = v_new
    return cache_k[:, :, :length + T], cache_v[:, :, :length + T]


def _cache_whole_buffer(cache_k, cache_v, k_new, v_new, length):  # empty slots included
    T = k_new.shape[2]
    cache_k[:, :, length:length + T] = k_new
    cache_v[:, :, length:length + T] = v_new
    return cache_k, cache_v


def _cache_returns_old_only(cache_k, cache_v, k_new, v_new, length):  # [:length]: new ones lost
    T = k_new.shape[2]
    cache_k[:, :, length:length + T] = k_new
    cache_v[:, :, length:length + T] = v_new
    return cache_k[:, :, :length], cache_v[:, :, :length]


# --------------------------------------------------------------------------------------------
# Helpers for the checks



def _show(t: torch.Tensor) -> str:
    return str([round(v, 4) if math.isfinite(v) else v for v in t.tolist()])


def _tokens(indices: list[int]) -> str:
    return f"{len(indices)} token{'s' if len(indices) != 1 else ''} {indices}"


def _same(a: Any, b: torch.Tensor) -> bool:
    """Equal shapes and values, with -inf in the same places."""
    return (isinstance(a, torch.Tensor) and a.shape == b.shape and a.is_floating_point()
            and torch.equal(torch.isneginf(a), torch.isneginf(b))
            and torch.allclose(a.masked_fill(torch.isneginf(a), 0).float(),
                               b.masked_fill(torch.isneginf(b), 0).float(), atol=1e-5))


def _matching_hint(got: Any, args: tuple, wrong_answers: list[tuple[Callable[..., Any], str]],
                   default: str) -> str:
    """The hint of the first plausible mistake whose output on ``args`` equals the learner's."""
    for wrong, hint in wrong_answers:
        try:
            if _same(got, wrong(*(a.clone() if isinstance(a, torch.Tensor) else a
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
        raise CheckFailed(f"{call}: row {row} contains NaN ({_show(got[row])}). {hint}")
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
                f"{_show(logits[row])}). {hint}")


# --------------------------------------------------------------------------------------------
# 1. Temperature

_g = torch.Generator().manual_seed(5)
_TEMPERATURE_CASES: list[tuple[str, torch.Tensor, float]] = [
    ("one row, temperature 0.5", torch.tensor([[2.0, 1.0, 0.0, -1.0]]), 0.5),
    ("a batch of 3 rows, temperature 2", 3 * torch.randn(3, 8, generator=_g), 2.0),
    ("temperature 1 (no change)", torch.tensor([[0.3, -1.2, 2.5]]), 1.0),
    ("-inf already present (a token removed earlier), temperature 0.7",
     torch.tensor([[1.0, NEG_INF, -2.0, NEG_INF, 0.5]]), 0.7),
]


@exercise("ch05.temperature", title="temperature", reference=reference_apply_temperature,
          wrong_answers=[_temperature_multiplies, _temperature_returns_probabilities,
                         _temperature_in_place, _temperature_unchecked])
def check_temperature(answer) -> None:
    require_callable(answer, "apply_temperature")
    for what, logits, temperature in _TEMPERATURE_CASES:
        call = f"apply_temperature(logits, {temperature}) for {what}"
        given = logits.clone()
        got = _call(answer, call, given, temperature)
        expected = reference_apply_temperature(logits, temperature)
        if not torch.equal(torch.isneginf(given), torch.isneginf(logits)) or not torch.allclose(
                given.nan_to_num(neginf=0.0), logits.nan_to_num(neginf=0.0)):
            raise CheckFailed(f"{call} changed the caller's logits (in-place division such as "
                              "logits /= t or logits.div_(t)). Return a new tensor: logits / t.")
        if _same(got, expected):
            continue
        hint = _matching_hint(got, (logits, temperature), [
            (_temperature_multiplies,
             "Divide by the temperature: a small temperature must make scores further apart."),
            (_temperature_returns_probabilities,
             "Return scores (logits), not probabilities: the cut-offs and softmax come later."),
        ], "Divide every logit by the temperature; -inf stays -inf.")
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{call} returned {type(got).__name__}, expected a tensor. {hint}")
        expect_shape(got, expected.shape, f"{call} returned a tensor that")
        raise CheckFailed(f"{call}: row 0 is {_show(got[0])}, expected {_show(expected[0])}. "
                          f"{hint}")
    for bad in (0.0, -1.0):
        call = f"apply_temperature(logits, {bad})"
        try:
            got = answer(torch.tensor([[1.0, 2.0]]), bad)
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as error:
            raise CheckFailed(f"{call} raised {type(error).__name__}: {error}; raise a "
                              "ValueError saying the temperature must be > 0.") from error
        raise CheckFailed(
            f"{call} returned {got!r} instead of raising ValueError. Dividing by 0 gives inf "
            "and nan (and a negative temperature prefers the worst token): raise "
            "ValueError(f'temperature must be > 0, got {temperature}'). Greedy decoding is "
            "what temperature -> 0 tends to.")


# --------------------------------------------------------------------------------------------
# 2. Top-k

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
        if _same(got, expected):
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
        raise CheckFailed(f"{call}: row 0 is {_show(got[0])}, expected {_show(expected[0])}. "
                          f"{hint}")


# --------------------------------------------------------------------------------------------
# 3. Top-p

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
        if _same(got, expected):
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


# --------------------------------------------------------------------------------------------
# 4. The greedy loop


@functools.cache
def _tiny_model() -> GPT:
    """A small random Llama-style model whose greedy output does not just repeat a token."""
    config = ModelConfig.llama_style(vocab_size=48, context_length=64, n_layer=2, d_model=32,
                                     n_head=4, n_kv_head=2, tie_embeddings=False)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = GPT(config)
    with torch.no_grad():  # a larger output layer: decisive logits (best token p ~ 0.3)
        model.lm_head.weight.mul_(10)
    return model.eval()


_GREEDY_CASES: list[tuple[str, list[list[int]], int]] = [
    ("one prompt of 3 tokens, 8 new tokens", [[1, 2, 3]], 8),
    ("a batch of 2 prompts, 6 new tokens", [[5, 9, 14, 2], [40, 7, 7, 30]], 6),
    ("a one-token prompt, 5 new tokens", [[11]], 5),
    ("0 new tokens (the prompt comes back unchanged)", [[4, 8]], 0),
]


@exercise("ch05.greedy_generate", title="the greedy generation loop",
          reference=reference_greedy_generate,
          wrong_answers=[_greedy_reads_position_0, _greedy_never_appends, _greedy_samples,
                         _greedy_returns_new_only])
def check_greedy_generate(answer) -> None:
    require_callable(answer, "greedy_generate")
    model = _tiny_model()
    for what, prompt, n in _GREEDY_CASES:
        input_ids = torch.tensor(prompt)
        call = f"greedy_generate(model, {prompt}, {n}) for {what}"
        got = _call(answer, call, model, input_ids.clone(), n)
        expected = reference_greedy_generate(model, input_ids, n)
        B, T = input_ids.shape
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (B, n) and n:
            raise CheckFailed(f"{call} returned shape {tuple(got.shape)}: only the new tokens. "
                              f"Return the whole sequences, prompt first: shape {(B, T + n)}.")
        expect_shape(got, expected.shape, f"{call} returned a tensor that")
        if got.is_floating_point():
            raise CheckFailed(f"{call} returned dtype {got.dtype}: token ids are integers "
                              "(argmax gives int64).")
        if not torch.equal(got[:, :T], input_ids):
            raise CheckFailed(f"{call}: the first {T} tokens should be the prompt {prompt}, "
                              f"got {got[:, :T].tolist()}.")
        if torch.equal(got, expected):
            continue
        row, step = (int(i) for i in (got != expected).nonzero()[0])
        hint = "Each step: logits = model(ids); take the argmax of the LAST position's row, " \
            "append it to ids, and feed the longer ids at the next step."
        if torch.equal(got, _greedy_reads_position_0(model, input_ids, n)):
            hint = ("You read the logits of position 0. model(ids) has shape (B, T, vocab); the "
                    "next token is predicted by the last position: logits[:, -1].")
        elif torch.equal(got, _greedy_never_appends(model, input_ids, n)):
            hint = ("Every step saw only the prompt: feed the sequence with the tokens "
                    "generated so far (ids = torch.cat([ids, next_id], dim=1)).")
        elif n > 1 and (got[:, T:] == got[:, T:T + 1]).all() and not torch.equal(got, expected):
            hint = ("Every new token is the same: is the growing sequence fed back to the "
                    "model?")
        raise CheckFailed(
            f"{call}: row {row}, new token {step - T} is {int(got[row, step])}, expected "
            f"{int(expected[row, step])} (got {got[row, T:].tolist()}, expected "
            f"{expected[row, T:].tolist()}). {hint}")


# --------------------------------------------------------------------------------------------
# 5. One step of beam search


def _log_probs(logits: list[list[float]]) -> torch.Tensor:
    return torch.tensor(logits).log_softmax(dim=-1)


_g = torch.Generator().manual_seed(7)
_SAME_ROW = _log_probs([[1.0, 3.0, 0.0, 2.5, -1.0, 0.5, 2.0, -2.0]])
_BEAM_CASES: list[tuple[str, torch.Tensor, torch.Tensor, int]] = [
    ("2 beams, 5 tokens, 2 candidates", torch.tensor([-0.5, -1.2]),
     _log_probs([[1.0, 2.0, 0.0, -1.0, 0.5], [3.0, 0.0, 0.0, 0.0, 2.0]]), 2),
    ("the first step: only beam 0 is live (the others, copies of it, score -1e9)",
     torch.tensor([0.0, -1e9, -1e9]), _SAME_ROW.repeat(3, 1), 3),
    ("one beam far ahead (all candidates extend beam 0)", torch.tensor([-0.1, -5.0, -6.0]),
     _log_probs([[2.0, 1.9, 1.8, 0.0], [5.0, 0.0, 0.0, 0.0], [0.0, 6.0, 0.0, 0.0]]), 3),
    ("ties: two beams with equal scores and equal rows", torch.tensor([-1.0, -1.0]),
     _SAME_ROW.repeat(2, 1), 3),
    ("4 beams, 2 x 4 candidates (as beam search keeps spares for EOS)",
     -torch.rand(4, generator=_g) * 3, torch.randn(4, 10, generator=_g).log_softmax(-1), 8),
    ("a single beam (greedy)", torch.tensor([-2.0]), _log_probs([[0.0, 1.0, 3.0, 2.0]]), 1),
]


def _as_candidates(got: Any, k: int, call: str) -> Candidates:
    if not isinstance(got, tuple | list) or len(got) != 3:
        raise CheckFailed(f"{call} returned {type(got).__name__}; expected a tuple (scores, "
                          "beam_indices, tokens) of three tensors")
    scores, beams, tokens = got
    for name, value in (("scores", scores), ("beam_indices", beams), ("tokens", tokens)):
        expect_shape(value, (k,), f"{call}: {name}")
    if beams.is_floating_point() or tokens.is_floating_point():
        raise CheckFailed(f"{call}: beam_indices and tokens must be integer tensors, got "
                          f"{beams.dtype} and {tokens.dtype} (use // and %, not /).")
    return scores, beams, tokens


@exercise("ch05.beam_step", title="one step of beam search", reference=reference_beam_step,
          wrong_answers=[_beam_without_beam_score, _beam_wrong_divisor,
                         _beam_best_token_per_beam, _beam_multiplies])
def check_beam_step(answer) -> None:
    require_callable(answer, "beam_step")
    for what, beam_scores, log_probs, k in _BEAM_CASES:
        num_beams, vocab = log_probs.shape
        call = f"beam_step(beam_scores, log_probs, {k}) for {what}"
        got = _call(answer, call, beam_scores.clone(), log_probs.clone(), k)
        expected_scores, _, _ = reference_beam_step(beam_scores, log_probs, k)
        scores, beams, tokens = _as_candidates(got, k, call)
        hint = "Add each beam's score to its row of log-probs, flatten to num_beams * vocab, " \
            "take topk(num_candidates), then beam = index // vocab and token = index % vocab."
        for wrong, why in (
            (_beam_without_beam_score, "Add each beam's score to its log-probs before choosing: "
             "a candidate's score is the whole sequence's log-probability."),
            (_beam_wrong_divisor, "Flattening (num_beams, vocab) row by row puts (beam, token) "
             "at index beam * vocab + token: divide by the vocabulary size, not by num_beams."),
            (_beam_best_token_per_beam, "Candidates are all (beam, token) pairs: one beam may "
             "have several of the best children, another none."),
            (_beam_multiplies, "Log-probabilities add (probabilities multiply): use "
             "beam_scores[:, None] + log_probs."),
        ):
            wrong_scores, wrong_beams, wrong_tokens = wrong(beam_scores, log_probs, k)
            if wrong_beams.shape == beams.shape and torch.equal(wrong_beams, beams) and \
                    torch.equal(wrong_tokens, tokens):
                hint = why
                break
        out_of_range = (beams < 0) | (beams >= num_beams) | (tokens < 0) | (tokens >= vocab)
        if out_of_range.any():
            i = int(out_of_range.nonzero()[0])
            raise CheckFailed(f"{call}: candidate {i} is beam {int(beams[i])}, token "
                              f"{int(tokens[i])}, but there are {num_beams} beams and {vocab} "
                              f"tokens. {hint}")
        pairs = list(zip(beams.tolist(), tokens.tolist(), strict=True))
        if len(set(pairs)) != len(pairs):
            raise CheckFailed(f"{call}: the candidates {pairs} contain the same (beam, token) "
                              f"twice. {hint}")
        true_scores = beam_scores[beams] + log_probs[beams, tokens]
        if not torch.allclose(scores.float(), true_scores, atol=1e-4, rtol=1e-5):
            i = int((scores.float() - true_scores).abs().argmax())
            raise CheckFailed(
                f"{call}: candidate {i} (beam {pairs[i][0]}, token {pairs[i][1]}) has score "
                f"{scores[i].item():.4f}, but beam_scores[{pairs[i][0]}] + log_probs"
                f"[{pairs[i][0]}, {pairs[i][1]}] = {true_scores[i].item():.4f}. {hint}")
        if (scores[1:] > scores[:-1] + 1e-6).any():
            raise CheckFailed(f"{call}: the scores {_show(scores)} are not best first. "
                              "topk returns them sorted (largest first).")
        if not torch.allclose(scores.float(), expected_scores, atol=1e-4, rtol=1e-5):
            raise CheckFailed(
                f"{call}: your candidates {pairs} score {_show(scores)}, but the best {k} "
                f"score {_show(expected_scores)}. {hint}")


# --------------------------------------------------------------------------------------------
# 6. The KV cache update


class _LearnerCache(KVCache):
    """llmlab's KVCache with its update replaced by the learner's function."""

    def __init__(self, keys, values, update_fn) -> None:
        super().__init__(keys, values)
        self.update_fn = update_fn

    def update(self, layer, k, v):
        return self.update_fn(self.keys[layer], self.values[layer], k, v, self.length)


_KV_WRITES: list[tuple[str, int]] = [  # (what, positions written), in order, into 8 slots
    ("the prompt (3 positions) into an empty cache", 3),
    ("one generated token after 3 stored positions", 1),
    ("one more token after 4", 1),
    ("3 positions at once after 5, filling the cache to its last slot", 3),
]


@exercise("ch05.kv_cache_update", title="the KV cache update",
          reference=reference_kv_cache_update,
          wrong_answers=[_cache_concatenates, _cache_ignores_length, _cache_whole_buffer,
                         _cache_returns_old_only])
def check_kv_cache_update(answer) -> None:
    require_callable(answer, "kv_cache_update")
    B, H, max_len, D = 2, 3, 8, 4
    g = torch.Generator().manual_seed(8)
    mine_k, mine_v = torch.zeros(B, H, max_len, D), torch.zeros(B, H, max_len, D)
    ref_k, ref_v = torch.zeros(B, H, max_len, D), torch.zeros(B, H, max_len, D)
    length = 0
    hints = {
        _cache_concatenates: "The buffers were never written: store the new keys and values "
        "IN the buffers (cache_k[:, :, length:length + T] = k_new), so the next call finds them.",
        _cache_ignores_length: "The new positions go after the `length` stored ones: slice "
        "[length:length + T] on dimension 2, not [:T].",
        _cache_whole_buffer: "Return only the filled part, positions 0 .. length + T - 1: the "
        "empty slots would be attended to as if they were tokens.",
        _cache_returns_old_only: "Return everything stored INCLUDING the new positions: "
        "[:, :, :length + T].",
    }
    for what, T in _KV_WRITES:
        k_new, v_new = torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)
        call = f"kv_cache_update(cache_k, cache_v, k_new, v_new, length={length}) for {what}"
        before_k, before_v = mine_k.clone(), mine_v.clone()
        got = _call(answer, call, mine_k, mine_v, k_new.clone(), v_new.clone(), length)
        expected = reference_kv_cache_update(ref_k, ref_v, k_new, v_new, length)
        hint = ("Write k_new into cache_k[:, :, length:length + T] (same for v), then return "
                "cache_k[:, :, :length + T] and cache_v[:, :, :length + T].")
        for wrong, why in hints.items():
            try:
                if all(_same(a, b) for a, b in zip(got, wrong(before_k.clone(), before_v.clone(),
                                                              k_new, v_new, length), strict=True)):
                    hint = why
                    break
            except Exception:
                continue
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise CheckFailed(f"{call} returned {type(got).__name__}; expected a tuple (keys, "
                              f"values). {hint}")
        for name, mine, theirs in (("keys", got[0], expected[0]), ("values", got[1], expected[1])):
            if not isinstance(mine, torch.Tensor) or mine.shape != theirs.shape:
                shape = tuple(mine.shape) if isinstance(mine, torch.Tensor) else type(mine).__name__
                raise CheckFailed(f"{call}: the returned {name} have shape {shape}, expected "
                                  f"{tuple(theirs.shape)} (positions 0..{length + T - 1}). {hint}")
            if not torch.allclose(mine, theirs):
                pos = int((mine - theirs).abs().amax(dim=(0, 1, 3)).argmax())
                raise CheckFailed(f"{call}: the returned {name} at position {pos} differ from "
                                  f"what was stored there. {hint}")
        if not torch.equal(mine_k, ref_k) or not torch.equal(mine_v, ref_v):
            raise CheckFailed(f"{call}: after the call the buffers do not hold the new "
                              f"positions {length}..{length + T - 1} (or other slots changed). "
                              f"{hint}")
        length += T
    _check_cached_equals_uncached(answer)


def _check_cached_equals_uncached(answer) -> None:
    """With the learner's update inside a real model, feeding tokens one at a time through the
    cache must give the logits of recomputing the whole sequence."""
    model = _tiny_model()
    ids = torch.tensor([[3, 14, 15, 9, 2, 6, 5, 35, 8], [27, 1, 8, 28, 18, 28, 4, 5, 9]])
    template = KVCache.allocate(model.config, ids.shape[0], ids.shape[1])
    cache = _LearnerCache(template.keys, template.values, answer)
    with torch.no_grad():
        full = model(ids)
        pieces = [(0, 5), (5, 6), (6, 7), (7, 9)]  # a prompt of 5, then 1, 1 and 2 tokens
        for start, end in pieces:
            what = (f"a 2-layer model using your kv_cache_update, fed tokens {start}..{end - 1} "
                    f"after {start} cached ones")
            got = _call(lambda s=start, e=end: model(ids[:, s:e], cache=cache), what)
            if not torch.allclose(got, full[:, start:end], atol=1e-4):
                diff = (got - full[:, start:end]).abs().max().item()
                raise CheckFailed(f"{what}: the logits differ from recomputing the whole "
                                  f"sequence without a cache (max difference {diff:.3g}).")
