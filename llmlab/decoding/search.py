"""Search instead of sampling: beam search keeps the ``num_beams`` most likely
continuations; contrastive search penalises tokens whose hidden state repeats the
context's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmlab.attention import KVCache
from llmlab.decoding.loop import check_model_inputs
from llmlab.model import GPT, eval_mode

# ----------------------------------------------------------------------------- beam search


@dataclass
class Hypothesis:
    """One finished beam: its new tokens and their summed log-probability."""

    tokens: list[int]
    log_prob: float
    score: float  # log_prob / len(tokens) ** length_penalty


def beam_step(
    beam_scores: torch.Tensor, log_probs: torch.Tensor, num_candidates: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of beam search: the best ``num_candidates`` (beam, token) extensions, best
    first, as ``(scores, beam indices, tokens)``. A candidate's score is its beam's summed
    log-probability ``beam_scores (num_beams,)`` plus the token's ``log_probs (num_beams,
    vocab)``; the flattened index ``beam * vocab + token`` gives back both.

    >>> scores, beams, tokens = beam_step(
    ...     torch.tensor([-1.0, -2.0]), torch.log(torch.tensor([[0.6, 0.4], [0.9, 0.1]])), 2)
    >>> beams.tolist(), tokens.tolist()      # both children of beam 0 beat beam 1 + token 0
    ([0, 0], [0, 1])
    >>> [round(s, 2) for s in scores.tolist()]   # -1 + log 0.6, -1 + log 0.4 (-2.11 is 3rd)
    [-1.51, -1.92]
    """
    if beam_scores.dim() != 1 or log_probs.dim() != 2 or \
            log_probs.shape[0] != beam_scores.shape[0]:
        raise ValueError(f"expected beam_scores (num_beams,) and log_probs (num_beams, vocab); "
                         f"got {tuple(beam_scores.shape)} and {tuple(log_probs.shape)}")
    vocab = log_probs.shape[1]
    totals = (log_probs + beam_scores[:, None]).reshape(-1)  # row-major: beam * vocab + token
    best = totals.topk(num_candidates)
    return best.values, best.indices // vocab, best.indices % vocab


@torch.no_grad()
def beam_search(
    model: GPT,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    num_beams: int = 4,
    *,
    length_penalty: float = 1.0,
    early_stopping: bool = True,
    eos_token_id: int | None = None,
) -> list[Hypothesis]:
    """Keep the ``num_beams`` most likely continuations at every step instead of one.

    Each step scores every (beam, next token) pair by the beam's summed log-probability
    plus the token's, and keeps the best ``2 * num_beams`` candidates: those ending in EOS
    (among the top ``num_beams``) become finished hypotheses, scored by
    ``log_prob / length ** length_penalty`` (``length_penalty > 0`` favours longer
    outputs), the best ``num_beams`` others carry on. When ``max_new_tokens`` is reached
    the live beams finish too. ``early_stopping`` stops as soon as ``num_beams``
    hypotheses are finished; otherwise search goes on while a live beam could still beat
    the worst finished one at its current length. This is transformers' beam search
    (``generate(num_beams=..., do_sample=False)``), written for one prompt.

    Returns the finished hypotheses, best first.
    """
    check_model_inputs(model, input_ids, max_new_tokens)
    if input_ids.shape[0] != 1:
        raise ValueError(f"beam_search takes one prompt, input_ids (1, T); got batch "
                         f"{input_ids.shape[0]}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an int >= 1; got {num_beams!r}")
    if max_new_tokens < 1:
        raise ValueError(f"beam_search needs max_new_tokens >= 1; got {max_new_tokens}")
    T = input_ids.shape[1]
    cache = KVCache.allocate(model.config, num_beams, T + max_new_tokens,
                             model.tok_emb.weight.dtype, input_ids.device)
    beams = input_ids.repeat(num_beams, 1)  # (num_beams, T + generated)
    # Only the first beam is live at the start: the others are copies of it.
    beam_scores = torch.full((num_beams,), -1e9, device=input_ids.device)
    beam_scores[0] = 0.0
    finished: list[Hypothesis] = []
    can_improve = True
    with eval_mode(model):
        for step in range(max_new_tokens):
            fresh = beams[:, cache.length:]
            log_probs = model(fresh, cache=cache)[:, -1].float().log_softmax(dim=-1)
            cand_scores, cand_beam, cand_token = beam_step(beam_scores, log_probs, 2 * num_beams)
            last_step = step == max_new_tokens - 1
            ends = (cand_token == eos_token_id) | last_step if eos_token_id is not None \
                else torch.full_like(cand_token, last_step, dtype=torch.bool)

            # Finished hypotheses: only candidates ranked in the top num_beams count.
            full = len(finished) == num_beams
            if can_improve and not (early_stopping and full):
                for rank in range(num_beams):
                    if ends[rank]:
                        tokens = beams[cand_beam[rank], T:].tolist() + [int(cand_token[rank])]
                        log_prob = float(cand_scores[rank])
                        score = log_prob / (len(tokens) ** length_penalty)
                        finished.append(Hypothesis(tokens, log_prob, score))
                finished = sorted(finished, key=lambda h: -h.score)[:num_beams]

            # Live beams: the best candidates that did not end.
            live = (cand_scores - ends.float() * 1e9).topk(num_beams).indices
            beam_scores = cand_scores[live] - ends[live].float() * 1e9
            order = cand_beam[live]
            cache.reorder(order)
            beams = torch.cat([beams[order], cand_token[live, None].to(beams.dtype)], dim=1)

            if bool(ends.all()) or (early_stopping and len(finished) == num_beams):
                break
            if len(finished) == num_beams:  # could a live beam still beat the worst?
                best_possible = float(beam_scores[0]) / ((step + 1) ** length_penalty)
                can_improve = best_possible > finished[-1].score
                if not can_improve:
                    break
    return finished


# ----------------------------------------------------------------------------- contrastive search


@torch.no_grad()
def contrastive_search(
    model: GPT,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    top_k: int = 4,
    penalty_alpha: float = 0.6,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """Contrastive search (Su et al., 2022): among the ``top_k`` most likely next tokens,
    pick the one maximising ``(1 - alpha) * p(token) - alpha * max_similarity``, where
    ``max_similarity`` is the highest cosine similarity between the candidate's hidden
    state and those of every earlier token. Likely tokens that would say something already
    said are penalised, which avoids greedy decoding's loops without sampling's
    randomness. ``penalty_alpha = 0`` is greedy decoding.
    """
    check_model_inputs(model, input_ids, max_new_tokens)
    if input_ids.shape[0] != 1:
        raise ValueError(f"contrastive_search takes one prompt (1, T); got batch "
                         f"{input_ids.shape[0]}")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1; got {top_k!r}")
    if not 0 <= penalty_alpha <= 1:
        raise ValueError(f"penalty_alpha must be in [0, 1]; got {penalty_alpha!r}")
    T = input_ids.shape[1]
    cache = KVCache.allocate(model.config, 1, T + max_new_tokens + 1,
                             model.tok_emb.weight.dtype, input_ids.device)
    with eval_mode(model):
        hidden = model.hidden_states(input_ids, cache=cache)[0]  # (T, d): the context so far
        logits = model.lm_head(hidden[-1:])  # (1, vocab)
        ids = input_ids
        for _ in range(max_new_tokens):
            probs, candidates = logits.float().softmax(-1).topk(top_k, dim=-1)  # (1, k)
            # Look one token ahead for every candidate at once: k copies of the cache.
            trial = KVCache(list(cache.keys), list(cache.values))
            trial.length = cache.length
            trial.reorder(torch.zeros(top_k, dtype=torch.long, device=ids.device))
            cand_hidden = model.hidden_states(candidates.T, cache=trial)[:, -1]  # (k, d)
            similarity = torch.nn.functional.cosine_similarity(
                cand_hidden[:, None, :], hidden[None, :, :], dim=-1)  # (k, context)
            score = (1 - penalty_alpha) * probs[0] - penalty_alpha * similarity.amax(dim=-1)
            best = int(score.argmax())
            token = candidates[:, best : best + 1]
            ids = torch.cat([ids, token.to(ids.dtype)], dim=1)
            trial.reorder(torch.tensor([best], device=ids.device))
            cache = trial
            hidden = torch.cat([hidden, cand_hidden[best : best + 1]], dim=0)
            logits = model.lm_head(cand_hidden[best : best + 1])
            if eos_token_id is not None and int(token) == eos_token_id:
                break
    return ids
