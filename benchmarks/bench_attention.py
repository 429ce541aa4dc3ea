"""Benchmark attention's memory and time as the sequence grows, and the KV cache per token.

Three ways to compute the same causal attention on CPU, float32, batch 1, 4 heads of 64:

- **naive**: ``llmlab.attention.scaled_dot_product_attention``, which materialises the
  N x N scores and weights;
- **tiled**: ``llmlab.attention.tiled_attention`` (online softmax over 256 x 256 tiles);
- **torch SDPA**: ``torch.nn.functional.scaled_dot_product_attention`` (the baseline).

Memory is measured honestly, per configuration, in a fresh subprocess: after the inputs
exist, the process's peak-RSS mark is reset (``/proc/self/clear_refs``, Linux) and read back
(``VmHWM``) after one call; the table shows that peak minus the resident size just before
the call, i.e. the extra memory the call needed at its worst moment. The size of the
largest intermediate each method creates is computed too, for comparison. Time is the best
of several calls in the same process. Outputs are checked against torch SDPA.

The KV-cache table uses SmolLM2-135M's shape, read from the course asset's config through
``llmlab.model.ModelConfig.from_hf``.

    python benchmarks/bench_attention.py [--quick] [--out benchmarks/results/attention.md]

``--quick`` stops at length 2048. The naive path is skipped where its score matrix alone
would exceed ``--naive-max-mib`` (default 512 MiB), and the table says so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import machine, save_report  # first: offline settings, llmlab importable

# isort: split

import torch
import torch.nn.functional as F

from llmlab import attention as A

BATCH, HEADS, HEAD_DIM, BLOCK = 1, 4, 64, 256
LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
METHODS = ("naive", "tiled", "torch SDPA")
MIB = 2**20


# ----------------------------------------------------------------------------- one measurement


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (this benchmark needs Linux)")


def attention_call(method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Any:
    if method == "naive":
        return lambda: A.scaled_dot_product_attention(q, k, v, is_causal=True)
    if method == "tiled":
        return lambda: A.tiled_attention(q, k, v, BLOCK, is_causal=True)
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)


def measure(method: str, n: int, threads: int) -> dict[str, Any]:
    """Run in a fresh process: extra peak memory of one call, best time, error vs torch."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # A first call pages in library code and starts thread pools (tens of MiB of RSS
        # that has nothing to do with N): pay that on small inputs before measuring.
        attention_call(method, *torch.randn(3, BATCH, HEADS, 128, HEAD_DIM).unbind(0))()
        q, k, v = torch.randn(3, BATCH, HEADS, n, HEAD_DIM, generator=gen).unbind(0)
        call = attention_call(method, q, k, v)
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to "now"
        start = time.perf_counter()
        out = call()
        times = [time.perf_counter() - start]
        peak = _status_kib("VmHWM")
        repeats = 3 if n <= 2048 else 1
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        error = (out - reference).abs().max().item()
    return {"extra_mib": (peak - before) / 1024, "seconds": min(times), "max_abs_err": error}


def measure_in_subprocess(method: str, n: int, threads: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", method, str(n), "--threads", str(threads)],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{method} at N={n} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- sizes


def largest_intermediate_bytes(method: str, n: int) -> int | None:
    """Bytes of the biggest tensor the method creates (float32): the score matrix, or a tile."""
    if method == "naive":
        return BATCH * HEADS * n * n * 4
    if method == "tiled":
        return BATCH * HEADS * min(BLOCK, n) ** 2 * 4
    return None  # inside torch's kernel


def qkv_out_bytes(n: int) -> int:
    return 4 * BATCH * HEADS * n * HEAD_DIM * 4  # q, k, v and the output


def smollm2_config():
    """SmolLM2-135M's ModelConfig, from the asset's transformers config (no weights loaded)."""
    from transformers import AutoConfig

    from llmlab import assets
    from llmlab.model import ModelConfig

    folder = assets.path("smollm2-135m", fetch_missing=False) / "hf"
    return ModelConfig.from_hf(AutoConfig.from_pretrained(folder))


# ----------------------------------------------------------------------------- report


def plot(results: dict[tuple[str, int], dict[str, Any]], lengths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, marker in zip(METHODS, "osD", strict=True):
        ns = [n for n in lengths if (method, n) in results]
        mem_ax.plot(ns, [results[method, n]["extra_mib"] for n in ns], marker=marker,
                    label=method)
        time_ax.plot(ns, [results[method, n]["seconds"] for n in ns], marker=marker,
                     label=method)
    mem_ax.plot(lengths, [largest_intermediate_bytes("naive", n) / MIB for n in lengths], "k--",
                lw=1, label="one N×N float32 matrix (∝ N²)")
    mem_ax.plot(lengths, [qkv_out_bytes(n) / MIB for n in lengths], "k:", lw=1,
                label="q, k, v and output (∝ N)")
    mem_ax.set(xscale="log", yscale="log", xlabel="sequence length N",
               ylabel="extra peak memory of one call (MiB)",
               title="Memory: quadratic vs linear")
    time_ax.set(xscale="log", yscale="log", xlabel="sequence length N", ylabel="seconds",
                title="Time (best of runs)")
    for ax in (mem_ax, time_ax):
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Causal attention, batch {BATCH}, {HEADS} heads × {HEAD_DIM}, float32, CPU")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def kv_rows(config: Any) -> list[str]:
    shape = (config.n_layer, config.head_dim)
    rows = ["| attention | KV heads | bytes/token fp32 | bytes/token bf16 | "
            f"bf16 cache at {config.context_length:,} tokens | vs MHA |",
            "|---|---:|---:|---:|---:|---:|"]
    mha_bytes = A.kv_cache_bytes_per_token(shape[0], config.n_head, shape[1], torch.bfloat16)
    variants = [("MHA", config.n_head), (f"GQA (SmolLM2's own, {config.n_kv_head} groups)",
                                         config.n_kv_head), ("MQA", 1)]
    for name, kv_heads in variants:
        fp32 = A.kv_cache_bytes_per_token(shape[0], kv_heads, shape[1], torch.float32)
        bf16 = A.kv_cache_bytes_per_token(shape[0], kv_heads, shape[1], torch.bfloat16)
        total = bf16 * config.context_length / MIB
        rows.append(f"| {name} | {kv_heads} | {fp32:,} | {bf16:,} | {total:,.0f} MiB "
                    f"| {bf16 / mha_bytes:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="lengths up to 2048 only")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/attention.md"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--naive-max-mib", type=float, default=512.0,
                        help="skip the naive path when its N x N scores exceed this")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.threads)))
        return

    lengths = [n for n in LENGTHS if n <= 2048] if args.quick else list(LENGTHS)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    skipped: dict[int, str] = {}
    started = time.perf_counter()
    for n in lengths:
        for method in METHODS:
            scores_mib = largest_intermediate_bytes("naive", n) / MIB
            if method == "naive" and scores_mib > args.naive_max_mib:
                skipped[n] = (f"skipped: its {scores_mib:,.0f} MiB score matrix exceeds "
                              f"--naive-max-mib={args.naive_max_mib:,.0f}")
                print(f"N={n:5d} {method:10s} {skipped[n]}")
                continue
            results[method, n] = r = measure_in_subprocess(method, n, args.threads)
            print(f"N={n:5d} {method:10s} {r['extra_mib']:9.1f} MiB {r['seconds']:8.3f} s "
                  f"max|err| {r['max_abs_err']:.1e}")
            assert r["max_abs_err"] < 1e-4, f"{method} disagrees with torch SDPA at N={n}"
    elapsed = time.perf_counter() - started

    png = args.out.with_name(args.out.stem + "_memory.png")
    plot(results, lengths, png)
    config = smollm2_config()

    def cell(method: str, n: int) -> str:
        if (method, n) not in results:
            return skipped.get(n, "—")
        r = results[method, n]
        return f"{r['extra_mib']:,.1f} MiB · {r['seconds'] * 1e3:,.0f} ms"

    def biggest(method: str, n: int) -> str:
        size = largest_intermediate_bytes(method, n)
        return "(in kernel)" if size is None else f"{size / MIB:,.2f}"

    rows = [
        "# Attention benchmark",
        "",
        f"{machine(torch=torch.__version__)} · torch threads: {args.threads}"
        + (" · **--quick**" if args.quick else ""),
        "",
        f"Causal self-attention, float32, batch {BATCH}, {HEADS} heads of {HEAD_DIM} dims, "
        f"on CPU. Tiled = `llmlab.attention.tiled_attention` with {BLOCK} x {BLOCK} tiles; "
        "naive = `llmlab.attention.scaled_dot_product_attention` (materialises N x N); "
        "baseline = `torch.nn.functional.scaled_dot_product_attention`. Every output was "
        "checked against the baseline (max abs difference < 1e-4).",
        "",
        "## Extra peak memory and time of one call",
        "",
        "| N | naive | tiled | torch SDPA | tiled vs SDPA time | largest intermediate "
        "naive / tiled (MiB) |",
        "|---:|---|---|---|---:|---:|",
    ]
    for n in lengths:
        ratio = results["tiled", n]["seconds"] / results["torch SDPA", n]["seconds"]
        rows.append(f"| {n:,} | {cell('naive', n)} | {cell('tiled', n)} | "
                    f"{cell('torch SDPA', n)} | {ratio:.1f}x slower | "
                    f"{biggest('naive', n)} / {biggest('tiled', n)} |")
    rows += [
        "",
        "How memory is measured: each cell is a fresh Python process. After the inputs are "
        "built, the kernel's peak-RSS mark is reset (`/proc/self/clear_refs`); after one "
        "call, the peak (`VmHWM`) minus the resident size just before the call is the extra "
        "memory the call needed at its worst moment (output included; allocator caching "
        "and page granularity make small values approximate). The last column is computed, "
        "not measured: the N x N score matrix for naive (several such matrices are alive at "
        "once, which is why the measurement is a small multiple of it), one tile for tiled. "
        f"q, k, v and the output together take {qkv_out_bytes(lengths[-1]) / MIB:,.0f} MiB "
        f"at N = {lengths[-1]:,}; the output alone {qkv_out_bytes(lengths[-1]) / 4 / MIB:,.0f} "
        "MiB, most of what torch SDPA needs. Time: best of 4 calls up to N = 2048, of 2 "
        f"above, with torch threads = {args.threads} (on a shared 2-core machine, 2 threads "
        "that wait on each other were slower and far noisier).",
        "",
        f"Plot: [{png.name}]({png.name}) (log-log: naive grows like N², tiled and torch "
        "SDPA like N).",
        "",
        f"## KV cache per token at SmolLM2-135M's shape ({config.n_layer} layers, "
        f"{config.n_head} query heads of {config.head_dim} dims)",
        "",
        *kv_rows(config),
        "",
        "From `llmlab.attention.kv_cache_bytes_per_token` = 2 (key and value) x layers x "
        "KV heads x head_dim x bytes per number; the test suite checks it against the "
        "bytes a transformers `DynamicCache` actually holds.",
        "",
        f"Benchmark wall time: {elapsed:.0f} s.",
    ]
    save_report(rows, args.out)
    print(f"and {png}")


if __name__ == "__main__":
    main()
