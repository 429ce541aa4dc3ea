"""Speculative decoding: a cheap draft proposes tokens, the target checks them all in one
forward pass, and the output is exactly what the target alone would produce.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from llmlab.attention import KVCache
from llmlab.decoding.loop import check_model_inputs
from llmlab.decoding.processors import SamplingConfig, process_logits
from llmlab.model import GPT, eval_mode

# ----------------------------------------------------------------------------- speculative decoding


def truncated_draft(model: GPT, n_layers: int) -> GPT:
    """A cheap draft model that shares the target's tokenizer: the target's first
    ``n_layers`` blocks, its embeddings, final norm and head (weights shared, not copied).
    Early layers already predict many easy tokens the way the full model would.
    """
    if not 1 <= n_layers <= model.config.n_layer:
        raise ValueError(f"n_layers must be in [1, {model.config.n_layer}]; got {n_layers}")
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
    check_model_inputs(target, input_ids, max_new_tokens)
    check_model_inputs(draft, input_ids, max_new_tokens)
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
