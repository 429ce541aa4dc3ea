"""Logit processors: each reshapes next-token scores ``(B, V)`` and sets the scores of
removed tokens to ``-inf``, so that ``softmax`` gives them probability 0. The tests check
each one against the matching ``transformers`` ``LogitsProcessor`` on the same logits.

- warpers: :func:`apply_temperature`, :func:`top_k_filter`, :func:`top_p_filter`,
  :func:`min_p_filter`;
- penalties: :func:`repetition_penalty`, :func:`frequency_presence_penalty`;
- bias and constraints: :func:`logit_bias`, :func:`ban_sequences`, :func:`allow_only`;
- a whole recipe: :class:`SamplingConfig`, applied by :func:`process_logits`, sampled by
  :func:`choose_next_token`.

>>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
>>> top_k_filter(logits, 2)
tensor([[2., 1., -inf, -inf]])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

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
