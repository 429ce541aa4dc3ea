"""The generation loop: one token per step, from a ``GPT`` and a ``SamplingConfig``.

:func:`generate` is the library's one loop (``GPT`` has no ``generate`` of its own): greedy
by default, sampling with a :class:`~llmlab.decoding.SamplingConfig`, a KV cache or a
recomputed (cropped) context, left-padded batches, EOS. :func:`iter_next_tokens` is the
loop itself, :class:`Stepper` one forward pass per step, :func:`stream_text` the text as
it is written.

>>> from llmlab.model import GPT, ModelConfig
>>> model = GPT(ModelConfig.llama_style(vocab_size=100, n_layer=2, n_head=4, n_kv_head=2))
>>> idx = torch.tensor([[1, 2, 3]])
>>> generate(model, idx, max_new_tokens=4).shape          # greedy: 3 + 4 tokens
torch.Size([1, 7])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from llmlab.attention import KVCache
from llmlab.decoding.processors import SamplingConfig, choose_next_token
from llmlab.model import GPT, eval_mode

# ----------------------------------------------------------------------------- generation loops


def check_model_inputs(model: GPT, input_ids: torch.Tensor, max_new_tokens: int) -> None:
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
    with a cache each token is fed once; without one the whole sequence every time, cropped
    to the last ``context_length`` tokens (the longest window the model was trained on)."""

    def __init__(self, model: GPT, batch_size: int, max_len: int, use_cache: bool = True):
        self.model, self.cache = model, None
        if use_cache:
            weight = model.tok_emb.weight
            self.cache = KVCache.allocate(model.config, batch_size, max_len, weight.dtype,
                                          weight.device)

    @torch.no_grad()
    def next_logits(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, vocab)`` for the token after ``ids (B, T)``."""
        if self.cache is None:
            window = self.model.config.context_length
            fresh, mask = ids[:, -window:], None if mask is None else mask[:, -window:]
        else:  # the cache holds everything but the tokens it has not seen yet
            fresh = ids[:, self.cache.length:]
        hidden = self.model.hidden_states(fresh, cache=self.cache, attention_mask=mask)
        return self.model.lm_head(hidden[:, -1])  # only the last position is needed


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

    With ``use_cache`` each step feeds only the newest token (see ``KVCache``), and the
    prompt plus the new tokens must fit in ``context_length``; without, every step
    recomputes the last ``context_length`` tokens, which is what the cache saves (and what
    lets generation run on past the context).
    """
    check_model_inputs(model, input_ids, max_new_tokens)
    config = config or SamplingConfig(greedy=True)
    B, T = input_ids.shape
    if use_cache and T + max_new_tokens > model.config.context_length:
        raise ValueError(f"with use_cache the prompt plus new tokens ({T + max_new_tokens}) "
                         f"must fit in context_length={model.config.context_length}; "
                         "use_cache=False slides a window over a longer text instead")
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
    when every row has. Runs in eval mode (no dropout) and restores the model's mode;
    ``generator`` seeds the sampling; ``use_cache`` as in :func:`iter_next_tokens`.

    >>> from llmlab.model import GPT, ModelConfig
    >>> model = GPT(ModelConfig.gpt2_style(vocab_size=20, n_layer=1, n_head=2, d_model=8))
    >>> prompt = torch.tensor([[1, 2, 3]])
    >>> sampled = generate(model, prompt, 5, SamplingConfig(temperature=0.8, top_k=10),
    ...                    generator=torch.Generator().manual_seed(0))
    >>> sampled.shape, torch.equal(sampled[:, :3], prompt)
    (torch.Size([1, 8]), True)
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
