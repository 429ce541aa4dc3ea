"""Seconds-long training runs for experiments (chapter 04): a learning-rate sweep, dropout and
label smoothing, and an overfitting diagnosis, each a few hundred steps of a tiny GPT.

``quick_run`` is the training loop of :class:`llmlab.training.Trainer` without its files and
logging: llmlab's AdamW (decay on matrices only), warm-up + cosine, clipping at 1.0, and
``smoothed_cross_entropy`` as the loss. It measures the plain cross-entropy on fixed train
and validation batches with dropout off, so runs with different regularisers compare on
the same scale.

    >>> ids = np.tile(np.arange(8, dtype=np.int64), 200)          # 0 1 2 ... 7 0 1 2 ...
    >>> run = quick_run(ids[:1200], ids[1200:], vocab_size=8, lr=1e-2, steps=40)
    >>> run.evals[0]["val_loss"] > 2.0 > 0.5 > run.val_loss       # from ln 8 to a pattern
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from llmlab.model import GPT, ModelConfig
from llmlab.training.data import WindowSampler
from llmlab.training.optim import AdamW, WarmupCosine, clip_grad_norm, weight_decay_groups

__all__ = ["smoothed_cross_entropy", "QuickRun", "quick_run", "NgramMLP", "ngram_examples",
           "mlp_run"]


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                           smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against a *smoothed* target: ``1 - smoothing`` on the right token plus
    ``smoothing`` spread evenly over all ``V`` tokens. Equals
    ``F.cross_entropy(..., label_smoothing=smoothing)``; ``logits (N, V)``, ``targets (N,)``.

    The loss is ``(1 - e) * nll + e * mean_j(-log p_j)``: the second term punishes a
    distribution that puts (almost) nothing on any token, so the model can never drive its
    loss to 0 by becoming certain.

    >>> logits = torch.tensor([[4.0, 0.0, 0.0]])
    >>> ours = smoothed_cross_entropy(logits, torch.tensor([0]), smoothing=0.1)
    >>> theirs = F.cross_entropy(logits, torch.tensor([0]), label_smoothing=0.1)
    >>> round(ours.item(), 4), bool(torch.isclose(ours, theirs))
    (0.3026, True)
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1); got {smoothing!r}")
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, vocab) and targets (N,); got logits "
                         f"{tuple(logits.shape)} and targets {tuple(targets.shape)}")
    log_p = logits.float().log_softmax(dim=-1)
    nll = -log_p.gather(1, targets[:, None]).squeeze(1)
    uniform = -log_p.mean(dim=-1)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


@dataclass
class QuickRun:
    """What ``quick_run`` measured: the batch loss of every step (with the run's own loss and
    dropout) and, at each evaluation, the plain cross-entropy on fixed train and validation
    batches with dropout off."""

    lr: float
    train_losses: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)

    @property
    def val_loss(self) -> float:
        """The validation loss at the last evaluation (``inf`` if the run diverged)."""
        return self.evals[-1]["val_loss"]

    @property
    def best_val_loss(self) -> float:
        return min(e["val_loss"] for e in self.evals)


@torch.no_grad()
def _eval_loss(model: GPT, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    losses = [F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten()).item()
              for x, y in batches]
    model.train()
    loss = float(np.mean(losses))
    return loss if math.isfinite(loss) else math.inf


def quick_run(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int, *, lr: float,
              steps: int = 60, batch_size: int = 16, block_size: int = 32, n_layer: int = 1,
              n_head: int = 2, d_model: int = 32, dropout: float = 0.0,
              label_smoothing: float = 0.0, weight_decay: float = 0.0, warmup_steps: int = 0,
              eval_every: int | None = None, eval_batches: int = 4,
              seed: int = 0) -> QuickRun:
    """Train a fresh tiny GPT for ``steps`` steps at peak learning rate ``lr`` (warm-up, then
    cosine to ``lr / 10``) and measure it; deterministic for a given ``seed``.

    Evaluations run at step 0, every ``eval_every`` steps, and at the end, on the same
    ``eval_batches`` batches of each split (seeded apart from the training batches).
    A run whose loss becomes NaN or infinite stops and reports ``inf``.

    >>> ids = np.tile(np.arange(5, dtype=np.int64), 100)
    >>> quick_run(ids, ids, vocab_size=5, lr=1e-3, steps=5).evals[-1]["step"]
    5
    """
    if not (isinstance(lr, (int, float)) and 0 < lr <= 10):
        raise ValueError(f"lr must be a number in (0, 10]; got {lr!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    torch.manual_seed(seed)
    config = ModelConfig.gpt2_style(vocab_size=vocab_size, context_length=block_size,
                                    n_layer=n_layer, n_head=n_head, d_model=d_model,
                                    dropout=dropout)
    model = GPT(config)
    optimizer = AdamW(weight_decay_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95))
    schedule = WarmupCosine(max_lr=lr, min_lr=lr / 10, warmup_steps=min(warmup_steps, steps - 1),
                            total_steps=steps)
    sampler = WindowSampler(train_ids, batch_size, block_size, seed=seed)
    fixed = {name: [s.sample() for _ in range(eval_batches)] for name, s in (
        ("train", WindowSampler(train_ids, batch_size, block_size, seed=seed + 1000)),
        ("val", WindowSampler(val_ids, batch_size, block_size, seed=seed + 2000)))}
    run = QuickRun(lr=float(lr))

    def evaluate(step: int) -> None:
        run.evals.append({"step": step, "train_loss": _eval_loss(model, fixed["train"]),
                          "val_loss": _eval_loss(model, fixed["val"])})

    evaluate(0)
    for step in range(steps):
        x, y = sampler.sample()
        loss = smoothed_cross_entropy(model(x).flatten(0, 1), y.flatten(), label_smoothing)
        if not torch.isfinite(loss):
            run.evals.append({"step": step + 1, "train_loss": math.inf, "val_loss": math.inf})
            return run
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        optimizer.step()
        run.train_losses.append(loss.item())
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            evaluate(step + 1)
    evaluate(steps)
    return run


class NgramMLP(torch.nn.Module):
    """A character model that reads only the last ``context`` tokens: embeddings, one hidden
    layer, dropout, logits (Bengio et al. 2003, makemore's MLP). Trained full-batch on a
    tiny corpus it overfits within seconds, which makes it the model for regularisation
    experiments on a CPU.

    >>> NgramMLP(vocab_size=10, context=3)(torch.zeros(2, 3, dtype=torch.long)).shape
    torch.Size([2, 10])
    """

    def __init__(self, vocab_size: int, context: int = 8, d_embed: int = 16, hidden: int = 256,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.context = context
        self.embed = torch.nn.Embedding(vocab_size, d_embed)
        self.hidden = torch.nn.Linear(context * d_embed, hidden)
        self.drop = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.tanh(self.hidden(self.embed(x).flatten(1)))))


def ngram_examples(ids: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(previous context tokens, next token)`` pair of ``ids``.

    >>> x, y = ngram_examples(np.arange(5), context=2)
    >>> x.tolist(), y.tolist()
    ([[0, 1], [1, 2], [2, 3]], [2, 3, 4])
    """
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    if len(ids) <= context:
        raise ValueError(f"need more than context={context} tokens; got {len(ids)}")
    x = ids.unfold(0, context, 1)[:-1]
    return x, ids[context:]


def mlp_run(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int, *, lr: float = 3e-3,
            steps: int = 300, context: int = 8, hidden: int = 256, dropout: float = 0.0,
            label_smoothing: float = 0.0, weight_decay: float = 0.0, eval_every: int = 10,
            seed: int = 0) -> QuickRun:
    """Train an :class:`NgramMLP` full-batch (every example of ``train_ids`` in every step)
    with AdamW at a constant ``lr``; every ``eval_every`` steps record the plain
    cross-entropy on all of ``train_ids`` and ``val_ids`` with dropout off.

    >>> ids = np.tile(np.arange(6), 30)
    >>> run = mlp_run(ids, ids, vocab_size=6, steps=20, context=2, hidden=16, lr=3e-2)
    >>> run.evals[-1]["train_loss"] < 0.5 < run.evals[0]["train_loss"]
    True
    """
    torch.manual_seed(seed)
    model = NgramMLP(vocab_size, context, hidden=hidden, dropout=dropout)
    optimizer = AdamW(weight_decay_groups(model, weight_decay), lr=lr)
    data = {"train": ngram_examples(train_ids, context), "val": ngram_examples(val_ids, context)}
    run = QuickRun(lr=float(lr))

    @torch.no_grad()
    def evaluate(step: int) -> None:
        model.eval()
        run.evals.append({"step": step, **{f"{name}_loss": F.cross_entropy(model(x), y).item()
                                           for name, (x, y) in data.items()}})
        model.train()

    evaluate(0)
    x, y = data["train"]
    for step in range(steps):
        loss = smoothed_cross_entropy(model(x), y, label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        run.train_losses.append(loss.item())
        if (step + 1) % eval_every == 0:
            evaluate(step + 1)
    return run
