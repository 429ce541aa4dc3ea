"""Chapter 05 exercises 4 and 5: the greedy generation loop (``greedy_generate``) and one
step of beam search (``beam_step``), checked against llmlab.decoding's ``generate`` and
``beam_step``."""

from __future__ import annotations

from typing import Any

import torch

from llmlab import decoding
from llmlab.course.checks import CheckFailed, exercise, expect_shape, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch05._common import show, tiny_model
from llmlab.model import GPT

Candidates = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------
# References: the learner's functions, implemented with llmlab.decoding


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


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure each check fails them


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


# --------------------------------------------------------------------------------------------
# 4. The greedy loop


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
    model = tiny_model()
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
            raise CheckFailed(f"{call}: the scores {show(scores)} are not best first. "
                              "topk returns them sorted (largest first).")
        if not torch.allclose(scores.float(), expected_scores, atol=1e-4, rtol=1e-5):
            raise CheckFailed(
                f"{call}: your candidates {pairs} score {show(scores)}, but the best {k} "
                f"score {show(expected_scores)}. {hint}")
