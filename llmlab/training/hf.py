"""The production path: the same GPT trained with transformers' ``Trainer`` on a
``datasets.Dataset``, set up from an llmlab ``TrainConfig``.

- ``gpt2_config``: the ``GPT2Config`` of exactly the architecture an llmlab GPT-2-style
  ``ModelConfig`` describes (``GPT.from_hf_gpt2`` copies one into the other);
- ``token_blocks``: a token array cut into fixed-length blocks, the "group texts" recipe;
- ``window_dataset``: the very windows a ``WindowSampler`` draws, as rows in batch order;
- ``training_arguments`` / ``make_trainer``: ``TrainingArguments`` and a ``Trainer`` with
  the config's optimizer, schedule, clipping, batch size, steps and seed, for a CPU and
  offline (no hub, no reporting service; TensorBoard only when the config asks for it).

``tests/test_training_hf.py`` trains one model both ways on the same batches and checks
that llmlab's ``Trainer`` and transformers' ``Trainer`` log the same losses step by step.

>>> from llmlab.model import ModelConfig
>>> hf_config = gpt2_config(ModelConfig.gpt2_style(vocab_size=65, context_length=32,
...                                                n_layer=2, n_head=4, d_model=64))
>>> hf_config.n_layer, hf_config.n_embd, hf_config.n_inner, hf_config.activation_function
(2, 64, 256, 'gelu_new')
>>> blocks = token_blocks(np.arange(10), block_size=4)   # the last 2 tokens are dropped
>>> len(blocks), blocks[1]
(2, {'input_ids': [4, 5, 6, 7], 'labels': [4, 5, 6, 7]})
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

import numpy as np
import torch

from llmlab.model import ModelConfig
from llmlab.training.config import TrainConfig
from llmlab.training.data import WindowSampler
from llmlab.training.optim import WarmupCosine

__all__ = ["gpt2_config", "token_blocks", "window_dataset", "training_arguments",
           "make_trainer", "logged_losses"]

# What GPT2LMHeadModel implements; anything else has no GPT2Config equivalent.
_GPT2_STYLE = {"position": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True,
               "pre_norm": True}


def gpt2_config(model_config: ModelConfig) -> Any:
    """The ``transformers.GPT2Config`` of the same architecture as ``model_config``, a
    GPT-2-style llmlab config: same shapes, same parameter count, same function (the
    tanh GELU is GPT-2's ``gelu_new``; one dropout rate for embeddings, attention and
    residuals, as llmlab uses).

    A config that GPT-2 cannot express (rotary positions, RMSNorm, SwiGLU, no biases,
    post-norm, grouped-query attention, a head size other than ``d_model / n_head``)
    raises ``ValueError`` naming every difference.
    """
    from transformers import GPT2Config

    if not isinstance(model_config, ModelConfig):
        raise ValueError(f"expected an llmlab ModelConfig; got {type(model_config).__name__}")
    c = model_config
    wrong = [f"{name}={getattr(c, name)!r} (GPT-2: {want!r})"
             for name, want in _GPT2_STYLE.items() if getattr(c, name) != want]
    if c.n_kv_head != c.n_head:
        wrong.append(f"n_kv_head={c.n_kv_head} (GPT-2: n_head={c.n_head})")
    if c.head_dim * c.n_head != c.d_model:
        wrong.append(f"head_dim={c.head_dim} (GPT-2: d_model / n_head = {c.d_model / c.n_head})")
    if wrong:
        raise ValueError("gpt2_config needs a GPT-2-style ModelConfig "
                         "(ModelConfig.gpt2_style); this one has " + ", ".join(wrong))
    return GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.context_length, n_layer=c.n_layer,
        n_head=c.n_head, n_embd=c.d_model, n_inner=c.d_ff, activation_function="gelu_new",
        layer_norm_epsilon=c.norm_eps, resid_pdrop=c.dropout, embd_pdrop=c.dropout,
        attn_pdrop=c.dropout, tie_word_embeddings=c.tie_embeddings,
        # GPT-2's own ids (50256) would point outside a small vocabulary.
        bos_token_id=None, eos_token_id=None, pad_token_id=None)


def _as_token_array(ids: Any) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D array of integer token ids; got shape "
                         f"{array.shape} of {array.dtype}")
    return array.astype(np.int64)


def token_blocks(ids: Any, block_size: int) -> Any:
    """``ids`` (one long array of token ids, e.g. a memory-mapped token file) cut into
    consecutive blocks of ``block_size`` tokens: a ``datasets.Dataset`` with columns
    ``input_ids`` and ``labels``, one block per row.

    This is the "group texts" recipe of transformers' language-modelling examples: the
    documents are concatenated, the remainder that does not fill a last block is dropped,
    and ``labels`` is a copy of ``input_ids``. The targets are *not* shifted here: a
    transformers causal LM shifts them itself, so a block of ``T`` tokens trains ``T - 1``
    predictions (llmlab's ``WindowSampler`` cuts ``T + 1`` tokens to train ``T``).
    """
    array = _as_token_array(ids)
    if not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size must be an int >= 2 (a block of T tokens gives T - 1 "
                         f"predictions); got {block_size!r}")
    n_blocks = len(array) // block_size
    if n_blocks == 0:
        raise ValueError(f"{len(array)} tokens do not fill one block of {block_size}")
    return _rows_dataset(array[: n_blocks * block_size], block_size)


def window_dataset(sampler: WindowSampler, n_batches: int) -> Any:
    """The next ``n_batches`` batches that ``sampler`` draws, as a ``datasets.Dataset``
    of windows (``block_size + 1`` tokens, ``input_ids`` = ``labels``), in draw order.

    Read in order (``train_sampling_strategy="sequential"``) with the sampler's batch
    size, it gives transformers' ``Trainer`` exactly the batches llmlab's ``Trainer``
    draws from a sampler with the same seed: the model shifts the labels, so a window
    trains the same ``block_size`` predictions as llmlab's ``(x, y)``. The model then
    needs ``block_size + 1`` positions.

    >>> ids = np.arange(100, dtype=np.uint16)
    >>> rows = window_dataset(WindowSampler(ids, batch_size=2, block_size=4, seed=0), 3)
    >>> x, y = WindowSampler(ids, batch_size=2, block_size=4, seed=0).sample()
    >>> len(rows), rows[0]["input_ids"] == x[0].tolist() + [y[0, -1].item()]
    (6, True)
    """
    if not isinstance(sampler, WindowSampler):
        raise ValueError(f"sampler must be a WindowSampler; got {type(sampler).__name__}")
    if not isinstance(n_batches, int) or n_batches < 1:
        raise ValueError(f"n_batches must be a positive int; got {n_batches!r}")
    windows = []
    for _ in range(n_batches):
        x, y = sampler.sample()
        windows.append(torch.cat([x, y[:, -1:]], dim=1))
    rows = torch.cat(windows)
    return _rows_dataset(rows.flatten().numpy(), rows.shape[1])


def _rows_dataset(flat: np.ndarray, row_length: int) -> Any:
    """A ``Dataset`` whose rows are consecutive ``row_length`` slices of ``flat``, built as
    one Arrow column of fixed-size lists (no Python lists in between: 4 M tokens take
    0.4 s, not seconds); ``labels`` shares the column's memory with ``input_ids``."""
    import pyarrow as pa
    from datasets import Dataset

    column = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(np.int64)), row_length)
    return Dataset.from_dict({"input_ids": column, "labels": column})


def training_arguments(config: TrainConfig, **overrides: Any) -> Any:
    """``transformers.TrainingArguments`` carrying ``config``'s settings; ``overrides``
    (any ``TrainingArguments`` field) are applied last.

    Mapped one to one: batch size, accumulation, ``max_steps``, peak and final learning
    rate, warm-up steps, AdamW's betas, eps and weight decay, clipping, precision,
    activation (gradient) checkpointing, logging/evaluation/checkpoint intervals, seed,
    and ``out_dir``. The schedule is transformers' ``cosine_with_min_lr``: the same
    cosine to ``min_lr`` after the warm-up, but its warm-up starts at 0 (``lr * s / W``
    at step ``s``) where ``WarmupCosine`` starts at ``lr / (W + 1)``; ``make_trainer``
    can use llmlab's curve instead. ``batch_size`` is per device here (the same on one
    device). Nothing is reported anywhere but TensorBoard (if ``config.tensorboard`` and
    the package is installed; it writes under ``out_dir/runs/``), and nothing is pushed to
    the hub.
    """
    from transformers import TrainingArguments

    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
    tensorboard = config.tensorboard and importlib.util.find_spec("tensorboard") is not None
    settings: dict[str, Any] = dict(
        output_dir=config.out_dir,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum_steps,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": config.min_lr},
        warmup_steps=config.warmup_steps,
        # The default "adamw_torch_fused" computes the same update with other rounding.
        optim="adamw_torch",
        adam_beta1=config.beta1, adam_beta2=config.beta2, adam_epsilon=config.eps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.grad_clip or 0.0,  # 0 switches clipping off
        bf16=config.precision == "bf16", fp16=config.precision == "fp16",
        activation_checkpointing=config.activation_checkpointing,
        logging_steps=config.log_interval,
        save_strategy="steps" if config.checkpoint_interval else "no",
        save_steps=config.checkpoint_interval or 500,
        seed=config.seed, data_seed=config.seed,
        use_cpu=config.device == "cpu",
        dataloader_drop_last=True,  # every batch full, as llmlab's sampler draws them
        # Pinned memory only speeds up copies to a GPU; on a CPU torch warns about it.
        dataloader_pin_memory=torch.cuda.is_available() and config.device != "cpu",
        disable_tqdm=not config.progress,
        report_to=["tensorboard"] if tensorboard else "none",
        push_to_hub=False,
    )
    settings.update(overrides)
    try:
        return TrainingArguments(**settings)
    except TypeError as error:  # an unknown keyword: say which field list to look at
        raise ValueError(f"not a TrainingArguments field: {error}") from None


def make_trainer(
    model: Any, config: TrainConfig, train_dataset: Any, eval_dataset: Any = None,
    schedule: Literal["transformers", "llmlab"] = "transformers", **overrides: Any,
) -> Any:
    """A ``transformers.Trainer`` for ``model`` on ``train_dataset`` (rows of
    ``input_ids``/``labels``) with ``training_arguments(config, **overrides)``.

    With an ``eval_dataset`` it evaluates every ``eval_interval`` steps on its first
    ``eval_batches`` batches. ``schedule="llmlab"`` replaces the learning-rate curve
    by ``WarmupCosine`` (the scheduler is one of ``Trainer``'s override points); the
    default keeps transformers' ``cosine_with_min_lr``.
    """
    from transformers import Trainer as HFTrainer

    if schedule not in ("transformers", "llmlab"):
        raise ValueError(f"schedule must be 'transformers' or 'llmlab'; got {schedule!r}")
    for name, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
        if dataset is None:
            continue
        columns = set(getattr(dataset, "column_names", None) or ())
        if not {"input_ids", "labels"} <= columns:
            raise ValueError(f"{name} must be a datasets.Dataset with columns 'input_ids' and "
                             f"'labels' (see token_blocks); got columns {sorted(columns)}")
        _check_fits(model, len(dataset[0]["input_ids"]), name)
    if eval_dataset is not None:
        overrides = {"eval_strategy": "steps", "eval_steps": config.eval_interval, **overrides}
        eval_dataset = eval_dataset.select(range(min(len(eval_dataset),
                                                     config.eval_batches * config.batch_size)))
    args = training_arguments(config, **overrides)
    _declare_causal_loss(model)
    trainer_class = HFTrainer
    if schedule == "llmlab":
        curve = WarmupCosine(config.lr, config.min_lr, config.warmup_steps, config.max_steps)
        trainer_class = type("LlmlabScheduleTrainer", (HFTrainer,),
                             {"create_scheduler": _llmlab_scheduler(curve)})
    return trainer_class(model=model, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset)


def _llmlab_scheduler(curve: WarmupCosine) -> Any:
    def create_scheduler(self: Any, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, curve.factor)
        return self.lr_scheduler
    return create_scheduler


def _declare_causal_loss(model: Any) -> None:
    """Make sure ``Trainer`` knows that a ``...LMHeadModel`` shifts its labels.

    ``Trainer`` divides the summed loss by the number of label tokens it counts itself,
    skipping each row's first label only when the model's ``loss_type`` says
    ``ForCausalLM`` (transformers PR #46204). ``loss_type`` is read from the class name,
    and ``GPT2LMHeadModel``'s matches nothing, so (in transformers 5.23) it counts one
    label too many per row: the loss and every gradient come out ``(T - 1) / T`` of the
    true mean (3% low for blocks of 33 tokens). The model itself already computes
    ``ForCausalLMLoss``; this only tells ``Trainer``.
    """
    if (getattr(model, "loss_type", "") is None
            and type(model).__name__.endswith("LMHeadModel")
            and not getattr(getattr(model, "config", None), "is_encoder_decoder", False)):
        model.loss_type = "ForCausalLM"


def _check_fits(model: Any, length: int, name: str) -> None:
    positions = getattr(getattr(model, "config", None), "n_positions", None)
    if positions is not None and length > positions:
        raise ValueError(f"{name} has rows of {length} tokens but the model has only "
                         f"{positions} positions: build it with context_length >= {length}")


def logged_losses(trainer: Any) -> list[float]:
    """The training loss of every logged step of a fitted transformers ``Trainer``
    (every step with ``logging_steps=1``), from ``trainer.state.log_history``."""
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]
