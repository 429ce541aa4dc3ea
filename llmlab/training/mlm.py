"""A tiny BERT pretrained with the masked-LM objective: transformers' ``BertForMaskedLM``
fed batches from ``llmlab.training.mask_tokens`` (15% chosen; 80/10/10).

The loss counts the chosen positions only: every other label is ``-100``.
``evaluate_fill_in`` then hides characters of held-out text and measures how many the
model restores, against the best guess that ignores context (always the most frequent
character).

>>> config = tiny_bert_config(vocab_size=66, block_size=32)
>>> config.num_hidden_layers, config.hidden_size, config.max_position_embeddings
(2, 64, 32)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llmlab.model import lm_loss
from llmlab.training.data import WindowSampler
from llmlab.training.objectives import mask_tokens
from llmlab.training.optim import AdamW, WarmupCosine, clip_grad_norm, weight_decay_groups

__all__ = ["tiny_bert_config", "masked_lm_loss", "train_masked_lm", "mask_for_eval",
           "fill_in", "FillInScore", "evaluate_fill_in"]


def tiny_bert_config(vocab_size: int, block_size: int = 64, n_layer: int = 2,
                     d_model: int = 64, n_head: int = 4, **overrides: Any) -> Any:
    """A ``transformers.BertConfig`` for a small character-level encoder.

    ``vocab_size`` counts ``[MASK]`` too (the characters plus one). There is no padding
    id: BERT's default (0) would freeze the embedding of a real character, since the
    row of the padding id gets no gradient. Dropout is off, as in llmlab's small GPTs.
    ``overrides`` go to ``BertConfig`` as they are.
    """
    from transformers import BertConfig

    for name, value in (("vocab_size", vocab_size), ("block_size", block_size),
                        ("n_layer", n_layer), ("d_model", d_model), ("n_head", n_head)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if d_model % n_head:
        raise ValueError(f"d_model must be divisible by n_head; got {d_model} and {n_head}")
    return BertConfig(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layer,
                      num_attention_heads=n_head, intermediate_size=4 * d_model,
                      max_position_embeddings=block_size, type_vocab_size=1,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      pad_token_id=None, **overrides)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not ``-100`` (the chosen
    ones); ``logits (B, T, vocab)``, ``labels (B, T)``. No shift: position ``t``
    predicts its own hidden token. The computation is the causal model's loss,
    ``llmlab.model.lm_loss``, with the labels in place of the next tokens.

    >>> logits = torch.zeros(1, 3, 4)
    >>> round(masked_lm_loss(logits, torch.tensor([[-100, 2, -100]])).item(), 4)   # ln 4
    1.3863
    """
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(f"expected logits (B, T, vocab) and labels (B, T); got logits "
                         f"{tuple(logits.shape)} and labels {tuple(labels.shape)}")
    return lm_loss(logits, labels)


def _check_mask_id(model: Any, mask_id: int) -> int:
    vocab = model.config.vocab_size
    if not isinstance(mask_id, int) or not 0 <= mask_id < vocab:
        raise ValueError(f"mask_id must be an id of the model's vocabulary [0, {vocab}); "
                         f"got {mask_id!r}")
    return vocab


def train_masked_lm(
    model: Any, train_ids: np.ndarray, mask_id: int, steps: int, batch_size: int = 32,
    block_size: int = 64, lr: float = 5e-3, min_lr: float = 5e-4, warmup_steps: int = 20,
    weight_decay: float = 0.01, grad_clip: float = 1.0, seed: int = 0, progress: bool = True,
) -> list[float]:
    """Pretrain ``model`` (a ``BertForMaskedLM``) for ``steps`` steps on random windows
    of ``train_ids``, masked by ``mask_tokens``; returns the loss of every step.

    The loop is chapter 4's: llmlab's AdamW (decay on matrices only), warm-up + cosine,
    clipping by global norm. The loss is the one ``BertForMaskedLM`` computes from
    ``labels``, which equals ``masked_lm_loss`` (tested).
    """
    from tqdm.auto import tqdm

    vocab = _check_mask_id(model, mask_id)
    positions = model.config.max_position_embeddings
    if block_size > positions:
        raise ValueError(f"block_size={block_size} exceeds the model's {positions} positions")
    if not isinstance(steps, int) or steps <= warmup_steps:
        raise ValueError(f"steps must be an int > warmup_steps={warmup_steps}; got {steps!r}")
    sampler = WindowSampler(train_ids, batch_size, block_size, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = AdamW(weight_decay_groups(model, weight_decay), lr=lr, betas=(0.9, 0.99))
    schedule = WarmupCosine(lr, min_lr, warmup_steps, steps)
    model.train()
    losses = []
    for step in tqdm(range(steps), desc="masked-LM", disable=not progress):
        windows, _ = sampler.sample()
        inputs, labels = mask_tokens(windows, vocab_size=vocab, mask_id=mask_id,
                                     generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        clip_grad_norm(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def mask_for_eval(ids: torch.Tensor, mask_id: int, generator: torch.Generator,
                  mlm_probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide about ``mlm_probability`` of ``ids`` behind ``mask_id``, all of them (no
    80/10/10 at test time: we ask for every hidden character); ``(inputs, labels)`` with
    ``-100`` where nothing was hidden.

    >>> inputs, labels = mask_for_eval(torch.arange(10), 99, torch.Generator().manual_seed(1),
    ...                                mlm_probability=0.3)
    >>> inputs.tolist(), labels.tolist()
    ([0, 99, 2, 3, 99, 5, 6, 7, 8, 9], [-100, 1, -100, -100, 4, -100, -100, -100, -100, -100])
    """
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1); got {mlm_probability}")
    chosen = torch.rand(ids.shape, generator=generator) < mlm_probability
    inputs = torch.where(chosen, torch.full_like(ids, mask_id), ids)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return inputs, labels


@torch.no_grad()
def fill_in(model: Any, inputs: torch.Tensor, mask_id: int) -> torch.Tensor:
    """``inputs (B, T)`` with every ``mask_id`` replaced by the model's most likely token
    (never ``[MASK]`` itself)."""
    _check_mask_id(model, mask_id)
    was_training = model.training
    model.eval()
    logits = model(input_ids=inputs).logits
    model.train(was_training)
    logits[..., mask_id] = float("-inf")
    return torch.where(inputs == mask_id, logits.argmax(-1), inputs)


@dataclass(frozen=True)
class FillInScore:
    """Share of hidden characters restored, by the model and by always guessing the most
    frequent training character (the unigram baseline)."""

    accuracy: float
    unigram_accuracy: float
    n_masked: int


def evaluate_fill_in(model: Any, train_ids: np.ndarray, eval_ids: np.ndarray, mask_id: int,
                     block_size: int = 64, n_blocks: int = 64, seed: int = 0,
                     mlm_probability: float = 0.15) -> FillInScore:
    """Hide ``mlm_probability`` of the characters of the first ``n_blocks`` blocks of
    ``eval_ids`` and score the model's guesses against the unigram baseline."""
    n_blocks = min(n_blocks, len(eval_ids) // block_size)
    if n_blocks < 1:
        raise ValueError(f"eval_ids has {len(eval_ids)} tokens, fewer than one block of "
                         f"{block_size}")
    blocks = torch.from_numpy(np.asarray(eval_ids[: n_blocks * block_size], dtype=np.int64))
    blocks = blocks.reshape(n_blocks, block_size)
    inputs, labels = mask_for_eval(blocks, mask_id, torch.Generator().manual_seed(seed),
                                   mlm_probability)
    hidden = labels != -100
    guesses = fill_in(model, inputs, mask_id)[hidden]
    most_frequent = int(np.bincount(np.asarray(train_ids, dtype=np.int64)).argmax())
    return FillInScore(accuracy=(guesses == labels[hidden]).float().mean().item(),
                       unigram_accuracy=(labels[hidden] == most_frequent).float().mean().item(),
                       n_masked=int(hidden.sum()))
