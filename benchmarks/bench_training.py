"""Benchmark pretraining a character-level GPT on Shakespeare on a CPU, with named baselines
measured in the same run.

Sections (``--only`` picks some; the others keep their last results in the report):

- ``budget``: quality per wall-clock budget. ``configs/shakespeare_char_5min.yaml`` trained
  for ``--budget`` seconds (start-up and evaluations included) on ``--ranks`` DDP processes
  with one thread each; the number of steps (and so the cosine's end) is planned from the
  measured pace. Reports the validation-loss curve (table + png) against the 1.60 target.
- ``hf``: training tokens/s of llmlab's ``GPT`` vs transformers' ``GPT2LMHeadModel`` of the
  same size (sdpa and eager attention) in the same loop, fp32 and bf16, and the same loss
  from the same weights (``GPT.from_hf_gpt2``).
- ``optim``: llmlab's ``AdamW`` vs ``torch.optim.AdamW`` (for-loop, foreach, fused).
- ``precision``: a training step in fp32 vs bf16 autocast.
- ``ckpt``: activation checkpointing: bytes saved for backward (exact, with
  ``saved_tensors_hooks``), peak-RSS growth of one step, step time.
- ``ddp``: 1 process (1 and 2 threads) vs 2 DDP ranks (gloo) on the same global batch.

    python benchmarks/bench_training.py                        # everything, 5-minute budget
    python benchmarks/bench_training.py --only budget --budget 300
    python benchmarks/bench_training.py --only budget --budget 90 --set lr=2e-3
    python benchmarks/bench_training.py --quick --out /tmp/training.md   # smoke test
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import machine  # first: offline settings, llmlab importable

# isort: split

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.distributed as dist

from llmlab.model import GPT, ModelConfig, lm_loss
from llmlab.training import (
    AdamW,
    TrainConfig,
    Trainer,
    WarmupCosine,
    WindowSampler,
    autocast,
    enable_activation_checkpointing,
    load_config,
    prepare_data,
    run_data_parallel,
)
from llmlab.training.trainer import free_port, set_local_rank_environment

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "shakespeare_char.yaml"  # the sections that time steps
CONFIG_5MIN = ROOT / "configs" / "shakespeare_char_5min.yaml"  # the budget run
TARGET_LOSS = 1.60  # validation loss (nats/char) wanted within 5 minutes
CALIBRATION_STEPS = 20  # timed before the first plan of the run's length
EVALUATIONS = 8  # along the budget run, the last one with FINAL_EVAL_BATCHES a split
FINAL_EVAL_BATCHES = 60
REPLAN_UNTIL = 0.8  # re-plan the run's length during this fraction of the budget
PLAN_EVERY = 10  # steps between checks of the pace (and of the deadline)
MIB = 2**20
CKPT_BATCH = 32  # sequences of 256 tokens for the activation-checkpointing measurement


# ----------------------------------------------------------------------------- helpers


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (this benchmark needs Linux)")


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


# ----------------------------------------------------------------------------- 1. budget


def _evaluate(trainer: Trainer, batches: int) -> float:
    """Validation loss on ``Trainer.evaluate``'s fixed windows, scored in fp32 and shared out
    among the ranks (each scores every ``world_size``-th batch; the sums are all-reduced)."""
    cfg, model = trainer.config, trainer.model
    model.eval()
    sampler = WindowSampler(trainer.val_ids, cfg.batch_size, cfg.block_size, seed=cfg.seed + 1)
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for i in range(batches):
            x, y = sampler.sample()
            if i % trainer.world_size == trainer.rank:
                total += torch.tensor([lm_loss(model(x), y).item(), 1.0],
                                      dtype=torch.float64)
    if trainer.world_size > 1:
        dist.all_reduce(total)
    model.train()
    return float(total[0] / total[1])


def _share(values: list[Any], world_size: int) -> list[Any]:
    """Rank 0's decisions, so that every rank stops and re-plans at the same step."""
    if world_size > 1:
        dist.broadcast_object_list(values, src=0)
    return values


def _budget_run(rank: int, world_size: int, values: dict[str, Any], port: int,
                start_time: float, seconds: float, result_path: str, threads: int = 1) -> None:
    """One rank of the budget run: train ``values`` until ``start_time + seconds`` (wall
    clock, start-up included), planning the number of steps (and so the cosine's end)
    from the pace measured so far, and evaluating about EVALUATIONS times on the way."""
    torch.set_num_threads(threads)  # ranks: one each (more would only fight for the cores)
    if world_size > 1:
        set_local_rank_environment(rank, world_size, port)
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        trainer = Trainer(TrainConfig.from_dict(values))
        cfg = trainer.config
        deadline = start_time + seconds
        ready = time.time() - start_time  # process start, data, model
        curve: list[tuple[float, dict[str, float]]] = []
        train_seconds, eval_seconds, losses = 0.0, [], []
        planned, evaluate_now = 0, False  # no plan before the calibration steps
        while True:
            final = 0 < planned <= trainer.step
            if final or evaluate_now or (not curve and trainer.step == CALIBRATION_STEPS):
                tic = time.perf_counter()
                val = _evaluate(trainer, FINAL_EVAL_BATCHES if final else cfg.eval_batches)
                eval_seconds.append(time.perf_counter() - tic)
                # The training loss is the mean over the steps since the last point: free,
                # where scoring fixed training windows would cost as much as validation.
                curve.append((time.time() - start_time,
                              {"step": trainer.step, "val_loss": val, "val_ppl": math.exp(val),
                               "train_loss": statistics.fmean(losses) if losses else math.nan}))
                losses, evaluate_now = [], False
                if final:
                    break
            if trainer.step >= CALIBRATION_STEPS and trainer.step % PLAN_EVERY == 0:
                decision = [planned, evaluate_now]
                if rank == 0:
                    decision = _plan(trainer.step, planned, train_seconds, eval_seconds,
                                     [t for t, _ in curve], start_time, seconds,
                                     cfg.eval_batches)
                planned, evaluate_now = _share(decision, world_size)
                trainer.schedule = WarmupCosine(cfg.lr, cfg.min_lr, cfg.warmup_steps,
                                                max(planned, cfg.warmup_steps + 1))
                if planned <= trainer.step or evaluate_now:
                    continue
            tic = time.perf_counter()
            losses.append(trainer.train_step()["loss"])  # no fit(): it checkpoints each call
            train_seconds += time.perf_counter() - tic
        overrun = time.time() - deadline  # before the samples: they are not training
        if rank == 0:
            samples = [trainer.sample(300, prompt=prompt, seed=seed)
                       for seed, prompt in enumerate(("ROMEO:\n", "\n"))]
            result = {"steps": trainer.step, "seconds": time.time() - start_time,
                      "ready_seconds": ready, "train_seconds": train_seconds,
                      "eval_seconds": sum(eval_seconds), "curve": curve, "samples": samples,
                      "tokens": trainer.step * cfg.batch_size * cfg.block_size
                      * cfg.grad_accum_steps,
                      "n_params": sum(p.numel() for p in trainer.model.parameters()),
                      "world_size": world_size, "deadline_overrun": overrun}
            Path(result_path).write_text(json.dumps(result))
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _plan(step: int, planned: int, train_seconds: float, eval_seconds: list[float],
          times: list[float], start_time: float, seconds: float,
          eval_batches: int) -> list[Any]:
    """``[total steps, evaluate now?]`` from the pace so far (rank 0). The evaluations
    fall every ``seconds / EVALUATIONS`` of wall time, the last one at the end."""
    now = time.time()
    step_cost = train_seconds / step
    points = len(times)
    evals_left = max(EVALUATIONS - points, 0)
    final_eval = FINAL_EVAL_BATCHES / eval_batches * statistics.median(eval_seconds)
    left = start_time + seconds - now - evals_left * statistics.median(eval_seconds) \
        - final_eval - 1.0
    if not planned or now - start_time < REPLAN_UNTIL * seconds:
        # A shared machine speeds up and slows down: re-plan from the pace measured so far.
        planned = step + max(int(left / step_cost), 1)
    if left < step_cost:
        planned = step  # out of time: the final evaluation comes next
    spacing = seconds / EVALUATIONS
    elapsed = now - start_time
    due = elapsed >= points * spacing and elapsed - times[-1] >= spacing / 2
    return [planned, due and (planned - step) * step_cost > spacing / 2]


def train_for_budget(config_path: Path, overrides: list[str], seconds: float, ranks: int,
                     workdir: Path, threads: int = 1) -> dict[str, Any]:
    """Train ``config_path`` on ``ranks`` processes (one thread each; ``threads`` for a single
    process) for ``seconds`` of wall time, counted from before the processes start to after
    the final evaluation."""
    config = load_config(config_path, [f"out_dir={workdir}", "progress=false",
                                       "tensorboard=false", "sample_chars=0",
                                       "max_steps=1000000",
                                       "distributed=" + ("ddp" if ranks > 1 else "none")]
                         + overrides)
    prepare_data(config)  # the token file exists before the ranks read it
    result_path = workdir / "budget.json"
    start = time.time()
    if ranks > 1:
        import torch.multiprocessing as mp

        mp.spawn(_budget_run, args=(ranks, config.to_dict(), free_port(), start, seconds,
                                    str(result_path)), nprocs=ranks, join=True)
    else:
        before = torch.get_num_threads()
        _budget_run(0, 1, config.to_dict(), 0, start, seconds, str(result_path), threads)
        torch.set_num_threads(before)
    result = json.loads(result_path.read_text())
    result["config"] = config
    return result


def plot_curve(curve: list[tuple[float, dict[str, float]]], path: Path, budget: float) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    minutes = [t / 60 for t, _ in curve]
    ax.plot(minutes, [e["val_loss"] for _, e in curve], "o-", label="validation")
    ax.plot(minutes, [e["train_loss"] for _, e in curve], "s--", label="training (running mean)")
    ax.axhline(TARGET_LOSS, color="grey", lw=0.8, ls=":", label=f"target {TARGET_LOSS:.2f}")
    ax.axvline(budget / 60, color="grey", lw=0.8)
    ax.set(xlabel="wall-clock minutes (2 CPU cores)", ylabel="loss (nats/char)",
           title="Character-level Shakespeare GPT on CPU", ylim=(1.3, 3.0))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- 3-5. steps


def make_model(config: Any, vocab: int) -> GPT:
    torch.manual_seed(0)
    return GPT(config.model_config(vocab))


def optimizers(model: GPT, lr: float) -> dict[str, Callable[[], torch.optim.Optimizer]]:
    params = list(model.parameters())
    return {
        "llmlab AdamW": lambda: AdamW(params, lr=lr),
        "torch AdamW (for-loop)": lambda: torch.optim.AdamW(params, lr=lr, foreach=False,
                                                            fused=False),
        "torch AdamW (foreach)": lambda: torch.optim.AdamW(params, lr=lr, foreach=True),
        "torch AdamW (fused)": lambda: torch.optim.AdamW(params, lr=lr, fused=True),
    }


def compare_optimizers(config: Any, vocab: int, batches: list, rounds: int,
                       steps: int) -> dict[str, dict[str, float]]:
    """Same model copy, same batches; rounds interleave the variants against drift."""
    base = make_model(config, vocab)
    names = list(optimizers(base, config.lr))
    step_times: dict[str, list[float]] = {n: [] for n in names}
    opt_times: dict[str, list[float]] = {n: [] for n in names}
    final_loss: dict[str, float] = {}
    for _ in range(rounds):
        for name in names:
            model = copy.deepcopy(base)
            optimizer = optimizers(model, config.lr)[name]()
            for i in range(steps):
                x, y = batches[i % len(batches)]
                tic = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss = lm_loss(model(x), y)
                loss.backward()
                mid = time.perf_counter()
                optimizer.step()
                done = time.perf_counter()
                if i:  # the first step allocates the moments
                    step_times[name].append(done - tic)
                    opt_times[name].append(done - mid)
            final_loss[name] = loss.item()
    tokens = batches[0][0].numel()
    return {n: {"tokens_per_s": tokens / statistics.median(step_times[n]),
                "opt_ms": 1e3 * statistics.median(opt_times[n]), "loss": final_loss[n]}
            for n in names}


def training_step(model: GPT, x: torch.Tensor, y: torch.Tensor, precision: str) -> float:
    model.zero_grad(set_to_none=True)
    with autocast(precision, "cpu"):
        loss = lm_loss(model(x), y)
    loss.backward()
    return loss.item()


def compare_precision(config: Any, vocab: int, x: torch.Tensor, y: torch.Tensor,
                      repeats: int) -> dict[str, dict[str, float]]:
    model = make_model(config, vocab)
    out = {}
    for precision in ("fp32", "bf16"):
        training_step(model, x, y, precision)  # warm-up
        out[precision] = {"seconds": median_seconds(
            lambda p=precision: training_step(model, x, y, p), repeats),
            "loss": training_step(model, x, y, precision)}
    return out


def saved_for_backward_bytes(model: GPT, x: torch.Tensor, y: torch.Tensor) -> int:
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    # Checkpointing keeps each block's input to replay the block: count those too.
    def pack_block_input(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        pack(args[0])

    hooks = [block.register_forward_pre_hook(pack_block_input) for block in model.blocks]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = lm_loss(model(x), y)
    loss.backward()
    for hook in hooks:
        hook.remove()
    return sum(storages.values())


def peak_rss_growth_mib(model: GPT, x: torch.Tensor, y: torch.Tensor) -> float:
    training_step(model, x, y, "fp32")  # gradients and allocator pools exist already
    model.zero_grad(set_to_none=False)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to "now"
    training_step(model, x, y, "fp32")
    return (_status_kib("VmHWM") - before) / 1024


def compare_checkpointing(config: Any, vocab: int, x: torch.Tensor, y: torch.Tensor,
                          repeats: int) -> dict[str, dict[str, float]]:
    plain = make_model(config, vocab)
    checkpointed = enable_activation_checkpointing(copy.deepcopy(plain))
    out = {}
    # The checkpointed model is measured first: RSS never shrinks back, so the plain
    # model's larger peak cannot hide inside a high-water mark the other one left.
    for name, model in (("checkpointed", checkpointed), ("plain", plain)):
        out[name] = {"saved_mib": saved_for_backward_bytes(model, x, y) / MIB,
                     "rss_mib": peak_rss_growth_mib(model, x, y),
                     "seconds": median_seconds(lambda m=model: training_step(m, x, y, "fp32"),
                                               repeats)}
    return out


# ----------------------------------------------------------------------------- 6. DDP


def compare_ddp(config_overrides: list[str], steps: int, workdir: Path) -> dict[str, Any]:
    common = config_overrides + [f"max_steps={steps}", f"eval_interval={steps}",
                                 "eval_batches=1", "warmup_steps=2", "progress=false",
                                 "tensorboard=false", "sample_chars=0", "device=cpu",
                                 "model.dropout=0.0"]
    out: dict[str, Any] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        config = load_config(CONFIG, common + [f"out_dir={workdir / f'single{threads}'}"])
        trainer = Trainer(config)
        trainer.fit()
        out[f"1 process, {threads} thread{'s' * (threads > 1)}"] = trainer.history
    torch.set_num_threads(1)
    config = load_config(CONFIG, common + [f"out_dir={workdir / 'ddp'}", "distributed=ddp"])
    checkpoint = run_data_parallel(config, world_size=2)
    out["2 DDP ranks, 1 thread each"] = torch.load(checkpoint, weights_only=False)["history"]
    tokens = config.batch_size * config.block_size
    summary = {}
    for name, history in out.items():
        seconds = statistics.median(r["seconds"] for r in history[2:])
        summary[name] = {"tokens_per_s": tokens / seconds, "final_loss": history[-1]["loss"]}
    return summary


# ----------------------------------------------------------------------------- 2. vs HF


def hf_gpt2_config(config: ModelConfig, attn_implementation: str) -> Any:
    """The transformers ``GPT2Config`` of the same architecture as ``config``."""
    from transformers import GPT2Config

    gpt2_like = dict(position="learned", norm="layernorm", mlp="gelu", bias=True,
                     pre_norm=True)
    differs = {k: getattr(config, k) for k, v in gpt2_like.items() if getattr(config, k) != v}
    if differs or config.n_kv_head != config.n_head or config.head_dim * config.n_head != \
            config.d_model:
        raise ValueError(f"GPT2LMHeadModel has no equivalent of {differs or 'these heads'}: "
                         "compare a ModelConfig.gpt2_style model")
    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.context_length,
                      n_embd=config.d_model, n_layer=config.n_layer, n_head=config.n_head,
                      n_inner=config.d_ff, activation_function="gelu_new",
                      layer_norm_epsilon=config.norm_eps, resid_pdrop=config.dropout,
                      embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                      tie_word_embeddings=config.tie_embeddings, use_cache=False,
                      bos_token_id=None, eos_token_id=None,  # GPT-2's 50256 is no char id
                      attn_implementation=attn_implementation)


def _hf_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x, use_cache=False).logits


def check_same_loss(model_config: ModelConfig, x: torch.Tensor,
                    y: torch.Tensor) -> dict[str, float]:
    """HF model -> ``GPT.from_hf_gpt2`` copy: the two losses on one batch, both attention
    implementations."""
    from transformers import GPT2LMHeadModel

    out = {}
    for impl in ("sdpa", "eager"):
        torch.manual_seed(0)
        hf = GPT2LMHeadModel(hf_gpt2_config(model_config, impl)).eval()
        ours = GPT.from_hf_gpt2(hf)
        with torch.no_grad():
            out[impl] = (lm_loss(_hf_logits(hf, x), y).item(),
                         lm_loss(ours(x), y).item())
    return {"llmlab": out["eager"][1], "hf_eager": out["eager"][0], "hf_sdpa": out["sdpa"][0],
            "max_abs_diff": max(abs(a - b) for a, b in out.values())}


def compare_with_hf(model_config: ModelConfig, lr: float, batches: list, rounds: int,
                    steps: int) -> dict[str, dict[str, dict[str, float]]]:
    """Training tokens/s of llmlab's GPT and GPT2LMHeadModel (sdpa, eager) of one size in
    one loop: same batches, torch AdamW, same precision; rounds interleave the models."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    reference = GPT2LMHeadModel(hf_gpt2_config(model_config, "sdpa"))

    def build(name: str) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """A fresh copy of the same weights (so the losses after the run must agree)."""
        if name == "llmlab GPT":
            model = GPT.from_hf_gpt2(reference).train()
            return model, model
        impl = "sdpa" if "sdpa" in name else "eager"
        hf = GPT2LMHeadModel(hf_gpt2_config(model_config, impl))
        hf.load_state_dict(reference.state_dict())
        return hf.train(), lambda x, m=hf: _hf_logits(m, x)

    names = ["llmlab GPT", "GPT2LMHeadModel (sdpa)", "GPT2LMHeadModel (eager)"]
    counts = {n: sum(p.numel() for p in build(n)[0].parameters()) for n in names}
    if len(set(counts.values())) != 1:
        raise AssertionError(f"the models differ in size: {counts}")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for precision in ("fp32", "bf16"):
        times: dict[str, list[float]] = {n: [] for n in names}
        losses: dict[str, float] = {}
        for _ in range(rounds):
            for name in names:
                model, logits_of = build(name)
                optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
                for i in range(steps):
                    x, y = batches[i % len(batches)]
                    tic = time.perf_counter()
                    optimizer.zero_grad(set_to_none=True)
                    with autocast(precision, "cpu"):
                        loss = lm_loss(logits_of(x), y)
                    loss.backward()
                    optimizer.step()
                    if i:  # the first step allocates the optimizer's moments
                        times[name].append(time.perf_counter() - tic)
                losses[name] = loss.item()
        tokens = batches[0][0].numel()
        out[precision] = {n: {"tokens_per_s": tokens / statistics.median(times[n]),
                              "loss": losses[n], "params": counts[n]} for n in names}
    return out


# ----------------------------------------------------------------------------- report

SECTIONS = ("budget", "hf", "optim", "precision", "ckpt", "ddp")
MARK = "<!-- section: {} -->"


def _measured(load_before: tuple[float, ...]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    after = os.getloadavg()
    return (f"*Measured {now}; load average (1 min) {load_before[0]:.2f} before, "
            f"{after[0]:.2f} after (2 cores shared with other work: timings are noisy).*")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:.0f} s"


def render_budget(run: dict[str, Any], png: Path, budget: float, stamp: str) -> list[str]:
    cfg = run["config"]
    model = cfg.model
    last = run["curve"][-1][1]
    best = min(run["curve"], key=lambda point: point[1]["val_loss"])
    target = "**met**" if last["val_loss"] <= TARGET_LOSS else "not met"
    overrides = " with " + ", ".join(run["overrides"]) if run["overrides"] else ""
    cores = run["world_size"] if run["world_size"] > 1 else run["threads"]
    rows = [
        f"## 1. Character-level Shakespeare in {_duration(budget)} of {cores} CPU "
        f"core{'s' * (cores > 1)}",
        "",
        stamp,
        "",
        f"`{CONFIG_5MIN.relative_to(ROOT)}`{overrides}: "
        f"{model['n_layer']} layers, {model['n_head']} heads, d_model {model['d_model']}, "
        f"{run['n_params']:,} parameters; batch {cfg.batch_size} x block {cfg.block_size}; "
        f"{cfg.precision} autocast; AdamW lr {cfg.lr:g}, {cfg.warmup_steps} warm-up steps, "
        f"cosine to {cfg.min_lr:g}; {run['world_size']} "
        + ("DDP ranks (gloo) with one thread each." if run["world_size"] > 1
           else f"process with {run['threads']} thread{'s' * (run['threads'] > 1)}.")
        + f" The budget is wall time from before the processes start ({run['ready_seconds']:.1f} s "
        "to start them and build the model) to after the final evaluation. The number of steps, "
        f"and so the cosine's end, is planned from the pace of the first {CALIBRATION_STEPS} "
        f"steps and re-planned every {PLAN_EVERY} steps during the first {REPLAN_UNTIL:.0%} of "
        "the budget (the load of a shared machine changes); after that the pace is only "
        "checked against the deadline. Validation = the last 10% of the corpus, the same "
        f"fixed windows as before ({cfg.eval_batches} batches of {cfg.batch_size} x "
        f"{cfg.block_size}; the last evaluation {FINAL_EVAL_BATCHES}), scored in fp32. The run "
        f"ended {run['deadline_overrun']:+.1f} s from the deadline.",
        "",
        "| wall time | step | training loss (mean since the last row) | validation loss "
        "| validation perplexity |",
        "|---:|---:|---:|---:|---:|",
    ]
    for seconds, e in run["curve"]:
        rows.append(f"| {seconds:.0f} s | {int(e['step'])} | {e['train_loss']:.3f} | "
                    f"{e['val_loss']:.3f} | {e['val_ppl']:.2f} |")
    rows += [
        "",
        f"Reached **validation loss {last['val_loss']:.3f}** (target {TARGET_LOSS:.2f}: "
        f"{target}; lowest on the curve {best[1]['val_loss']:.3f}) after {run['steps']} steps "
        f"({run['tokens']:,} training tokens, {run['tokens'] / run['train_seconds']:,.0f} "
        f"tokens/s while training) in {run['seconds']:.0f} s, of which "
        f"{run['eval_seconds']:.0f} s evaluating. Curve: [{png.name}]({png.name}).",
        "",
        "Samples (temperature 0.8), after the prompt `ROMEO:` (seed 0) and after a newline "
        "(seed 1):",
        "",
        "```",
        "ROMEO:\n" + run["samples"][0],
        "```",
        "",
        "```",
        run["samples"][1],
        "```",
    ]
    return rows


def render_hf(hf: dict[str, Any], same: dict[str, float], model_config: ModelConfig,
              shape: tuple[int, int], stamp: str) -> list[str]:
    rows = [
        "## 2. llmlab's GPT vs transformers' GPT2LMHeadModel of the same size",
        "",
        stamp,
        "",
        f"The same architecture ({model_config.n_layer} layers, d_model "
        f"{model_config.d_model}, vocabulary {model_config.vocab_size}: "
        f"{hf['fp32']['llmlab GPT']['params']:,} parameters in each, asserted) built as "
        "`llmlab.model.GPT` and as `GPT2LMHeadModel` from a `GPT2Config` derived from the "
        "llmlab `ModelConfig`, starting from the same weights (`GPT.from_hf_gpt2`), in one "
        f"loop: the same 8 batches of {shape[0]} x {shape[1]} tokens, forward + "
        "`lm_loss` + backward + `torch.optim.AdamW`, the same precision; medians over "
        "rounds that interleave the three models. transformers 5 picks `sdpa` attention "
        "(torch's fused `scaled_dot_product_attention`) by default; `eager` is its "
        "explicit-softmax path, the algorithm llmlab's attention spells out.",
        "",
        "| precision | model | tokens/s | vs GPT2LMHeadModel (sdpa) | vs (eager) "
        "| loss after the run |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for precision, results in hf.items():
        sdpa = results["GPT2LMHeadModel (sdpa)"]["tokens_per_s"]
        eager = results["GPT2LMHeadModel (eager)"]["tokens_per_s"]
        for name, r in results.items():
            rows.append(f"| {precision} | {name} | {r['tokens_per_s']:,.0f} | "
                        f"{r['tokens_per_s'] / sdpa:.2f}x | {r['tokens_per_s'] / eager:.2f}x | "
                        f"{r['loss']:.4f} |")
    rows += [
        "",
        f"Same weights, same loss: on one batch (fp32, eval mode) llmlab's copy scores "
        f"{same['llmlab']:.6f}, GPT2LMHeadModel {same['hf_sdpa']:.6f} (sdpa) and "
        f"{same['hf_eager']:.6f} (eager); largest difference {same['max_abs_diff']:.1e}.",
    ]
    return rows


def render_optim(optim: dict[str, Any], shape: tuple[int, int], stamp: str) -> list[str]:
    baseline = optim["torch AdamW (for-loop)"]
    rows = [
        "## 3. Optimizer: llmlab's AdamW vs torch.optim.AdamW",
        "",
        stamp,
        "",
        f"Same model, same 8 batches of {shape[0]} x {shape[1]} tokens, a whole "
        "training step (forward, backward, optimizer); medians over rounds that interleave "
        "the variants. Baseline: torch's for-loop AdamW (the same algorithm, one tensor at "
        "a time).",
        "",
        "| optimizer | tokens/s | vs baseline | optimizer step alone | loss after the run |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in optim.items():
        rows.append(f"| {name} | {r['tokens_per_s']:,.0f} | "
                    f"{r['tokens_per_s'] / baseline['tokens_per_s']:.2f}x | "
                    f"{r['opt_ms']:.2f} ms | {r['loss']:.4f} |")
    rows += [
        "",
        "The optimizer step is a small part of a training step for this model (the forward "
        "and backward passes dominate), and on a shared machine whole-step throughput drifts "
        "by tens of percent between rounds: read the tokens/s ratios as noise around 1.0x "
        "and the *optimizer step alone* column as the optimizers' own cost. Equal losses "
        "show that the four compute the same update.",
    ]
    return rows


def render_precision(precision: dict[str, Any], stamp: str) -> list[str]:
    ratio = precision["bf16"]["seconds"] / precision["fp32"]["seconds"]
    return [
        "## 4. Mixed precision on CPU: fp32 vs bf16 autocast",
        "",
        stamp,
        "",
        "| precision | step time (median) | loss |",
        "|---|---:|---:|",
        f"| fp32 | {precision['fp32']['seconds'] * 1e3:.0f} ms | "
        f"{precision['fp32']['loss']:.4f} |",
        f"| bf16 autocast | {precision['bf16']['seconds'] * 1e3:.0f} ms | "
        f"{precision['bf16']['loss']:.4f} |",
        "",
        f"bf16 / fp32 step time: **{ratio:.2f}x** ({'slower' if ratio > 1 else 'faster'}). "
        "This CPU has bf16 matrix instructions (AVX512-BF16); CPUs without them (or AMX) pay "
        "for the conversions without faster matmuls. On GPUs bf16 is the default.",
    ]


def render_ckpt(ckpt: dict[str, Any], stamp: str) -> list[str]:
    rows = [
        "## 5. Activation checkpointing",
        "",
        stamp,
        "",
        f"Same model, batch {CKPT_BATCH} x 256 tokens. *Saved for backward* counts the "
        "bytes of every tensor autograd keeps for the backward pass plus the block inputs "
        "checkpointing keeps to replay each block, each storage once (exact); *peak RSS "
        "growth* is the process's high-water mark during one step minus its size before "
        "(approximate: allocator caching).",
        "",
        "| | saved for backward | peak RSS growth | step time |",
        "|---|---:|---:|---:|",
    ]
    for name in ("plain", "checkpointed"):
        r = ckpt[name]
        rows.append(f"| {name} | {r['saved_mib']:,.1f} MiB | {r['rss_mib']:,.1f} MiB | "
                    f"{r['seconds'] * 1e3:,.0f} ms |")
    rows += [
        "",
        f"Checkpointed / plain: memory saved for backward **"
        f"{ckpt['checkpointed']['saved_mib'] / ckpt['plain']['saved_mib']:.2f}x**, "
        f"peak RSS growth {ckpt['checkpointed']['rss_mib'] / ckpt['plain']['rss_mib']:.2f}x, "
        f"time **{ckpt['checkpointed']['seconds'] / ckpt['plain']['seconds']:.2f}x**.",
    ]
    return rows


def render_ddp(ddp: dict[str, Any], shape: tuple[int, int], stamp: str) -> list[str]:
    rows = [
        "## 6. One process vs two DDP ranks (gloo, CPU)",
        "",
        stamp,
        "",
        f"`configs/shakespeare_char.yaml` in fp32, the same global batch ({shape[0]} x "
        f"{shape[1]}); tokens/s from the median logged step time after 2 warm-up steps "
        "(process start-up excluded).",
        "",
        "| run | tokens/s | vs 1 process, 1 thread | final loss |",
        "|---|---:|---:|---:|",
    ]
    reference = ddp["1 process, 1 thread"]["tokens_per_s"]
    for name, r in ddp.items():
        rows.append(f"| {name} | {r['tokens_per_s']:,.0f} | "
                    f"{r['tokens_per_s'] / reference:.2f}x | {r['final_loss']:.4f} |")
    ddp_ratio = ddp["2 DDP ranks, 1 thread each"]["tokens_per_s"] / reference
    threads_ratio = ddp["1 process, 2 threads"]["tokens_per_s"] / reference
    rows += [
        "",
        f"Two DDP ranks ran at {ddp_ratio:.2f}x the single-thread process and "
        f"{ddp_ratio / threads_ratio:.2f}x one process using both cores. The ranks share "
        "this machine's 2 cores (with whatever else runs on it) and all-reduce every "
        "gradient each step, so other load on either core makes both ranks wait. Equal "
        "final losses: the ranks compute the same training as one process (tested to 1e-6 "
        "in tests/test_training.py).",
    ]
    return rows


def write_report(path: Path, sections: dict[str, list[str]], header: str) -> str:
    """Replace the sections measured now in ``path``, keep the others as they were."""
    kept: dict[str, str] = {}
    if path.is_file():
        for chunk in re.split(r"(?=^<!-- section: )", path.read_text(encoding="utf-8"),
                              flags=re.M):
            found = re.match(r"<!-- section: (\w+) -->", chunk)
            if found:
                kept[found.group(1)] = chunk.rstrip("\n")
    for name, rows in sections.items():
        kept[name] = MARK.format(name) + "\n" + "\n".join(rows)
    body = [kept[name] for name in SECTIONS if name in kept]
    text = "\n\n".join([header, *body]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)}; "
                             "the others keep their last results in --out")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds of wall time for the training run (section budget)")
    parser.add_argument("--ranks", type=int, default=2,
                        help="processes for the budget run (one thread each)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the budget run's process when --ranks 1")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help=f"overrides of {CONFIG_5MIN.name} for the budget run")
    parser.add_argument("--quick", action="store_true",
                        help="1-minute budget, short measurements (a smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/training.md")
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.ranks < 1 or args.threads < 1:
        parser.error(f"--ranks and --threads must be >= 1; got {args.ranks}, {args.threads}")
    budget = 60.0 if args.quick else args.budget
    torch.set_num_threads(1)  # stable timings on a shared machine
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="llmlab-bench-training-"))
    base_overrides = [f"out_dir={workdir / 'data'}", "device=cpu", "block_size=64"]
    config = load_config(CONFIG, base_overrides)
    data = prepare_data(config)
    vocab = data[2].vocab_size
    sampler = WindowSampler(data[0], config.batch_size, config.block_size, seed=7)
    batches = [sampler.sample() for _ in range(8)]
    shape = (config.batch_size, config.block_size)
    sections: dict[str, list[str]] = {}
    png = args.out.with_name(args.out.stem + "_curve.png")

    if "budget" in only:
        load = os.getloadavg()
        print(f"budget: training for {budget:g} s on {args.ranks} rank(s) ...", flush=True)
        run = train_for_budget(CONFIG_5MIN, args.set, budget, args.ranks, workdir / "budget",
                               threads=args.threads)
        run["overrides"], run["threads"] = args.set, args.threads
        last = run["curve"][-1][1]
        print(f"   {run['steps']} steps, val loss {last['val_loss']:.3f} in "
              f"{run['seconds']:.0f} s", flush=True)
        plot_curve(run["curve"], png, budget)
        sections["budget"] = render_budget(run, png, budget, _measured(load))
    if "hf" in only:
        load = os.getloadavg()
        print("hf: llmlab GPT vs GPT2LMHeadModel ...", flush=True)
        model_config = config.model_config(vocab)
        same = check_same_loss(model_config, *batches[0])
        hf = compare_with_hf(model_config, config.lr, batches, rounds=2 if args.quick else 4,
                             steps=4 if args.quick else 8)
        sections["hf"] = render_hf(hf, same, model_config, shape, _measured(load))
    if "optim" in only:
        load = os.getloadavg()
        print("optim: optimizers ...", flush=True)
        optim = compare_optimizers(config, vocab, batches, rounds=2 if args.quick else 3,
                                   steps=6 if args.quick else 8)
        sections["optim"] = render_optim(optim, shape, _measured(load))
    if "precision" in only:
        load = os.getloadavg()
        print("precision: fp32 vs bf16 ...", flush=True)
        precision = compare_precision(config, vocab, *batches[0],
                                      repeats=4 if args.quick else 10)
        sections["precision"] = render_precision(precision, _measured(load))
    if "ckpt" in only:
        load = os.getloadavg()
        print("ckpt: activation checkpointing ...", flush=True)
        big_config = load_config(CONFIG, [f"out_dir={workdir}", "block_size=256"])
        bx, by = WindowSampler(data[0], CKPT_BATCH, 256, seed=3).sample()
        ckpt = compare_checkpointing(big_config, vocab, bx, by, repeats=3)
        sections["ckpt"] = render_ckpt(ckpt, _measured(load))
    if "ddp" in only:
        load = os.getloadavg()
        print("ddp: 1 process vs 2 ranks ...", flush=True)
        ddp = compare_ddp(base_overrides, steps=8 if args.quick else 20, workdir=workdir)
        sections["ddp"] = render_ddp(ddp, shape, _measured(load))

    budget_flags = ("" if args.quick else f" --budget {budget:g}") + f" --ranks {args.ranks}" \
        + (f" --threads {args.threads}" if args.ranks == 1 else "") \
        + (" --set " + " ".join(args.set) if args.set else "")
    header = "\n".join([
        "# Training benchmark",
        "",
        f"{machine(torch=torch.__version__)} · last run: "
        f"`python benchmarks/bench_training.py --only {','.join(only)}"
        + (" --quick" if args.quick else "")
        + (budget_flags if "budget" in only else "")
        + f"` ({time.perf_counter() - started:.0f} s). Each section says when it was measured "
        "and under what load; re-run one with `--only NAME`.",
    ])
    print(write_report(args.out, sections, header))
    shutil.rmtree(workdir, ignore_errors=True)  # token files, checkpoints


if __name__ == "__main__":
    main()
