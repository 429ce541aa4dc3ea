"""Chapter 04 (training) exercises: the pieces of a pretraining loop, checked against
llmlab.training and against PyTorch's own (``F.cross_entropy``, ``torch.optim.AdamW``,
``LinearLR`` + ``CosineAnnealingLR``, ``clip_grad_norm_``).

1. ``get_batch``: random windows of a token array, targets shifted by one;
2. ``cross_entropy``: the loss from logits, stable for any logit size, with ``ignore_index``;
3. ``adamw_step``: one AdamW update of one tensor, written out;
4. ``lr_at``: linear warm-up then cosine decay to ``min_lr``;
5. ``clip_grad_norm``: one factor for every gradient, from their global norm;
6. ``training_step``: the five pieces in the one order that works (train mode, zero the
   gradients, forward, loss, backward, clip, ``optimizer.step(lr)``);
7. ``mask_tokens``: BERT's masked-LM inputs and labels (15%, then 80/10/10).

Each check runs several cases, including awkward ones (a batch of one, ``block_size =
len(data) - 1``, logits that overflow a naive ``exp``, zero gradients, a warm-up of 0 steps,
steps past the end, gradients left over from an earlier backward, a model left in eval
mode), says which case failed with the expected and the actual value, and names the
classic mistake when the answer matches one.

The checks live in one module per theme, each registering its exercises on import:
``batches`` (1, 2), ``optimizer`` (3 to 5), ``step`` (6) and ``token_masking`` (7).
"""

from __future__ import annotations

# Sorted names are also the order of the exercises, so the registry lists them as the lab does.
from llmlab.course.exercises.ch04.batches import reference_cross_entropy, reference_get_batch
from llmlab.course.exercises.ch04.optimizer import (
    reference_adamw_step,
    reference_clip_grad_norm,
    reference_lr_at,
)
from llmlab.course.exercises.ch04.step import reference_training_step
from llmlab.course.exercises.ch04.token_masking import reference_mask_tokens

__all__ = [
    "reference_adamw_step",
    "reference_clip_grad_norm",
    "reference_cross_entropy",
    "reference_get_batch",
    "reference_lr_at",
    "reference_mask_tokens",
    "reference_training_step",
]
