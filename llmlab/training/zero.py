"""ZeRO with DeepSpeed: llmlab's training run, with DeepSpeed's engine doing the
data parallelism, the sharding and the optimizer step (chapter 04, section 4.9).

ZeRO ("Zero Redundancy Optimizer") removes the copies that plain data parallelism keeps
on every rank, stage by stage: **stage 1** shards the optimizer state (Adam's two
moments), **stage 2** also the gradients, **stage 3** also the weights, which are
gathered layer by layer just before they are used. Stage 0 is plain data parallelism.

- ``deepspeed_config(config, stage, world_size)``: the DeepSpeed JSON for a llmlab run
  (``llmlab/configs/deepspeed/*.json`` are examples for the ``deepspeed`` launcher);
- ``train_deepspeed(config, stage)``: one rank of the run, under ``torchrun`` or the
  ``deepspeed`` launcher; it saves the final full weights and what each rank held;
- ``run_deepspeed(config, stages, world_size)``: starts the ranks on CPU processes, from
  a notebook or a test, like ``run_data_parallel``, and runs each ZeRO stage in turn;
- ``optimizer_state_bytes(optimizer)``: what the optimizer state costs on one rank.

From a shell (``DS_ACCELERATOR=cpu`` on a machine without a GPU)::

    torchrun --nproc_per_node=2 -m llmlab.training.zero --config tiny_test --stage 2
    deepspeed --num_gpus=2 --module llmlab.training.zero --config shakespeare_char --stage 3

The data, model, initial weights, weight-decay groups and learning-rate schedule are the
ones ``Trainer`` uses, so the final weights equal a one-process ``Trainer`` run on the
same global batch up to float rounding (``tests/test_training_deepspeed.py`` checks it).
DeepSpeed is optional: this module imports it only inside the functions that need it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import torch

from llmlab.training.config import TrainConfig, load_config
from llmlab.training.trainer import free_port, set_local_rank_environment

__all__ = ["deepspeed_config", "train_deepspeed", "run_deepspeed", "optimizer_state_bytes",
           "weights_file", "main"]

ZERO_STAGES = (0, 1, 2, 3)


def deepspeed_config(train_config: TrainConfig, stage: int, world_size: int) -> dict[str, Any]:
    """The DeepSpeed configuration (the JSON ``deepspeed.initialize`` and the ``deepspeed``
    launcher take) of ``train_config`` with ZeRO ``stage`` on ``world_size`` ranks.

    llmlab's ``batch_size`` counts sequences per micro-batch over *all* ranks, DeepSpeed's
    ``train_batch_size`` sequences per optimizer step over all ranks: it is
    ``batch_size * grad_accum_steps``, and each rank's micro-batch is
    ``batch_size // world_size``. The optimizer is torch's AdamW (``torch_adam``:
    DeepSpeed's fused Adam needs compiled CUDA kernels) with the run's betas, eps and
    weight decay; the learning rate here is the peak, the warm-up + cosine schedule is
    applied by the training loop at each step. ``precision: bf16`` becomes DeepSpeed's
    bf16 mode: bf16 weights and gradients with float32 master weights in the optimizer
    (llmlab's own bf16 is autocast over float32 weights: close, not identical).

    >>> config = TrainConfig(batch_size=8, grad_accum_steps=2, max_steps=10, warmup_steps=2)
    >>> ds = deepspeed_config(config, stage=2, world_size=2)
    >>> (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"],
    ...  ds["zero_optimization"]["stage"])
    (16, 4, 2)
    >>> deepspeed_config(config, stage=2, world_size=3)
    Traceback (most recent call last):
    ...
    ValueError: batch_size=8 must split evenly over world_size=3 ranks (a micro-batch per rank)
    """
    if not isinstance(train_config, TrainConfig):
        raise ValueError(f"train_config must be a TrainConfig; got {type(train_config).__name__}")
    if type(stage) is not int or stage not in ZERO_STAGES:
        raise ValueError(f"stage must be a ZeRO stage in {ZERO_STAGES}; got {stage!r}")
    if type(world_size) is not int or world_size < 1:
        raise ValueError(f"world_size must be a positive int; got {world_size!r}")
    if train_config.batch_size % world_size:
        raise ValueError(f"batch_size={train_config.batch_size} must split evenly over "
                         f"world_size={world_size} ranks (a micro-batch per rank)")
    cfg = train_config
    zero: dict[str, Any] = {"stage": stage}
    if stage >= 1:
        # No overlap of communication with the backward pass: on CPU (gloo) there are no
        # separate streams to overlap on, and results stay independent of timing.
        zero.update(overlap_comm=False, contiguous_gradients=True, reduce_scatter=True,
                    reduce_bucket_size=5_000_000, allgather_bucket_size=5_000_000)
    if stage == 3:
        # By default ZeRO-3 keeps parameters under 100k elements whole on every rank (not
        # worth a gather); 0 shards every tensor, so a small model shows the saving too.
        zero.update(stage3_param_persistence_threshold=0,
                    stage3_prefetch_bucket_size=5_000_000,
                    stage3_gather_16bit_weights_on_model_save=True)
    ds: dict[str, Any] = {
        "train_batch_size": cfg.batch_size * cfg.grad_accum_steps,
        "train_micro_batch_size_per_gpu": cfg.batch_size // world_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.grad_clip if cfg.grad_clip is not None else 0.0,
        "optimizer": {"type": "AdamW", "params": {
            "lr": cfg.lr, "betas": [cfg.beta1, cfg.beta2], "eps": cfg.eps,
            "weight_decay": cfg.weight_decay, "torch_adam": True}},
        "zero_optimization": zero,
        "steps_per_print": cfg.max_steps + 1,  # llmlab logs the losses itself
        "wall_clock_breakdown": False,
    }
    if cfg.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif cfg.precision == "fp16":
        ds["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return ds


def optimizer_state_bytes(optimizer: Any) -> int:
    """Bytes of the tensors in an optimizer's state on this rank (for Adam: the two
    moments). A DeepSpeed ZeRO optimizer wraps the torch optimizer that holds them.

    >>> w = torch.nn.Parameter(torch.zeros(10))
    >>> opt = torch.optim.AdamW([w]); w.grad = torch.ones(10); opt.step()
    >>> optimizer_state_bytes(opt)    # 2 moments x 10 float32 (+ the 4-byte step counter)
    84
    """
    inner = getattr(optimizer, "optimizer", optimizer)
    if not isinstance(inner, torch.optim.Optimizer):
        raise ValueError(f"expected a torch optimizer or a wrapper of one in .optimizer; got "
                         f"{type(optimizer).__name__}")
    return sum(t.numel() * t.element_size() for state in inner.state.values()
               for t in state.values() if isinstance(t, torch.Tensor))


def weights_file(config: TrainConfig, stage: int) -> Path:
    """Where ``train_deepspeed`` saves the final weights of a ZeRO-``stage`` run."""
    return Path(config.out_dir) / f"deepspeed_zero{stage}.pt"


def _parameter_bytes(model: torch.nn.Module) -> int:
    # Under ZeRO-3 ``p`` is an empty placeholder and ``p.ds_tensor`` this rank's shard.
    return sum(getattr(p, "ds_tensor", p).numel() * p.element_size()
               for p in model.parameters())


def _skip_shared_memory_op() -> None:
    """Keep DeepSpeed's CPU backend from compiling its shared-memory all-reduce.

    On the CPU accelerator, joining the process group JIT-compiles a C++ operator (and
    fails without a compiler); only inference's all-reduce uses it, training goes through
    gloo. Marking it unavailable keeps a run free of any compiler."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def train_deepspeed(config: TrainConfig, stage: int) -> Path:
    """Run ``config`` as one rank of a DeepSpeed ZeRO-``stage`` job (the process group is
    described by torchrun's or the ``deepspeed`` launcher's environment) and save, from
    rank 0, the final full weights, the loss history and each rank's memory to
    ``weights_file(config, stage)`` (it loads with ``load_trained``)."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    from llmlab.model import GPT, lm_loss
    from llmlab.runtime import seed_everything
    from llmlab.training.data import WindowSampler
    from llmlab.training.optim import WarmupCosine, weight_decay_groups
    from llmlab.training.trainer import prepare_data

    on_cpu = get_accelerator().device_name() == "cpu"  # DS_ACCELERATOR=cpu, or no GPU
    if config.precision == "fp16" and on_cpu:
        raise ValueError("precision 'fp16' needs a GPU; use 'fp32' or 'bf16' on a CPU")
    if on_cpu:
        _skip_shared_memory_op()
    # On a GPU, None lets DeepSpeed pick the accelerator's backend (NCCL).
    deepspeed.init_distributed(dist_backend="gloo" if on_cpu else None)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    ds_config = deepspeed_config(config, stage, world_size)
    if rank != 0:
        dist.barrier()  # rank 0 encodes the corpus once; the others then read its file
    train_ids, _, tokenizer = prepare_data(config)
    if rank == 0:
        dist.barrier()
    seed_everything(config.seed)  # the same initial weights as Trainer, on every rank
    model_config = config.model_config(tokenizer.vocab_size)
    model = GPT(model_config)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=weight_decay_groups(model, config.weight_decay),
        config=ds_config)
    device = engine.device
    sampler = WindowSampler(train_ids, config.batch_size, config.block_size, seed=config.seed,
                            rank=rank, world_size=world_size)
    schedule = WarmupCosine(config.lr, config.min_lr, config.warmup_steps, config.max_steps)
    history: list[dict[str, float]] = []
    for step in range(config.max_steps):
        lr = schedule(step)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=device)
        for _ in range(config.grad_accum_steps):
            x, y = sampler.sample(device)
            loss = lm_loss(engine(x), y)
            engine.backward(loss)  # scales by 1 / grad_accum_steps itself
            engine.step()  # steps the optimizer only at an accumulation boundary
            total += loss.detach().float() / config.grad_accum_steps
        dist.all_reduce(total)
        history.append({"step": step + 1, "loss": float(total) / world_size, "lr": lr})
    memory = {"rank": rank, "optimizer_state_bytes": optimizer_state_bytes(engine.optimizer),
              "parameter_bytes": _parameter_bytes(engine.module)}
    memories: list[Any] = [None] * world_size
    dist.all_gather_object(memories, memory)
    weights = _full_weights(engine, stage)
    path = weights_file(config, stage)
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": weights, "history": history, "memory": memories,
                    "deepspeed_config": ds_config, "config": config.to_dict(),
                    "model_config": dataclasses.asdict(model_config),
                    "tokenizer": tokenizer.to_state()}, path)
    dist.barrier()
    return path


def _full_weights(engine: Any, stage: int) -> dict[str, torch.Tensor]:
    module = engine.module
    if stage < 3:
        return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    import deepspeed

    # Every rank must join the gather (a collective), even though only rank 0 saves.
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def worker_log(config: TrainConfig, rank: int) -> Path:
    """Where rank ``rank`` of :func:`run_deepspeed` writes everything it prints."""
    return Path(config.out_dir) / f"deepspeed_rank{rank}.log"


def _log_output_to(path: Path) -> None:
    """Send this process's stdout and stderr, at the file-descriptor level, to ``path``.

    A worker inherits the notebook kernel's descriptors, and the kernel shows whatever
    arrives on them as the cell's output. DeepSpeed's collectives make torch print
    FutureWarnings from each worker, and gloo logs from C++, where no Python warning filter
    reaches: on the site build (``jupyter-book -W``) any stderr in a cell fails the build.
    So the workers write to a log file instead; a worker's exception still reaches the
    parent through ``mp.spawn``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def _worker(rank: int, world_size: int, values: dict[str, Any], stages: list[int],
            port: int) -> None:
    config = TrainConfig.from_dict(values)
    _log_output_to(worker_log(config, rank))
    set_local_rank_environment(rank, world_size, port)
    os.environ["DS_ACCELERATOR"] = "cpu"  # before deepspeed is imported, even beside a GPU
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    import torch.distributed as dist

    try:
        for stage in stages:  # one process pays DeepSpeed's imports (seconds) once
            train_deepspeed(config, stage)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_deepspeed(config: TrainConfig, stages: int | list[int] = 2,
                  world_size: int = 2) -> dict[int, Path]:
    """Train ``config`` with DeepSpeed ZeRO at each of ``stages`` (one after the other, in
    the same processes) on ``world_size`` CPU processes (gloo), as ``torchrun`` would,
    from a notebook or a test. Returns ``{stage: file}``: the final weights, losses and
    per-rank memory that ``train_deepspeed`` writes for each stage. What the workers print
    goes to ``worker_log(config, rank)``, not to the notebook."""
    import torch.multiprocessing as mp

    stages = [stages] if isinstance(stages, int) else list(stages)
    if not stages:
        raise ValueError("stages must name at least one ZeRO stage; got none")
    for stage in stages:  # bad inputs fail here, not in every rank
        deepspeed_config(config, stage, world_size)
    if config.device not in ("auto", "cpu"):
        raise ValueError(f"run_deepspeed runs on CPU processes; got device={config.device!r}")
    try:
        mp.spawn(_worker, args=(world_size, config.to_dict(), stages, free_port()),
                 nprocs=world_size, join=True)
    except Exception as error:
        logs = ", ".join(str(worker_log(config, rank)) for rank in range(world_size))
        error.add_note(f"the workers' output is in {logs}")
        raise
    return {stage: weights_file(config, stage) for stage in stages}


def main(argv: list[str] | None = None) -> Path:
    """``python -m llmlab.training.zero --config NAME --stage N [--set key=value ...]``,
    one rank of a job started by ``torchrun`` or the ``deepspeed`` launcher."""
    parser = argparse.ArgumentParser(prog="python -m llmlab.training.zero",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a YAML file or a packaged config name")
    parser.add_argument("--stage", type=int, default=2, choices=ZERO_STAGES)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting (repeatable)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    config = load_config(args.config, args.set)
    path = train_deepspeed(config, args.stage)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"saved the final weights of the ZeRO-{args.stage} run to {path}")
    return path


if __name__ == "__main__":  # pragma: no cover - exercised through torchrun in the tests
    main(sys.argv[1:])
