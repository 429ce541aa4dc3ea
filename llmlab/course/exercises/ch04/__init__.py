"""Chapter 04 (training) exercises: the pieces of a pretraining loop, checked against
llmlab.training and against PyTorch's own (``F.cross_entropy``, ``torch.optim.AdamW``,
``LinearLR`` + ``CosineAnnealingLR``, ``clip_grad_norm_``).

1. ``cross_entropy``: the loss from logits, stable for any logit size, with ``ignore_index``;
2. ``adamw_step``: one AdamW update of one tensor, written out;
3. ``lr_at``: linear warm-up then cosine decay to ``min_lr``;
4. ``clip_grad_norm``: one factor for every gradient, from their global norm;
5. ``training_step``: the pieces in the one order that works (train mode, zero the
   gradients, forward, loss, backward, clip, ``optimizer.step(lr)``), from a brief that
   names what the step must achieve, not the lines;
6. ``choose_learning_rate``: an open-ended experiment, checked by rerunning it: a peak rate
   for which a tiny GPT's validation loss after 100 steps is below a target;
7. ``mask_tokens``: BERT's masked-LM inputs and labels (15%, then 80/10/10);
8. ``minhash_signature``: MinHash from scratch, equal to ``near_dedup.minhash_signatures``.

The lab gives ``get_batch`` (``reference_get_batch``) rather than asking for it.

Each check runs several cases, including awkward ones (a batch of one, ``block_size =
len(data) - 1``, logits that overflow a naive ``exp``, zero gradients, a warm-up of 0 steps,
steps past the end, gradients left over from an earlier backward, a model left in eval
mode), says which case failed with the expected and the actual value, and names the
classic mistake when the answer matches one.

The checks live in one module per theme, each registering its exercises on import:
``batches`` (1), ``optimizer`` (2 to 4), ``step`` (5), ``lr_experiment`` (6),
``token_masking`` (7) and ``minhash`` (8).
"""

from __future__ import annotations

# Sorted names are also the order of the exercises, so the registry lists them as the lab does.
from llmlab.course.exercises.ch04.batches import reference_cross_entropy, reference_get_batch
from llmlab.course.exercises.ch04.lr_experiment import (
    lr_experiment,
    reference_choose_learning_rate,
)
from llmlab.course.exercises.ch04.minhash import reference_minhash_signature
from llmlab.course.exercises.ch04.optimizer import (
    reference_adamw_step,
    reference_clip_grad_norm,
    reference_lr_at,
)
from llmlab.course.exercises.ch04.step import reference_training_step
from llmlab.course.exercises.ch04.token_masking import reference_mask_tokens

__all__ = [
    "lr_experiment",
    "reference_adamw_step",
    "reference_choose_learning_rate",
    "reference_clip_grad_norm",
    "reference_cross_entropy",
    "reference_get_batch",
    "reference_lr_at",
    "reference_mask_tokens",
    "reference_minhash_signature",
    "reference_training_step",
]
