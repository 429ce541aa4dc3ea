"""Pretraining objectives: what the model is asked to predict.

- **Causal LM** (GPT): predict every next token; the loss is a cross-entropy, written
  out here with the log-sum-exp trick (:func:`cross_entropy`, a teaching copy: the loss
  the library trains with is ``llmlab.model.lm_loss``, on ``F.cross_entropy``).
- **Masked LM** (BERT): hide 15% of the tokens and predict them.
- **Span corruption** (T5): replace random spans with sentinel tokens; the target lists
  each sentinel followed by the tokens it hid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["cross_entropy", "mask_tokens", "span_corruption", "undo_span_corruption"]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = -100) -> torch.Tensor:
    """Mean of ``-log softmax(logits)[target]`` over the rows whose target is not
    ``ignore_index``; ``logits (N, vocab)``, ``targets (N,)``.

    A teaching copy of ``torch.nn.functional.cross_entropy``, the computation inside
    ``llmlab.model.lm_loss`` (the one loss the library trains with); the tests check that
    the two agree, gradients included.

    ``log softmax(z)_t = z_t - log sum_j exp(z_j)``. Computing ``exp(z_j)`` directly
    overflows for large logits, so the maximum ``m`` is taken out first:
    ``log sum_j exp(z_j) = m + log sum_j exp(z_j - m)``, where every exponent is <= 0.

    >>> logits = torch.tensor([[1000.0, 0.0], [0.0, 0.0]])   # exp(1000) = inf in float32
    >>> cross_entropy(logits, torch.tensor([0, 1]))           # (0 + ln 2) / 2
    tensor(0.3466)
    >>> cross_entropy(logits, torch.tensor([0, -100]))        # the second row is ignored
    tensor(0.)
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, vocab) and targets (N,); got logits "
                         f"{tuple(logits.shape)} and targets {tuple(targets.shape)}")
    logits = logits.float()  # a bf16/fp16 softmax loses the small probabilities
    keep = targets != ignore_index
    safe_targets = torch.where(keep, targets, torch.zeros_like(targets))
    if keep.any() and (safe_targets.min() < 0 or safe_targets.max() >= logits.shape[1]):
        raise ValueError(f"targets must be in [0, vocab={logits.shape[1]}) or "
                         f"ignore_index={ignore_index}")
    m = logits.max(dim=1, keepdim=True).values.detach()  # a constant shift: no gradient needed
    log_sum_exp = m.squeeze(1) + (logits - m).exp().sum(dim=1).log()
    nll = log_sum_exp - logits.gather(1, safe_targets[:, None]).squeeze(1)
    # 0/0 = nan when every target is ignored, as F.cross_entropy does
    return (nll * keep).sum() / keep.sum()


def mask_tokens(
    ids: torch.Tensor, vocab_size: int, mask_id: int, generator: torch.Generator,
    mlm_probability: float = 0.15, special_ids: Sequence[int] = (), ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM inputs and labels for a batch of ``ids``.

    Each token (special tokens excepted) is chosen with probability ``mlm_probability``.
    A chosen token becomes ``mask_id`` 80% of the time, a random token 10% of the time,
    and stays as it is 10% of the time (so the model cannot rely on seeing ``[MASK]``,
    which never occurs at fine-tuning time). Labels hold the original token where one
    was chosen and ``ignore_index`` elsewhere.

    >>> g = torch.Generator().manual_seed(0)
    >>> ids = torch.arange(5, 25).reshape(2, 10)
    >>> inputs, labels = mask_tokens(ids, vocab_size=30, mask_id=4, generator=g)
    >>> bool(((labels == -100) | (labels == ids)).all())   # labels: the originals or ignored
    True
    >>> bool((inputs[labels == -100] == ids[labels == -100]).all())   # the rest untouched
    True
    """
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1); got {mlm_probability}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id must be in [0, vocab_size={vocab_size}); got {mask_id}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"ids must be integer token ids; got {ids.dtype}")
    device = ids.device

    def uniform(shape: torch.Size) -> torch.Tensor:
        return torch.rand(shape, generator=generator).to(device)

    special = torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype, device=device))
    chosen = (uniform(ids.shape) < mlm_probability) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, ignore_index))
    draw = uniform(ids.shape)  # one draw splits the chosen tokens 80 / 10 / 10
    to_mask = chosen & (draw < 0.8)
    to_random = chosen & (draw >= 0.8) & (draw < 0.9)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator).to(device, ids.dtype)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def _random_segmentation(total: int, n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of ``n_segments`` non-empty segments summing to ``total``, uniformly at random."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=n_segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def span_corruption(
    ids: Sequence[int], sentinel_ids: Sequence[int], rng: np.random.Generator,
    noise_density: float = 0.15, mean_span_length: float = 3.0,
) -> tuple[list[int], list[int]]:
    """T5's span corruption of one sequence: ``(inputs, targets)``.

    About ``noise_density`` of the tokens, in spans of ``mean_span_length`` on average,
    are hidden. In ``inputs`` each hidden span becomes one sentinel; ``targets`` lists each
    sentinel followed by the tokens it replaced, and ends with one more sentinel. Spans
    alternate with kept stretches, starting with a kept one (as in T5).

    >>> rng = np.random.default_rng(0)
    >>> ids = list(range(40))                  # 6 noise tokens (15%) in 2 spans (mean 3)
    >>> inputs, targets = span_corruption(ids, sentinel_ids=[99, 98, 97], rng=rng)
    >>> inputs[18:]
    [18, 19, 20, 21, 99, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 98]
    >>> targets
    [99, 22, 23, 24, 25, 26, 98, 39, 97]
    >>> undo_span_corruption(inputs, targets, [99, 98, 97]) == ids
    True
    """
    length = len(ids)
    if not 0.0 < noise_density < 1.0 or mean_span_length < 1.0:
        raise ValueError(f"need 0 < noise_density < 1 and mean_span_length >= 1; got "
                         f"{noise_density} and {mean_span_length}")
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens; got {length}")
    if set(sentinel_ids) & set(ids):
        raise ValueError("sentinel ids must not occur in the input ids")
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(round(n_noise / mean_span_length), 1)
    n_spans = min(n_spans, n_noise, length - n_noise)
    if len(sentinel_ids) < n_spans + 1:
        raise ValueError(f"{n_spans} spans need {n_spans + 1} sentinel ids; "
                         f"got {len(sentinel_ids)}")
    noise_lengths = _random_segmentation(n_noise, n_spans, rng)
    kept_lengths = _random_segmentation(length - n_noise, n_spans, rng)
    inputs: list[int] = []
    targets: list[int] = []
    position = 0
    for span, (kept, noise) in enumerate(zip(kept_lengths, noise_lengths, strict=True)):
        inputs += list(ids[position:position + kept]) + [sentinel_ids[span]]
        position += kept
        targets += [sentinel_ids[span]] + list(ids[position:position + noise])
        position += noise
    targets.append(sentinel_ids[n_spans])
    return [int(i) for i in inputs], [int(i) for i in targets]


def undo_span_corruption(inputs: Sequence[int], targets: Sequence[int],
                         sentinel_ids: Sequence[int]) -> list[int]:
    """The original sequence, rebuilt by putting each sentinel's span back in place."""
    sentinels = set(sentinel_ids)
    spans: dict[int, list[int]] = {}
    current: list[int] | None = None
    for token in targets:
        if token in sentinels:
            current = spans.setdefault(token, [])
        elif current is None:
            raise ValueError("targets must start with a sentinel id")
        else:
            current.append(token)
    out: list[int] = []
    for token in inputs:
        if token in sentinels:
            if token not in spans:
                raise ValueError(f"sentinel {token} of the inputs is missing from the targets")
            out += spans[token]
        else:
            out.append(token)
    return out
