"""Pretraining a GPT, from scratch and the production way (chapter 04).

- ``llmlab.training.cleaning``: normalisation, exact deduplication, Gopher/C4-style
  quality filters, PII scrubbing, language identification, a seeded web-crawl mix to
  score them on
- ``llmlab.training.near_dedup``: near-duplicate detection: shingles, MinHash, LSH
- ``llmlab.training.experiments``: seconds-long runs for experiments (learning-rate sweeps,
  dropout, label smoothing, overfitting) and a label-smoothed cross-entropy
- ``llmlab.training.data``: token files, memory maps, random-window batches
- ``llmlab.training.objectives``: cross-entropy from scratch (the loss itself is
  ``llmlab.model.lm_loss``), masked-LM inputs and span corruption
- ``llmlab.training.optim``: AdamW, warm-up + cosine, clipping, accumulation, mixed
  precision, activation checkpointing
- ``llmlab.training.config``: ``TrainConfig`` and the YAML files in ``configs/`` (shipped
  in the package as ``llmlab/configs``, loadable by name)
- ``llmlab.training.hf``: the production path: the same GPT as a transformers
  ``GPT2LMHeadModel`` trained by ``Trainer`` on a ``datasets`` table
- ``llmlab.training.mlm``: masked-LM pretraining of a tiny BERT (``BertForMaskedLM``)
- ``llmlab.training.zero``: DeepSpeed ZeRO stages 1-3 on llmlab's GPT (``deepspeed_config``,
  ``run_deepspeed``; DeepSpeed is imported only when used)
- ``llmlab.training.trainer``: ``Trainer``/``train`` with evaluation, checkpoints,
  TensorBoard, and data parallelism (torchrun or ``run_data_parallel``)
"""

from llmlab.training.cleaning import (
    QualityRules,
    WebCrawl,
    content_hash,
    exact_dedup,
    make_web_crawl,
    normalize,
    quality_filter,
    split_paragraphs,
)
from llmlab.training.config import (
    TrainConfig,
    apply_overrides,
    config_names,
    config_path,
    load_config,
)
from llmlab.training.data import (
    WindowSampler,
    encode_file,
    read_tokens,
    split_tokens,
    token_dtype,
    write_tokens,
)
from llmlab.training.hf import (
    gpt2_config,
    logged_losses,
    make_trainer,
    token_blocks,
    training_arguments,
    window_dataset,
)
from llmlab.training.mlm import (
    FillInScore,
    evaluate_fill_in,
    fill_in,
    mask_for_eval,
    masked_lm_loss,
    tiny_bert_config,
    train_masked_lm,
)
from llmlab.training.near_dedup import minhash_signatures, near_duplicates, shingle_hashes
from llmlab.training.objectives import (
    cross_entropy,
    mask_tokens,
    span_corruption,
    undo_span_corruption,
)
from llmlab.training.optim import (
    AdamW,
    WarmupCosine,
    accumulate_gradients,
    autocast,
    clip_grad_norm,
    enable_activation_checkpointing,
    weight_decay_groups,
)
from llmlab.training.trainer import Trainer, load_trained, prepare_data, run_data_parallel, train

__all__ = [
    "QualityRules", "WebCrawl", "content_hash", "exact_dedup", "make_web_crawl",
    "minhash_signatures", "near_duplicates", "normalize", "quality_filter", "shingle_hashes",
    "split_paragraphs",
    "TrainConfig", "apply_overrides", "config_names", "config_path", "load_config",
    "WindowSampler", "encode_file", "read_tokens", "split_tokens",
    "token_dtype", "write_tokens",
    "cross_entropy", "mask_tokens", "span_corruption", "undo_span_corruption",
    "AdamW", "WarmupCosine", "accumulate_gradients", "autocast", "clip_grad_norm",
    "enable_activation_checkpointing", "weight_decay_groups",
    "Trainer", "load_trained", "prepare_data", "run_data_parallel", "train",
    "gpt2_config", "logged_losses", "make_trainer", "token_blocks", "training_arguments",
    "window_dataset",
    "FillInScore", "evaluate_fill_in", "fill_in", "mask_for_eval", "masked_lm_loss",
    "tiny_bert_config", "train_masked_lm",
]
