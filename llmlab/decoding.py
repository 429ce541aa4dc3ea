"""Decoding: turning next-token logits into text, one strategy per small function.

A language model gives a score (logit) for every token of the vocabulary; decoding decides
which token comes next. The *logit processors* here reshape those scores (temperature,
top-k, top-p, min-p, penalties, biases, constraints); each is a pure function
``(logits (B, V), ...) -> logits (B, V)`` that sets the scores of removed tokens to
``-inf``, so that ``softmax`` gives them probability 0. The tests check each one against
the matching ``transformers`` ``LogitsProcessor`` on the same logits.

>>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
>>> top_k_filter(logits, 2)
tensor([[2., 1., -inf, -inf]])
>>> top_p_filter(logits, 0.7)  # the best token alone has p = 0.64 < 0.7: keep two
tensor([[2., 1., -inf, -inf]])
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex
import torch

from llmlab.model import GPT, KVCache, eval_mode

NEG_INF = float("-inf")


# ----------------------------------------------------------------------------- validation


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        kind = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a floating-point tensor (batch, vocab); got {kind}")
    if logits.dim() != 2:
        hint = " (for one sequence use logits[None])" if logits.dim() == 1 else ""
        raise ValueError(f"logits must be 2-D (batch, vocab); got shape "
                         f"{tuple(logits.shape)}{hint}")


def _check_input_ids(input_ids: torch.Tensor, logits: torch.Tensor) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError("input_ids must be an integer tensor (batch, time) of the tokens so far")
    if input_ids.dim() != 2 or input_ids.shape[0] != logits.shape[0]:
        raise ValueError(f"input_ids must be (batch={logits.shape[0]}, time); "
                         f"got shape {tuple(input_ids.shape)}")


def _check_keep(min_tokens_to_keep: int) -> None:
    if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep must be an int >= 1; got {min_tokens_to_keep!r}")


# ----------------------------------------------------------------------------- warpers


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by ``temperature``: below 1 sharpens the distribution, above 1
    flattens it. Greedy decoding is the limit ``temperature -> 0``.

    >>> apply_temperature(torch.tensor([[2.0, 1.0]]), 0.5)
    tensor([[4., 2.]])
    """
    _check_logits(logits)
    if not isinstance(temperature, int | float) or not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number > 0 (use greedy decoding for 0); "
                         f"got {temperature!r}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the ``k`` highest-scoring tokens of each row (ties with the k-th are kept too,
    as transformers does); the rest get ``-inf``.

    >>> top_k_filter(torch.tensor([[0.0, 3.0, 1.0]]), 1)
    tensor([[-inf, 3., -inf]])
    """
    _check_logits(logits)
    _check_keep(min_tokens_to_keep)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"top-k needs an int k >= 1; got {k!r}")
    k = min(max(k, min_tokens_to_keep), logits.shape[-1])
    kth_best = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth_best, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus sampling: keep the smallest set of best tokens whose probabilities add up
    to at least ``p``; the rest get ``-inf``. ``p = 1`` keeps everything.

    >>> top_p_filter(torch.tensor([[0.0, 0.0, 0.0, 0.0]]), 0.5)  # four equal tokens: two
    tensor([[-inf, -inf, 0., 0.]])
    """
    _check_logits(logits)
    _check_keep(min_tokens_to_keep)
    if not isinstance(p, int | float) or not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1]; got {p!r}")
    # Ascending order: a token goes when the tokens *below and including it* hold at most
    # 1 - p of the mass, i.e. the tokens above it already reach p.
    sorted_logits, order = logits.sort(dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= 1 - p
    remove_sorted[:, -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def min_p_filter(logits: torch.Tensor, min_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Keep the tokens whose probability is at least ``min_p`` times the best token's: a
    cut-off that tightens when the model is confident and loosens when it is not.

    >>> min_p_filter(torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])), 0.2)  # 0.05 < 0.1
    tensor([[-0.6931, -1.2040, -1.8971,    -inf]])
    """
    _check_logits(logits)
    _check_keep(min_tokens_to_keep)
    if not isinstance(min_p, int | float) or not 0 <= min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1]; got {min_p!r}")
    probs = logits.softmax(dim=-1)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    best = probs.topk(min(min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
    remove = remove.scatter(-1, best, False)
    return logits.masked_fill(remove, NEG_INF)


# ----------------------------------------------------------------------------- penalties


def repetition_penalty(
    logits: torch.Tensor, input_ids: torch.Tensor, penalty: float,
) -> torch.Tensor:
    """CTRL's repetition penalty: every token already in ``input_ids`` has its logit
    divided by ``penalty`` if positive, multiplied by it if negative (so > 1 always makes
    a repeat less likely), however many times it occurred.

    >>> repetition_penalty(torch.tensor([[2.0, -1.0, 3.0]]), torch.tensor([[0, 1, 0]]), 2.0)
    tensor([[ 1., -2.,  3.]])
    """
    _check_logits(logits)
    _check_input_ids(input_ids, logits)
    if not isinstance(penalty, int | float) or not penalty > 0:
        raise ValueError(f"repetition penalty must be > 0 (1 means none); got {penalty!r}")
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, input_ids.long(), True)
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def token_counts(input_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often each vocabulary entry occurs in each row: ``(B, T) -> (B, vocab_size)``.

    >>> token_counts(torch.tensor([[2, 0, 2]]), 4)
    tensor([[1, 0, 2, 0]])
    """
    counts = torch.zeros(input_ids.shape[0], vocab_size, dtype=torch.long, device=input_ids.device)
    return counts.scatter_add(-1, input_ids.long(), torch.ones_like(input_ids, dtype=torch.long))


def frequency_presence_penalty(
    logits: torch.Tensor, input_ids: torch.Tensor, frequency: float = 0.0, presence: float = 0.0,
) -> torch.Tensor:
    """The OpenAI API's penalties: subtract ``frequency * count`` (grows with each repeat)
    and ``presence`` once for any token that occurred at all. Negative values encourage
    repeats.

    >>> frequency_presence_penalty(torch.zeros(1, 3), torch.tensor([[1, 1, 2]]), 0.5, 1.0)
    tensor([[ 0.0000, -2.0000, -1.5000]])
    """
    _check_logits(logits)
    _check_input_ids(input_ids, logits)
    for name, value in (("frequency", frequency), ("presence", presence)):
        if not isinstance(value, int | float) or not -2 <= value <= 2:
            raise ValueError(f"{name} penalty must be a number in [-2, 2]; got {value!r}")
    counts = token_counts(input_ids, logits.shape[-1]).to(logits.dtype)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


# ----------------------------------------------------------------------------- bias and constraints


def _check_token_ids(ids: Sequence[int], vocab_size: int, what: str) -> None:
    bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"{what} must be token ids in [0, {vocab_size}); got {bad[:5]}")


def logit_bias(logits: torch.Tensor, bias: Mapping[int, float]) -> torch.Tensor:
    """Add ``bias[token]`` to that token's logit in every row (-100 all but bans a token,
    +5 strongly favours it).

    >>> logit_bias(torch.zeros(1, 3), {2: 5.0, 0: -100.0})
    tensor([[-100.,    0.,    5.]])
    """
    _check_logits(logits)
    _check_token_ids(list(bias), logits.shape[-1], "logit_bias keys")
    out = logits.clone()
    for token, value in bias.items():
        out[:, token] += value
    return out


def ban_sequences(
    logits: torch.Tensor, input_ids: torch.Tensor, banned: Sequence[Sequence[int]],
) -> torch.Tensor:
    """Forbid token sequences ("bad words"): the last token of a banned sequence gets
    ``-inf`` wherever the text so far ends with the rest of it. A one-token sequence is
    banned everywhere.

    >>> ban_sequences(torch.zeros(1, 4), torch.tensor([[3, 1]]), [[1, 2], [0]])
    tensor([[-inf, 0., -inf, 0.]])
    """
    _check_logits(logits)
    _check_input_ids(input_ids, logits)
    if any(len(seq) == 0 for seq in banned):
        raise ValueError("every banned sequence needs at least one token; got an empty one")
    for seq in banned:
        _check_token_ids(list(seq), logits.shape[-1], "banned sequences")
    out = logits.clone()
    history = input_ids.tolist()
    for row, tokens in enumerate(history):
        for seq in banned:
            *prefix, last = seq
            if not prefix or tokens[len(tokens) - len(prefix):] == list(prefix):
                out[row, last] = NEG_INF
    return out


def allow_only(
    logits: torch.Tensor, allowed: Sequence[int] | Sequence[Sequence[int]],
) -> torch.Tensor:
    """Constrained decoding's basic step: every token not in ``allowed`` gets ``-inf``.
    ``allowed`` is one list for all rows or one list per row.

    >>> allow_only(torch.tensor([[1.0, 2.0, 3.0]]), [0, 2])
    tensor([[1., -inf, 3.]])
    """
    _check_logits(logits)
    per_row = [list(a) for a in allowed] if allowed and isinstance(allowed[0], Sequence) \
        else [list(allowed)] * logits.shape[0]
    if len(per_row) != logits.shape[0]:
        raise ValueError(f"allowed must be one list or one list per row ({logits.shape[0]}); "
                         f"got {len(per_row)} lists")
    keep = torch.zeros_like(logits, dtype=torch.bool)
    for row, ids in enumerate(per_row):
        if not ids:
            raise ValueError(f"row {row} allows no token at all: nothing could be generated")
        _check_token_ids(ids, logits.shape[-1], "allowed tokens")
        keep[row, ids] = True
    return logits.masked_fill(~keep, NEG_INF)


# ----------------------------------------------------------------------------- a whole recipe


@dataclass
class SamplingConfig:
    """All the knobs of one sampling step, validated when created; ``None`` or the neutral
    value switches a knob off. ``process_logits`` applies them in transformers' order:
    penalties and constraints first, then temperature, then the top-k/top-p/min-p cuts."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    banned: list[list[int]] = field(default_factory=list)
    greedy: bool = False

    def __post_init__(self) -> None:
        # Validate through the functions themselves so the messages are the same.
        probe, ids = torch.zeros(1, 2), torch.zeros(1, 1, dtype=torch.long)
        if not self.greedy:
            apply_temperature(probe, self.temperature)
        if self.top_k is not None:
            top_k_filter(probe, self.top_k)
        if self.top_p is not None:
            top_p_filter(probe, self.top_p)
        if self.min_p is not None:
            min_p_filter(probe, self.min_p)
        repetition_penalty(probe, ids, self.repetition_penalty)
        frequency_presence_penalty(probe, ids, self.frequency_penalty, self.presence_penalty)


def process_logits(
    logits: torch.Tensor, input_ids: torch.Tensor, config: SamplingConfig,
) -> torch.Tensor:
    """Apply every knob of ``config`` to ``logits (B, V)`` given the tokens so far."""
    if config.repetition_penalty != 1.0:
        logits = repetition_penalty(logits, input_ids, config.repetition_penalty)
    if config.frequency_penalty or config.presence_penalty:
        logits = frequency_presence_penalty(logits, input_ids, config.frequency_penalty,
                                            config.presence_penalty)
    if config.logit_bias:
        logits = logit_bias(logits, config.logit_bias)
    if config.banned:
        logits = ban_sequences(logits, input_ids, config.banned)
    if config.greedy:
        return logits
    logits = apply_temperature(logits, config.temperature)
    if config.top_k is not None:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p is not None:
        logits = top_p_filter(logits, config.top_p)
    if config.min_p is not None:
        logits = min_p_filter(logits, config.min_p)
    return logits


def choose_next_token(
    logits: torch.Tensor, input_ids: torch.Tensor, config: SamplingConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token of each row, ``(B, 1)``: the best after processing if
    ``config.greedy``, else a sample from the processed distribution."""
    processed = process_logits(logits.float(), input_ids, config)
    if config.greedy:
        return processed.argmax(dim=-1, keepdim=True)
    return torch.multinomial(processed.softmax(dim=-1), 1, generator=generator)


# ----------------------------------------------------------------------------- generation loops


def _check_model_inputs(model: GPT, input_ids: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(model, GPT):
        raise ValueError(f"model must be an llmlab.model.GPT (use GPT.from_hf for a transformers "
                         f"model); got {type(model).__name__}")
    model._check_idx(input_ids)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0; got {max_new_tokens!r}")


def left_pad(
    sequences: Sequence[Sequence[int]], pad_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists of different lengths for batched generation: padding goes on the
    left so that every row's last token sits in the last column, where the next token is
    predicted. Returns ``(input_ids, attention_mask)``.

    >>> ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("left_pad needs at least one sequence and no empty ones")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


class Stepper:
    """Feeds a growing batch of sequences to ``model`` and returns the next-token logits:
    with a cache each token is fed once, without one the whole sequence every time."""

    def __init__(self, model: GPT, batch_size: int, max_len: int, use_cache: bool = True):
        self.model, self.cache = model, None
        if use_cache:
            weight = model.tok_emb.weight
            self.cache = KVCache.allocate(model.config, batch_size, max_len, weight.dtype,
                                          weight.device)

    @torch.no_grad()
    def next_logits(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, vocab)`` for the token after ``ids (B, T)``."""
        fresh = ids if self.cache is None else ids[:, self.cache.length:]
        return self.model(fresh, cache=self.cache, attention_mask=mask)[:, -1]


def iter_next_tokens(
    model: GPT,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    config: SamplingConfig | None = None,
    *,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, ``(B, 1)``, up to ``max_new_tokens`` times: the
    loop under ``generate`` and ``stream_text``. Stop iterating to stop generating.

    With ``use_cache`` each step feeds only the newest token (see ``KVCache``); without,
    every step recomputes the whole sequence, which is what the cache saves.
    """
    _check_model_inputs(model, input_ids, max_new_tokens)
    config = config or SamplingConfig(greedy=True)
    B, T = input_ids.shape
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids "
                         f"{tuple(input_ids.shape)}; got {tuple(mask.shape)}")
    stepper = Stepper(model, B, T + max_new_tokens, use_cache)
    ids = input_ids
    with eval_mode(model):
        for _ in range(max_new_tokens):
            logits = stepper.next_logits(ids, mask)
            next_id = choose_next_token(logits, ids, config, generator)
            yield next_id
            ids = torch.cat([ids, next_id.to(ids.dtype)], dim=1)
            mask = torch.cat([mask, torch.ones_like(next_id)], dim=1)


def generate(
    model: GPT,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    config: SamplingConfig | None = None,
    *,
    attention_mask: torch.Tensor | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Extend each row of ``input_ids (B, T)`` by up to ``max_new_tokens`` tokens chosen by
    ``config`` (default: greedy). Rows of different lengths come left-padded with their
    ``attention_mask`` (see ``left_pad``). A row that has produced ``eos_token_id`` is
    filled with ``pad_token_id`` (default: the EOS id) from then on, and generation ends
    when every row has.
    """
    pad = eos_token_id if pad_token_id is None else pad_token_id
    ids = input_ids
    done = torch.zeros(input_ids.shape[0], 1, dtype=torch.bool, device=input_ids.device)
    steps = iter_next_tokens(model, input_ids, max_new_tokens, config,
                             attention_mask=attention_mask, generator=generator,
                             use_cache=use_cache)
    for next_id in steps:
        if eos_token_id is not None:
            next_id = next_id.masked_fill(done, pad)
            done = done | (next_id == eos_token_id)
        ids = torch.cat([ids, next_id.to(ids.dtype)], dim=1)
        if eos_token_id is not None and bool(done.all()):
            steps.close()
            break
    return ids


# ----------------------------------------------------------------------------- streaming


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of ``text`` must wait before being shown: an
    unfinished multi-byte character (decoded as U+FFFD) or the start of a stop string."""
    keep = len(text) - len(text.rstrip("\ufffd"))
    visible = text[: len(text) - keep]
    partial = max((k for s in stop for k in range(1, len(s)) if visible.endswith(s[:k])), default=0)
    return keep + partial


def stream_text(
    model: GPT,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    config: SamplingConfig | None = None,
    *,
    stop: Sequence[str] = (),
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` piece by piece as it is generated, the way a
    chat interface shows it. A piece is never half a character (a byte-level token can
    end inside one) and never the beginning of a ``stop`` string; generation ends before
    the first stop string, at ``eos_token_id`` or after ``max_new_tokens``.

    ``tokenizer`` is anything with ``encode(str) -> ids`` and ``decode(ids) -> str`` (a
    transformers tokenizer or ``llmlab.tokenization.Tokenizer``).
    """
    if any(not s for s in stop):
        raise ValueError("stop strings must be non-empty")
    prompt_ids = list(tokenizer.encode(prompt))
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens: give at least one character")
    generated: list[int] = []
    shown = 0
    steps = iter_next_tokens(model, torch.tensor([prompt_ids]), max_new_tokens, config,
                             generator=generator)
    for next_id in steps:
        token = int(next_id)
        if token == eos_token_id:
            break
        generated.append(token)
        text = tokenizer.decode(generated)
        hits = [i for i in (text.find(s) for s in stop) if i >= 0]
        if hits:
            steps.close()
            if min(hits) > shown:
                yield text[shown:min(hits)]
            return
        ready = len(text) - _held_back(text, stop)
        if ready > shown:
            yield text[shown:ready]
            shown = ready
    text = tokenizer.decode(generated)
    if len(text) > shown:
        yield text[shown:]


def generate_text(
    model: GPT, tokenizer: Any, prompt: str, max_new_tokens: int,
    config: SamplingConfig | None = None, **options: Any,
) -> str:
    """The whole continuation of ``prompt`` at once (``stream_text`` joined)."""
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens, config, **options))


# ----------------------------------------------------------------------------- beam search


@dataclass
class Hypothesis:
    """One finished beam: its new tokens and their summed log-probability."""

    tokens: list[int]
    log_prob: float
    score: float  # log_prob / len(tokens) ** length_penalty


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
    _check_model_inputs(model, input_ids, max_new_tokens)
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
            vocab = log_probs.shape[-1]
            totals = (log_probs + beam_scores[:, None]).reshape(-1)
            n_candidates = 2 * num_beams
            cand_scores, cand_index = totals.topk(n_candidates)
            cand_beam, cand_token = cand_index // vocab, cand_index % vocab
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


# ----------------------------------------------------------------------------- speculative decoding


def truncated_draft(model: GPT, n_layers: int) -> GPT:
    """A cheap draft model that shares the target's tokenizer: the target's first
    ``n_layers`` blocks, its embeddings, final norm and head (weights shared, not copied).
    Early layers already predict many easy tokens the way the full model would.
    """
    if not 1 <= n_layers <= model.config.n_layer:
        raise ValueError(f"n_layers must be in [1, {model.config.n_layer}]; got {n_layers}")
    from dataclasses import replace

    draft = GPT.__new__(GPT)
    torch.nn.Module.__init__(draft)
    draft.config = replace(model.config, n_layer=n_layers)
    for name, child in model.named_children():
        setattr(draft, name, child)
    draft.blocks = torch.nn.ModuleList(list(model.blocks)[:n_layers])
    return draft.eval()


@dataclass
class SpeculativeStats:
    """What the draft proposed and the target kept."""

    proposed: int = 0
    accepted: int = 0
    target_calls: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def _distribution(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Probabilities after temperature and the cut-offs (no penalties: they depend on the
    history, which differs between the positions verified together)."""
    empty = torch.zeros(logits.shape[0], 1, dtype=torch.long, device=logits.device)
    return process_logits(logits.float(), empty, config).softmax(dim=-1)


@torch.no_grad()
def speculative_generate(
    target: GPT,
    draft: GPT,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    k: int = 4,
    config: SamplingConfig | None = None,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, SpeculativeStats]:
    """Speculative decoding: the ``draft`` proposes ``k`` tokens one by one, the ``target``
    scores all of them in a single forward pass, and the longest acceptable prefix is kept
    plus one token from the target, so each target call yields between 1 and ``k + 1``
    tokens.

    Greedy (the default ``config``): a draft token is accepted when it is the target's own
    argmax, so the output is exactly the target's greedy output. Sampling: token ``x`` is
    accepted with probability ``min(1, p(x) / q(x))`` (``p`` target, ``q`` draft), and a
    rejected one is replaced by a sample from ``max(0, p - q)`` renormalised, which makes
    every output token distributed exactly as the target alone would sample it.
    """
    _check_model_inputs(target, input_ids, max_new_tokens)
    _check_model_inputs(draft, input_ids, max_new_tokens)
    if input_ids.shape[0] != 1:
        raise ValueError(f"speculative_generate takes one prompt (1, T); got batch "
                         f"{input_ids.shape[0]}")
    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError(f"draft and target must share a vocabulary; got sizes "
                         f"{draft.config.vocab_size} and {target.config.vocab_size}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (draft tokens per round) must be an int >= 1; got {k!r}")
    config = config or SamplingConfig(greedy=True)
    if config.repetition_penalty != 1 or config.frequency_penalty or config.presence_penalty \
            or config.banned:
        raise ValueError("speculative_generate supports temperature, top-k, top-p, min-p and "
                         "logit bias; not history-dependent penalties or bans")
    room = input_ids.shape[1] + max_new_tokens + k + 1
    dtype, device = target.tok_emb.weight.dtype, input_ids.device
    t_cache = KVCache.allocate(target.config, 1, room, dtype, device)
    d_cache = KVCache.allocate(draft.config, 1, room, dtype, device)
    stats, ids = SpeculativeStats(), input_ids
    goal = input_ids.shape[1] + max_new_tokens
    with eval_mode(target, draft):
        while ids.shape[1] < goal:
            # 1. The draft proposes k tokens (feeding whatever it has not seen yet first).
            proposal, q_probs = [], []
            fresh = ids[:, d_cache.length:]
            for _ in range(k):
                logits = draft(fresh, cache=d_cache)[:, -1]
                if config.greedy:
                    token = process_logits(logits.float(), ids, config).argmax(-1, keepdim=True)
                else:
                    q = _distribution(logits, config)
                    token = torch.multinomial(q, 1, generator=generator)
                    q_probs.append(q[0])
                proposal.append(token)
                fresh = token
            drafted = torch.cat(proposal, dim=1)  # (1, k)
            # 2. The target scores the unseen tokens and all k proposals at once.
            scored = torch.cat([ids[:, t_cache.length:], drafted], dim=1)
            t_logits = target(scored, cache=t_cache)[0, -(k + 1):]  # (k + 1, vocab)
            stats.target_calls += 1
            stats.proposed += k
            # 3. Keep the longest acceptable prefix, then one token from the target.
            kept: list[int] = []
            for j in range(k):
                token = int(drafted[0, j])
                if config.greedy:
                    best = int(process_logits(t_logits[j:j + 1].float(), ids, config).argmax())
                    if token != best:
                        kept.append(best)
                        break
                else:
                    p = _distribution(t_logits[j:j + 1], config)[0]
                    q = q_probs[j]
                    ratio = (p[token] / q[token]).item()
                    if torch.rand(1, generator=generator).item() >= min(1.0, ratio):
                        residual = (p - q).clamp(min=0)
                        residual = residual / residual.sum() if residual.sum() > 0 else p
                        kept.append(int(torch.multinomial(residual, 1, generator=generator)))
                        break
                kept.append(token)
                stats.accepted += 1
            else:  # every proposal accepted: the target's next prediction comes free
                last = t_logits[k:k + 1]
                if config.greedy:
                    kept.append(int(process_logits(last.float(), ids, config).argmax()))
                else:
                    kept.append(int(torch.multinomial(_distribution(last, config)[0], 1,
                                                      generator=generator)))
            kept = kept[: goal - ids.shape[1]]
            if eos_token_id is not None and eos_token_id in kept:
                kept = kept[: kept.index(eos_token_id) + 1]
            ids = torch.cat([ids, torch.tensor([kept], dtype=ids.dtype, device=device)], dim=1)
            # 4. Roll both caches back to the tokens that were kept (the last one is unseen).
            t_cache.crop(ids.shape[1] - 1)
            d_cache.crop(ids.shape[1] - 1)
            if eos_token_id is not None and kept[-1] == eos_token_id:
                break
    return ids, stats


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
    _check_model_inputs(model, input_ids, max_new_tokens)
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


# ----------------------------------------------------------------------------- constrained decoding


def token_strings(tokenizer: Any, vocab_size: int) -> list[str | None]:
    """The text each token id stands for, or None for ids that cannot be used on their
    own in constrained decoding (the middle of a multi-byte character, or nothing)."""
    out: list[str | None] = []
    for token in range(vocab_size):
        try:
            text = tokenizer.decode([token])
        except (KeyError, IndexError, ValueError):
            text = ""
        out.append(text if text and "\ufffd" not in text else None)
    return out


def json_object_pattern(fields: Mapping[str, str], max_string: int = 40) -> str:
    """A regex for a one-line JSON object with exactly ``fields`` (name -> ``"string"``,
    ``"integer"``, ``"number"`` or ``"boolean"``), in that order, ``{"a": 1, "b": "x"}``
    style. Every text it matches is valid JSON.

    >>> import json, regex
    >>> pattern = json_object_pattern({"name": "string", "age": "integer"})
    >>> json.loads(regex.fullmatch(pattern, '{"name": "Ada", "age": 36}').group())
    {'name': 'Ada', 'age': 36}
    """
    values = {
        "string": r'"[^"\\\x00-\x1f]{0,' + str(max_string) + '}"',
        "integer": r"-?(0|[1-9][0-9]{0,8})",
        "number": r"-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?",
        "boolean": r"(true|false)",
    }
    if not fields:
        raise ValueError("json_object_pattern needs at least one field")
    parts = []
    for name, kind in fields.items():
        if kind not in values:
            raise ValueError(f"field {name!r}: type must be one of {sorted(values)}; got {kind!r}")
        if not name or any(c in name for c in '"\\') or not name.isprintable():
            raise ValueError(f"field names must be plain printable text; got {name!r}")
        parts.append(regex.escape(json.dumps(name)) + ": " + values[kind])
    return r"\{" + ", ".join(parts) + r"\}"


class RegexConstraint:
    """Which tokens may come next so that the text can still end up matching ``pattern``.

    ``strings[token]`` is the text of each token id (``token_strings``). A token is allowed
    when the text plus its string is a prefix of some full match (``regex``'s partial
    matching), and EOS is allowed once the text is a full match.

    >>> constraint = RegexConstraint(r"(yes|no)!", ["y", "n", "es", "o", "!", "x"])
    >>> [t for t in range(6) if constraint.allows("", t)], constraint.allows("yes", 4)
    ([0, 1], True)
    """

    def __init__(self, pattern: str, strings: Sequence[str | None],
                 eos_token_id: int | None = None):
        try:
            self.regex = regex.compile(pattern)
        except regex.error as error:
            raise ValueError(f"pattern {pattern!r} is not a valid regex: {error}") from None
        self.pattern, self.strings, self.eos_token_id = pattern, strings, eos_token_id

    def complete(self, text: str) -> bool:
        return self.regex.fullmatch(text) is not None

    def allows(self, text: str, token: int) -> bool:
        if token == self.eos_token_id:
            return self.complete(text)
        piece = self.strings[token]
        return piece is not None and self.regex.fullmatch(text + piece, partial=True) is not None


@torch.no_grad()
def constrained_generate(
    model: GPT,
    tokenizer: Any,
    prompt: str,
    pattern: str,
    max_new_tokens: int = 64,
    config: SamplingConfig | None = None,
    *,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
    strings: Sequence[str | None] | None = None,
) -> str:
    """Generate text that fully matches the regex ``pattern``, whatever the model prefers.

    At each step only the tokens a ``RegexConstraint`` allows can be chosen. Without an
    ``eos_token_id`` generation stops at the first full match; with one, EOS becomes
    allowed there and the model decides whether to go on while the pattern lets it.
    Greedy decoding tries tokens best first and takes the first allowed one (it rarely
    tests more than a handful); sampling tests them all. Raises ``RuntimeError`` if
    ``max_new_tokens`` runs out before the match is complete.
    """
    config = config or SamplingConfig(greedy=True)
    if strings is None:
        strings = token_strings(tokenizer, model.config.vocab_size)
    if len(strings) != model.config.vocab_size:
        raise ValueError(f"strings must give one entry per token ({model.config.vocab_size}); "
                         f"got {len(strings)}")
    constraint = RegexConstraint(pattern, strings, eos_token_id)
    ids = torch.tensor([list(tokenizer.encode(prompt))])
    _check_model_inputs(model, ids, max_new_tokens)
    stepper = Stepper(model, 1, ids.shape[1] + max_new_tokens)
    text = ""
    with eval_mode(model):
        for _ in range(max_new_tokens):
            if eos_token_id is None and constraint.complete(text):
                return text
            scores = process_logits(stepper.next_logits(ids).float(), ids, config)[0]
            token = _choose_allowed(scores, functools.partial(constraint.allows, text),
                                    config.greedy, generator)
            if token is None:
                raise RuntimeError(f"no token can continue {text!r} towards {pattern!r}")
            if token == eos_token_id:
                return text
            text += strings[token]
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    if not constraint.complete(text):
        raise RuntimeError(f"max_new_tokens={max_new_tokens} ran out before the output "
                           f"matched the pattern; got {text!r}")
    return text


def _choose_allowed(
    scores: torch.Tensor, allowed: Any, greedy: bool, generator: torch.Generator | None,
) -> int | None:
    """The best allowed token (greedy) or a sample among the allowed ones; None if none."""
    if greedy:
        return next((int(t) for t in scores.argsort(descending=True)
                     if scores[t] > NEG_INF and allowed(int(t))), None)
    mask = torch.tensor([bool(scores[t] > NEG_INF) and allowed(t) for t in range(len(scores))])
    if not mask.any():
        return None
    probs = scores.masked_fill(~mask, NEG_INF).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
