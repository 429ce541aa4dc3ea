"""Speculative decoding: a cheap draft proposes tokens, the target checks them all in one
forward pass, and the output is exactly what the target alone would produce. The draft is
a smaller model (:func:`speculative_generate`, e.g. with :func:`truncated_draft`) or a
copy from the context (:func:`prompt_lookup_generate` with :func:`lookup_draft`).
"""

from __future__ import annotations

from collections.abc import Sequence
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


# ----------------------------------------------------------------------------- prompt lookup


def lookup_draft(
    tokens: Sequence[int], k: int, max_ngram: int = 3, min_ngram: int = 1,
) -> list[int]:
    """Prompt-lookup drafting: find the latest earlier occurrence of the text's last ``n``
    tokens (``n`` from ``max_ngram`` down to ``min_ngram``) and propose the up to ``k``
    tokens that followed it. No draft model: the guess is copied from the context, which
    is right whenever the output quotes or edits its input. Returns ``[]`` if no n-gram
    recurs.

    >>> lookup_draft([5, 6, 7, 8, 9, 5, 6], k=2)   # "5 6" occurred before, followed by 7 8
    [7, 8]
    >>> lookup_draft([1, 2, 3], k=2)                 # nothing recurs: no draft
    []
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (draft tokens) must be an int >= 1; got {k!r}")
    if not 1 <= min_ngram <= max_ngram:
        raise ValueError(f"need 1 <= min_ngram <= max_ngram; got {min_ngram}, {max_ngram}")
    tokens = list(tokens)
    for n in range(min(max_ngram, len(tokens) - 1), min_ngram - 1, -1):
        tail = tokens[-n:]
        # Latest start first; the match must end before the tail itself begins to overlap it.
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start:start + n] == tail:
                return tokens[start + n:start + n + k]
    return []


@torch.no_grad()
def prompt_lookup_generate(
    model: GPT,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    k: int = 10,
    max_ngram: int = 3,
    eos_token_id: int | None = None,
) -> tuple[torch.Tensor, SpeculativeStats]:
    """Greedy speculative decoding whose draft is :func:`lookup_draft`: tokens copied
    from the prompt (or the text generated so far) after the latest match of the last
    n-gram. The model checks the draft in one forward pass and keeps the longest prefix
    equal to its own argmax plus one token of its own, so the output is exactly
    ``generate(model, input_ids, max_new_tokens)`` (greedy). With no match a round is a
    plain greedy step. This is transformers' ``prompt_lookup_num_tokens``, for one prompt.

    >>> from llmlab.model import GPT, ModelConfig
    >>> from llmlab.decoding.loop import generate
    >>> model = GPT(ModelConfig.llama_style(vocab_size=50, n_layer=1, n_head=2, n_kv_head=1))
    >>> prompt = torch.tensor([[3, 4, 5, 3, 4, 5, 3]])
    >>> out, stats = prompt_lookup_generate(model, prompt, 6, k=3)
    >>> torch.equal(out, generate(model, prompt, 6))
    True
    """
    check_model_inputs(model, input_ids, max_new_tokens)
    if input_ids.shape[0] != 1:
        raise ValueError(f"prompt_lookup_generate takes one prompt (1, T); got batch "
                         f"{input_ids.shape[0]}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (draft tokens per round) must be an int >= 1; got {k!r}")
    goal = input_ids.shape[1] + max_new_tokens
    cache = KVCache.allocate(model.config, 1, goal + k + 1, model.tok_emb.weight.dtype,
                             input_ids.device)
    stats, ids = SpeculativeStats(), input_ids
    with eval_mode(model):
        while ids.shape[1] < goal:
            tokens = ids[0].tolist()
            draft = lookup_draft(tokens, min(k, goal - ids.shape[1] - 1), max_ngram) \
                if goal - ids.shape[1] > 1 else []
            drafted = torch.tensor([draft], dtype=ids.dtype, device=ids.device).view(1, -1)
            scored = torch.cat([ids[:, cache.length:], drafted], dim=1)
            logits = model(scored, cache=cache)[0, -(len(draft) + 1):]
            best = logits.float().argmax(dim=-1).tolist()  # the model's choice after each
            stats.target_calls += 1
            stats.proposed += len(draft)
            accepted = 0
            while accepted < len(draft) and draft[accepted] == best[accepted]:
                accepted += 1
            stats.accepted += accepted
            kept = draft[:accepted] + [best[accepted]]
            if eos_token_id is not None and eos_token_id in kept:
                kept = kept[: kept.index(eos_token_id) + 1]
            ids = torch.cat([ids, torch.tensor([kept], dtype=ids.dtype, device=ids.device)],
                            dim=1)
            cache.crop(ids.shape[1] - 1)  # the last kept token has not been fed yet
            if eos_token_id is not None and kept[-1] == eos_token_id:
                break
    return ids, stats
