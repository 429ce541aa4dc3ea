"""Benchmark pretraining a character-level GPT on Shakespeare on a CPU, with named baselines
measured in the same run.

1. **Quality per wall-clock budget**: the model of ``configs/shakespeare_char.yaml``
   (4 layers, 128 dims) trained for ``--minutes`` of wall time; the number of steps (and
   so the cosine schedule's length) is set from a short calibration run. Reports the
   validation loss reached, its curve, and samples.
2. **Optimizer**: training tokens/s and the optimizer step alone, llmlab's ``AdamW``
   vs ``torch.optim.AdamW`` (for-loop, ``foreach`` and ``fused``) on the same model and
   batches (llmlab's is the for-loop algorithm, so the for-loop torch one is the
   like-for-like baseline).
3. **Mixed precision**: a training step in fp32 vs bf16 autocast on CPU.
4. **Activation checkpointing**: bytes saved for the backward pass (counted exactly with
   ``saved_tensors_hooks``), the process's peak-RSS growth during one step, and step time.
5. **Data parallelism**: 1 process vs 2 DDP ranks (gloo) on the same global batch,
   tokens/s from the per-step times each run logs.

    python benchmarks/bench_training.py [--minutes 4] [--quick] [--out FILE.md]

``--quick`` trains for 1 minute and shortens every other measurement.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from llmlab.model import GPT  # noqa: E402
from llmlab.training import (  # noqa: E402
    AdamW,
    Trainer,
    WarmupCosine,
    WindowSampler,
    autocast,
    causal_lm_loss,
    enable_activation_checkpointing,
    load_config,
    prepare_data,
    run_data_parallel,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "shakespeare_char.yaml"
MIB = 2**20
EVAL_BATCHES, EVALUATIONS = 10, 8  # for the budget run
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


def train_for_budget(data: tuple[Any, Any, Any], seconds: float, out_dir: Path,
                     block_size: int) -> dict[str, Any]:
    """The shakespeare_char model trained for ``seconds`` of wall time."""
    overrides = [f"out_dir={out_dir}", "device=cpu", "progress=false", "tensorboard=false",
                 "sample_chars=0", f"block_size={block_size}", f"eval_batches={EVAL_BATCHES}"]
    probe = Trainer(load_config(CONFIG, overrides + ["max_steps=200"]), *data)
    probe.fit(steps=3)  # warm up, then time a few steps
    step_seconds = median_seconds(probe.train_step, 8)
    # An evaluation runs eval_batches forward passes on each split (a forward pass is
    # about a third of a training step); the budget pays for EVALUATIONS of them.
    eval_seconds = 2 * EVAL_BATCHES * step_seconds / 3
    steps = max(int((seconds - EVALUATIONS * eval_seconds) / step_seconds), 20)
    eval_interval = max(steps // EVALUATIONS, 1)
    # The loop below evaluates after each chunk itself (the trainer only at the end).
    config = load_config(CONFIG, overrides + [f"max_steps={steps}",
                                              f"warmup_steps={min(100, steps // 10)}",
                                              "eval_interval=1000000000"])
    trainer = Trainer(config, *data)
    started = time.perf_counter()
    curve = []
    while (trainer.step < trainer.config.max_steps
           and time.perf_counter() - started < seconds * 1.15):
        trainer.fit(steps=eval_interval)
        if not trainer.evaluations or trainer.evaluations[-1]["step"] != trainer.step:
            trainer.evaluations.append(trainer.evaluate())
        elapsed = time.perf_counter() - started
        curve.append((elapsed, trainer.evaluations[-1]))
        if trainer.step < trainer.config.max_steps and elapsed < seconds / 2:
            # A shared machine speeds up and slows down: re-plan the run's length (and the
            # cosine's end) from the pace measured so far, evaluations included.
            planned = trainer.step + int((seconds - elapsed) * trainer.step / elapsed)
            planned = max(planned, trainer.step + 1)
            trainer.config = dataclasses.replace(trainer.config, max_steps=planned)
            trainer.schedule = WarmupCosine(config.lr, config.min_lr, config.warmup_steps,
                                            planned)
            left = max(EVALUATIONS - len(curve), 1)
            eval_interval = max((planned - trainer.step) // left, 1)
    elapsed = time.perf_counter() - started
    samples = [trainer.sample(300, prompt=prompt, seed=seed)
               for seed, prompt in enumerate(("ROMEO:\n", "\n"))]
    return {"steps": trainer.step, "planned_steps": steps, "seconds": elapsed,
            "final_max_steps": trainer.config.max_steps,
            "step_seconds": step_seconds,
            "curve": curve, "samples": samples, "config": config,
            "tokens": trainer.step * config.batch_size * config.block_size,
            "n_params": sum(p.numel() for p in trainer.model.parameters())}


def plot_curve(curve: list[tuple[float, dict[str, float]]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([t / 60 for t, _ in curve], [e["val_loss"] for _, e in curve], "o-", label="validation")
    ax.plot([t / 60 for t, _ in curve], [e["train_loss"] for _, e in curve], "s--", label="train")
    ax.set(xlabel="wall-clock minutes", ylabel="loss (nats/char)",
           title="Character-level Shakespeare GPT on CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- 2-4. steps


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
                loss = causal_lm_loss(model(x), y)
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
        loss = causal_lm_loss(model(x), y)
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
        loss = causal_lm_loss(model(x), y)
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


# ----------------------------------------------------------------------------- 5. DDP


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


# ----------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget")
    parser.add_argument("--quick", action="store_true", help="1 minute, short measurements")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--block-size", type=int, default=64,
                        help="training context (64 learns faster per CPU second than 128)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training.md"))
    args = parser.parse_args()
    minutes = 1.0 if args.quick else args.minutes
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="llmlab-bench-training-"))

    base_overrides = [f"out_dir={workdir / 'data'}", "device=cpu", f"block_size={args.block_size}"]
    config = load_config(CONFIG, base_overrides)
    data = prepare_data(config)
    vocab = data[2].vocab_size

    print(f"1. training for {minutes:g} min ...", flush=True)
    run = train_for_budget(data, minutes * 60, workdir / "budget", args.block_size)
    last = run["curve"][-1][1]
    print(f"   {run['steps']} steps, val loss {last['val_loss']:.3f} in {run['seconds']:.0f} s")

    sampler = WindowSampler(data[0], config.batch_size, config.block_size, seed=7)
    batches = [sampler.sample() for _ in range(8)]
    print("2. optimizers ...", flush=True)
    optim = compare_optimizers(config, vocab, batches, rounds=2 if args.quick else 3,
                               steps=6 if args.quick else 8)
    x, y = batches[0]
    print("3. precision ...", flush=True)
    precision = compare_precision(config, vocab, x, y, repeats=4 if args.quick else 10)
    print("4. activation checkpointing ...", flush=True)
    big_config = load_config(CONFIG, [f"out_dir={workdir}", "block_size=256"])
    bx, by = WindowSampler(data[0], CKPT_BATCH, 256, seed=3).sample()
    ckpt = compare_checkpointing(big_config, vocab, bx, by, repeats=3)
    print("5. data parallelism ...", flush=True)
    ddp = compare_ddp(base_overrides, steps=8 if args.quick else 20, workdir=workdir)
    elapsed = time.perf_counter() - started

    png = args.out.with_name(args.out.stem + "_curve.png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_curve(run["curve"], png)
    cfg = run["config"]
    model = cfg.model
    baseline = optim["torch AdamW (for-loop)"]
    rows = [
        "# Training benchmark",
        "",
        f"{datetime.date.today()} · {platform.processor() or platform.machine()} · "
        f"{os.cpu_count()} CPUs · torch threads: {args.threads} · Python "
        f"{platform.python_version()} · torch {torch.__version__} · load average at start "
        f"{load_before[0]:.1f} (a shared machine: other work ran beside this benchmark)"
        + (" · **--quick**" if args.quick else ""),
        "",
        f"## 1. Character-level Shakespeare in {minutes:g} min of one CPU core",
        "",
        f"`configs/shakespeare_char.yaml` ({model['n_layer']} layers, {model['n_head']} heads, "
        f"d_model {model['d_model']}, {run['n_params']:,} parameters, batch {cfg.batch_size} x "
        f"block {cfg.block_size}, AdamW lr {cfg.lr:g} with warm-up + cosine to "
        f"{cfg.min_lr:g}). The run's length (and so the cosine's end) is planned from a timed "
        f"calibration ({run['step_seconds'] * 1e3:.0f} ms a step: {run['planned_steps']} "
        "steps), then re-planned after each evaluation in the first half of the budget from "
        "the pace measured so far (the load of a shared machine changes), ending at "
        f"{run['final_max_steps']} steps. Validation = the last 10% of the corpus, "
        f"{EVAL_BATCHES} batches a split per evaluation.",
        "",
        "| wall time | step | train loss | validation loss | validation perplexity |",
        "|---:|---:|---:|---:|---:|",
    ]
    for seconds, e in run["curve"]:
        rows.append(f"| {seconds:.0f} s | {int(e['step'])} | {e['train_loss']:.3f} | "
                    f"{e['val_loss']:.3f} | {e['val_ppl']:.2f} |")
    rows += [
        "",
        f"Reached **validation loss {last['val_loss']:.3f}** after {run['steps']} steps "
        f"({run['tokens']:,} training tokens, {run['tokens'] / run['seconds']:,.0f} tokens/s "
        f"including evaluations) in {run['seconds']:.0f} s. Curve: "
        f"[{png.name}]({png.name}).",
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
        "",
        "## 2. Optimizer: llmlab's AdamW vs torch.optim.AdamW",
        "",
        f"Same model, same 8 batches of {cfg.batch_size} x {cfg.block_size} tokens, a whole "
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
    ratio = precision["bf16"]["seconds"] / precision["fp32"]["seconds"]
    rows += [
        "",
        "The optimizer step is a small part of a training step for this model (the forward "
        "and backward passes dominate), and on a shared machine whole-step throughput drifts "
        "by tens of percent between rounds: read the tokens/s ratios as noise around 1.0x "
        "and the *optimizer step alone* column as the optimizers' own cost. Equal losses "
        "show that the four compute the same update.",
        "",
        "## 3. Mixed precision on CPU: fp32 vs bf16 autocast",
        "",
        "| precision | step time (median) | loss |",
        "|---|---:|---:|",
        f"| fp32 | {precision['fp32']['seconds'] * 1e3:.0f} ms | "
        f"{precision['fp32']['loss']:.4f} |",
        f"| bf16 autocast | {precision['bf16']['seconds'] * 1e3:.0f} ms | "
        f"{precision['bf16']['loss']:.4f} |",
        "",
        f"bf16 / fp32 step time: **{ratio:.2f}x** ({'slower' if ratio > 1 else 'faster'}). "
        "CPUs without bf16 matrix instructions (AMX, AVX512-BF16) pay for the conversions "
        "without faster matmuls; on GPUs bf16 is the default.",
        "",
        "## 4. Activation checkpointing",
        "",
        f"Same model, batch {CKPT_BATCH} x 256 tokens. *Saved for backward* counts the "
        "bytes of every tensor autograd keeps for the backward pass plus the block inputs "
        "checkpointing "
        "keeps to replay each block, each storage once (exact); *peak RSS growth* is the "
        "process's high-water mark during one step minus its size before (approximate: "
        "allocator caching).",
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
        "",
        "## 5. One process vs two DDP ranks (gloo, CPU)",
        "",
        f"The same global batch ({cfg.batch_size} x {cfg.block_size}); tokens/s from the "
        "median logged step time after 2 warm-up steps (process start-up excluded).",
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
        "gradient each step, so on a small model two threads in one process are the fair "
        "baseline; data parallelism pays off with one idle device per rank. Equal final "
        "losses: the ranks compute the same training as one process (tested to 1e-6 in "
        "tests/test_training.py).",
        "",
        f"Benchmark wall time: {elapsed:.0f} s.",
    ]
    args.out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
