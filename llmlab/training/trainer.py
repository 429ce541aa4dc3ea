"""The training loop: data, model, AdamW, schedule, evaluation, checkpoints, logging,
and data parallelism, driven by a ``TrainConfig``.

From a notebook::

    trainer = train(load_config("configs/shakespeare_char.yaml", ["max_steps=200"]))
    trainer.history[-1]["loss"], trainer.evaluations[-1]["val_loss"]

From a shell: ``llmlab train --config configs/shakespeare_char.yaml``; on two processes:
``torchrun --nproc_per_node=2 -m llmlab.cli train --config ...``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from llmlab.decoding import SamplingConfig, generate
from llmlab.model import GPT, ModelConfig, lm_loss
from llmlab.runtime import device as best_device
from llmlab.runtime import seed_everything
from llmlab.tokenization import CharTokenizer, Tokenizer, from_state
from llmlab.training.config import TrainConfig
from llmlab.training.data import WindowSampler, read_tokens, split_tokens, write_tokens
from llmlab.training.optim import (
    AdamW,
    WarmupCosine,
    autocast,
    clip_grad_norm,
    enable_activation_checkpointing,
    weight_decay_groups,
)

__all__ = ["prepare_data", "Trainer", "train", "run_data_parallel", "load_trained"]

CHECKPOINT = "checkpoint.pt"


# ----------------------------------------------------------------------------- data


def _corpus(config: TrainConfig) -> str:
    from llmlab import assets

    if config.dataset in assets.names():
        text = assets.load(config.dataset)
    else:
        path = Path(config.dataset)
        if not path.is_file():
            raise FileNotFoundError(f"dataset {config.dataset!r} is neither an llmlab asset "
                                    f"({', '.join(assets.names())}) nor a text file")
        text = path.read_text(encoding="utf-8")
    if not isinstance(text, str):
        raise ValueError(f"dataset {config.dataset!r} does not load as text")
    return text[: config.max_chars] if config.max_chars else text


def prepare_data(config: TrainConfig) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(train_ids, val_ids, tokenizer)``: the corpus encoded once into a token file under
    ``out_dir/data`` (reused while corpus and tokenizer stay the same), memory-mapped and
    split."""
    text = _corpus(config)
    tokenizer: CharTokenizer | Tokenizer = (
        CharTokenizer.from_text(text) if config.tokenizer == "char" else Tokenizer.gpt2())
    # The token file is named after the text and the tokenizer's state ({"kind": "char",
    # "chars": ...} or {"kind": "gpt2"}, the dicts earlier runs hashed: their files are reused).
    digest = hashlib.sha256(text.encode("utf-8") + json.dumps(tokenizer.to_state()).encode())
    path = Path(config.out_dir) / "data" / f"{config.tokenizer}-{digest.hexdigest()[:16]}.bin"
    if not path.is_file():
        write_tokens(tokenizer.encode(text), path, tokenizer.vocab_size)
    train_ids, val_ids = split_tokens(read_tokens(path, tokenizer.vocab_size),
                                      config.val_fraction)
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) <= config.block_size:
            raise ValueError(f"the {name} split has {len(ids)} tokens, not more than "
                             f"block_size={config.block_size}: use more text or a smaller "
                             "block_size")
    return train_ids, val_ids, tokenizer


# ----------------------------------------------------------------------------- distributed


def _setup_distributed(config: TrainConfig) -> tuple[int, int]:
    """``(rank, world_size)``; joins the process group that torchrun (or
    ``run_data_parallel``) describes in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if config.distributed == "none" or (config.distributed == "auto" and world == 1
                                        and not dist.is_initialized()):
        return 0, 1
    if not dist.is_initialized():
        if world == 1 and "MASTER_ADDR" not in os.environ:
            raise ValueError(f"distributed={config.distributed!r} needs several processes: "
                             "launch with `torchrun --nproc_per_node=2 -m llmlab.cli train ...`")
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def free_port() -> int:
    """A TCP port on this machine that nothing listens on, for a local job's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_local_rank_environment(rank: int, world_size: int, port: int) -> None:
    """Describe rank ``rank`` of a ``world_size``-process job on this machine in the
    environment, as ``torchrun`` does, so that ``init_process_group`` can join it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))


def _data_parallel_worker(rank: int, world_size: int, values: dict[str, Any], port: int) -> None:
    set_local_rank_environment(rank, world_size, port)
    # The ranks share the machine's cores: more threads each would only fight.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        Trainer(TrainConfig.from_dict(values)).fit()
    finally:
        dist.destroy_process_group()


def run_data_parallel(config: TrainConfig, world_size: int = 2) -> Path:
    """Train ``config`` on ``world_size`` CPU processes (gloo), as torchrun would, from a
    notebook or a test; returns rank 0's final checkpoint. Each rank works on
    ``batch_size // world_size`` of every batch."""
    import torch.multiprocessing as mp

    if config.distributed == "none":
        config = dataclasses.replace(config, distributed="ddp")
    mp.spawn(_data_parallel_worker, args=(world_size, config.to_dict(), free_port()),
             nprocs=world_size, join=True)
    return Path(config.out_dir) / CHECKPOINT


# ----------------------------------------------------------------------------- logging


def _summary_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("TensorBoard logging is off: the 'tensorboard' package is not installed "
                      "(pip install tensorboard). Metrics still go to metrics.jsonl and "
                      "Trainer.history.", stacklevel=3)
        return None
    return SummaryWriter(str(log_dir))


# ----------------------------------------------------------------------------- trainer


class Trainer:
    """One run: build everything from ``config``, then ``fit()``.

    Pass ``train_ids``/``val_ids``/``tokenizer`` to train on data already in memory;
    otherwise ``prepare_data(config)`` provides them. With ``config.resume`` the run
    continues from ``out_dir/checkpoint.pt`` when there is one, exactly where it stopped:
    weights, optimizer moments, step, the batch sampler's and every random generator's
    state are restored, so the losses match an uninterrupted run bit for bit.
    """

    def __init__(self, config: TrainConfig, train_ids: np.ndarray | None = None,
                 val_ids: np.ndarray | None = None, tokenizer: Any = None) -> None:
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
        self.config = config
        self.rank, self.world_size = _setup_distributed(config)
        self.device = self._pick_device()
        seed_everything(config.seed)
        if train_ids is None or val_ids is None:
            train_ids, val_ids, tokenizer = prepare_data(config)
        self.train_ids, self.val_ids, self.tokenizer = train_ids, val_ids, tokenizer
        vocab = tokenizer.vocab_size if tokenizer is not None else int(max(train_ids)) + 1
        self.model_config: ModelConfig = config.model_config(vocab)
        self.model = GPT(self.model_config).to(self.device)
        if config.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        self.net = self._parallel(self.model)  # what the training step calls
        self.optimizer = AdamW(weight_decay_groups(self.model, config.weight_decay),
                               lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)
        self.schedule = WarmupCosine(config.lr, config.min_lr, config.warmup_steps,
                                     config.max_steps)
        self.sampler = WindowSampler(train_ids, config.batch_size, config.block_size,
                                     seed=config.seed, rank=self.rank,
                                     world_size=self.world_size)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        autocast(config.precision, self.device)  # an unusable precision fails here
        self.step = 0
        self.history: list[dict[str, float]] = []  # one row per optimizer step
        self.evaluations: list[dict[str, float]] = []
        self.out_dir = Path(config.out_dir)
        self._writer: Any = None
        self.train_seconds = 0.0  # wall time of the last fit()
        if config.resume and (self.out_dir / CHECKPOINT).is_file():
            self.load_checkpoint(self.out_dir / CHECKPOINT)

    def _pick_device(self) -> torch.device:
        if self.config.device != "auto":
            return best_device(self.config.device)
        chosen = best_device()
        if chosen.type == "cuda" and self.world_size > 1:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return chosen if chosen.type != "mps" or self.world_size == 1 else torch.device("cpu")

    def _parallel(self, model: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return model
        if self.config.distributed == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:
                fully_shard(block)
            return fully_shard(model)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- one step --------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns its metrics."""
        cfg = self.config
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum_steps):
            x, y = self.sampler.sample(self.device)
            last = micro == cfg.grad_accum_steps - 1
            # DDP all-reduces gradients on every backward; the earlier micro-batches skip it.
            no_sync = getattr(self.net, "no_sync", None)
            sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
            with sync:
                with autocast(cfg.precision, self.device):
                    loss = lm_loss(self.net(x), y) / cfg.grad_accum_steps
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
        grad_norm = float("nan")
        if cfg.grad_clip is not None:
            if cfg.distributed == "fsdp" and self.world_size > 1:  # sharded gradients
                grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(),
                                                           cfg.grad_clip).full_tensor())
            else:
                grad_norm = float(clip_grad_norm(self.model.parameters(), cfg.grad_clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.world_size > 1:  # report the loss of the whole batch, not this rank's part
            dist.all_reduce(total)
            total /= self.world_size
        self.step += 1
        return {"step": self.step, "loss": float(total), "lr": lr, "grad_norm": grad_norm}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss and perplexity on ``eval_batches`` fixed batches of each split.

        The windows come from generators seeded afresh each time, so every evaluation
        scores the same text and the training generators are left untouched."""
        cfg = self.config
        self.net.eval()
        result: dict[str, float] = {"step": self.step}
        for split, ids in (("train", self.train_ids), ("val", self.val_ids)):
            sampler = WindowSampler(ids, cfg.batch_size, cfg.block_size, seed=cfg.seed + 1)
            losses = []
            for _ in range(cfg.eval_batches):
                x, y = sampler.sample(self.device)
                with autocast(cfg.precision, self.device):
                    losses.append(lm_loss(self.net(x), y).item())
            loss = sum(losses) / len(losses)
            result[f"{split}_loss"], result[f"{split}_ppl"] = loss, math.exp(loss)
        self.net.train()
        return result

    def sample(self, max_new_tokens: int = 200, prompt: str = "\n", seed: int = 0,
               temperature: float = 0.8, top_k: int | None = None) -> str:
        """Text the model writes after ``prompt`` (its own generator: training RNGs stay),
        sampled by ``llmlab.decoding.generate`` over a window of the last ``block_size``
        tokens, so it may run on past the context."""
        if self.tokenizer is None:
            raise ValueError("sample() needs the tokenizer; this Trainer was built without one")
        ids = self.tokenizer.encode(prompt) or [0]
        idx = torch.tensor([ids], device=self.device)
        generator = torch.Generator(self.device).manual_seed(seed)
        config = SamplingConfig(temperature=temperature, top_k=top_k)
        out = generate(self.model, idx, max_new_tokens, config, generator=generator,
                       use_cache=False)
        return self.tokenizer.decode(out[0, len(ids):].tolist())

    # ---- the loop --------------------------------------------------------------------

    def fit(self, steps: int | None = None) -> list[dict[str, float]]:
        """Train until ``max_steps`` (or for ``steps`` more), evaluating every
        ``eval_interval`` steps and at the end; save a checkpoint every
        ``checkpoint_interval`` steps and when stopping. Returns ``history``."""
        from tqdm.auto import tqdm

        cfg = self.config
        end = cfg.max_steps if steps is None else min(self.step + steps, cfg.max_steps)
        bar = tqdm(total=end - self.step, desc="training", disable=not (cfg.progress
                                                                       and self.is_main))
        started = time.perf_counter()
        while self.step < end:
            tic = time.perf_counter()
            row = self.train_step()
            row["seconds"] = time.perf_counter() - tic
            row["tokens"] = self.step * cfg.batch_size * cfg.grad_accum_steps * cfg.block_size
            self.history.append(row)
            if self.step % cfg.log_interval == 0 or self.step == end:
                self._log(row, "train")
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}")
            if self.step % cfg.eval_interval == 0 or self.step == cfg.max_steps:
                evaluation = self.evaluate()
                self.evaluations.append(evaluation)
                self._log(evaluation, "eval")
                if cfg.sample_chars and self.is_main and self.tokenizer is not None:
                    bar.write(f"step {self.step} sample: {self.sample(cfg.sample_chars)!r}")
            if cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0:
                self.save_checkpoint()
            bar.update(1)
        bar.close()
        self.train_seconds = time.perf_counter() - started
        self.save_checkpoint()
        if self._writer:  # None: nothing logged yet; False: TensorBoard is not installed
            self._writer.flush()
        return self.history

    def _log(self, row: dict[str, float], kind: str) -> None:
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, **row}) + "\n")
        if self.config.tensorboard and self._writer is None:
            self._writer = _summary_writer(self.out_dir / "tensorboard") or False
        if self._writer:
            for key, value in row.items():
                if key != "step" and math.isfinite(value):
                    self._writer.add_scalar(f"{kind}/{key}", value, row["step"])

    # ---- checkpoints -----------------------------------------------------------------

    @property
    def _sharded(self) -> bool:
        return self.config.distributed == "fsdp" and self.world_size > 1

    def state_dict(self, include_weights: bool = True) -> dict[str, Any]:
        """Everything a bit-for-bit resume needs (an FSDP run's checkpoint holds the full
        weights but no optimizer state: it loads with ``load_trained``, it cannot resume)."""
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
               "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "model": self.model.state_dict() if include_weights else None,
            "optimizer": self.optimizer.state_dict() if include_weights else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "history": self.history,
            "evaluations": self.evaluations,
            "config": self.config.to_dict(),
            "model_config": dataclasses.asdict(self.model_config),
            # llmlab's tokenizers save themselves; another one (say, from transformers)
            # is not recorded, and load_trained then returns no tokenizer.
            "tokenizer": (self.tokenizer.to_state()
                          if hasattr(self.tokenizer, "to_state") else None),
        }

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write ``state_dict()`` (rank 0 only) to ``path`` (default ``out_dir/checkpoint.pt``)."""
        path = Path(path) if path is not None else self.out_dir / CHECKPOINT
        state = None
        if self._sharded:
            # Every rank holds a shard: gathering the full weights is a collective call.
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            full = get_model_state_dict(
                self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if self.is_main:
                state = {**self.state_dict(include_weights=False), "model": full}
        elif self.is_main:
            state = self.state_dict()
        if self.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            torch.save(state, partial)
            os.replace(partial, path)  # a crash mid-write never leaves half a checkpoint
        if self.world_size > 1:
            dist.barrier()
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a ``save_checkpoint`` file into this trainer."""
        # Our own file: it holds numpy and python RNG states, which weights_only refuses.
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["optimizer"] is None or self._sharded:
            raise ValueError(f"{path} cannot resume this run: FSDP runs save weights only "
                             "(use load_trained for them) and do not resume")
        if state["model_config"] != dataclasses.asdict(self.model_config):
            raise ValueError(f"{path} was written for another model: "
                             f"{state['model_config']} != {dataclasses.asdict(self.model_config)}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        self.step = state["step"]
        self.history, self.evaluations = state["history"], state["evaluations"]


def train(config: TrainConfig | dict[str, Any], **data: Any) -> Trainer:
    """Build a ``Trainer`` for ``config`` (a ``TrainConfig`` or a plain mapping) and fit it."""
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    trainer = Trainer(config, **data)
    trainer.fit()
    return trainer


def load_trained(path: str | os.PathLike) -> tuple[GPT, Any]:
    """The model and tokenizer saved in a checkpoint, ready to ``generate``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = GPT(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    tokenizer = from_state(state["tokenizer"]) if state["tokenizer"] else None
    return model.eval(), tokenizer
