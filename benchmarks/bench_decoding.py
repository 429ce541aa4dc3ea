"""Benchmark decoding on SmolLM2-135M: the KV cache, llmlab against transformers, and
speculative decoding, every ratio against a baseline measured in the same run.

1. **KV cache**: tokens/s of ``llmlab.decoding.generate`` with ``use_cache=True`` against
   ``use_cache=False`` (every step re-reads the whole prefix), greedy, 32 to 512 new tokens.
   Uncached runs longer than ``--uncached-max`` new tokens would take minutes (each step is
   a forward pass over the whole prefix, so the total grows with the square of the
   length); for those the uncached time is *estimated*: one uncached step (a forward pass
   over the prefix, exactly what ``generate(use_cache=False)`` does per token) is timed at
   a few prefix lengths and summed over every step by linear interpolation. The table
   shows the estimate next to the measurement where both exist, so its accuracy is visible.
2. **llmlab vs transformers**: ``llmlab.decoding.generate`` (llmlab's model and KV cache)
   against ``transformers`` ``generate`` on the same model, greedy, same prompts; the
   tokens are checked to be identical.
3. **Speculative decoding**: ``speculative_generate`` with drafts that share the target's
   tokenizer: SmolLM2's first layers (``truncated_draft``) at several depths and ``k``,
   and SmolLM2 itself with int8 weights (``torch.ao`` dynamic quantization, no training).
   Greedy: the output is checked to equal the target's own greedy output. Beside it, the
   cost of one cached forward pass over ``1 + k`` new tokens against one token (what a
   verify step costs), and **prompt lookup** (``prompt_lookup_generate``: draft tokens
   copied from the context, no draft model) on a task that quotes its input.

    python benchmarks/bench_decoding.py [--quick] [--threads N] [--out FILE]

(defaults: 1 thread, ``benchmarks/results/decoding.md``).

``--quick`` stops the cache table at 128 tokens and runs fewer speculative settings.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import machine, save_report  # first: offline settings, llmlab importable

# isort: split

import numpy as np
import torch
import transformers

from llmlab import assets, decoding
from llmlab.attention import KVCache
from llmlab.model import GPT

CACHE_PROMPT = "The history of the printing press begins"
COMPARE_PROMPTS = ["The capital of France is", "def fibonacci(n):",
                   "Once upon a time, in a small village,"]
QUOTE_PASSAGE = ("The lighthouse stood on a rock at the edge of the bay. Every night the keeper "
                 "climbed the hundred steps, lit the great lamp and watched the ships pass "
                 "safely into the harbour.")
QUOTE_PROMPT = ("<|im_start|>user\nRepeat this text exactly:\n\n" + QUOTE_PASSAGE
                + "<|im_end|>\n<|im_start|>assistant\n")
SPECULATIVE_PROMPT = ("<|im_start|>user\nList the days of the week, one per line.<|im_end|>\n"
                      "<|im_start|>assistant\n")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# ----------------------------------------------------------------------------- 1. KV cache


def uncached_step_seconds(model: GPT, length: int, repeat: int = 2) -> float:
    """One step of ``generate(use_cache=False)`` at a prefix of ``length`` tokens: a forward
    pass over all of them, the last position's logits, the argmax (best of ``repeat``)."""
    ids = torch.randint(0, model.config.vocab_size, (1, length),
                        generator=torch.Generator().manual_seed(length))
    stepper = decoding.Stepper(model, 1, length, use_cache=False)
    best = float("inf")
    for _ in range(repeat):
        seconds, _ = timed(lambda: stepper.next_logits(ids).argmax(-1))
        best = min(best, seconds)
    return best


def estimate_uncached(points: dict[int, float], prompt_len: int, new_tokens: int) -> float:
    """Sum of the per-step times of ``new_tokens`` uncached steps, interpolated linearly
    between the prefix lengths in ``points``."""
    lengths = sorted(points)
    steps = np.arange(prompt_len, prompt_len + new_tokens)
    return float(np.interp(steps, lengths, [points[n] for n in lengths]).sum())


def cache_table(model: GPT, ids: torch.Tensor, sizes: list[int], uncached_max: int,
                ) -> tuple[list[str], dict[int, float]]:
    T = ids.shape[1]
    top = T + max(sizes)
    sample_at = sorted({T, *range(T, top, 64), top - 1})
    points = {n: uncached_step_seconds(model, n) for n in sample_at}
    print("uncached step seconds by prefix length:",
          {n: round(s, 3) for n, s in points.items()})
    rows, ratios = [], {}
    for n in sizes:
        t_cached, cached = timed(lambda n=n: decoding.generate(model, ids, n, use_cache=True))
        estimate = estimate_uncached(points, T, n)
        measured = None
        if n <= uncached_max:
            measured, uncached = timed(lambda n=n: decoding.generate(model, ids, n,
                                                                     use_cache=False))
            assert torch.equal(cached, uncached), "cached and uncached generation differ"
        t_uncached = measured if measured is not None else estimate
        ratios[n] = t_uncached / t_cached
        how = (f"{n / measured:.1f} (estimate {n / estimate:.1f})" if measured is not None
               else f"~{n / estimate:.2f} (estimated, not run)")
        rows.append(f"| {n} | {n / t_cached:.1f} | {how} | **{ratios[n]:.1f}x** |")
        print(rows[-1])
    return rows, ratios


# ----------------------------------------------------------------------------- 2. vs transformers


def versus_transformers(model: GPT, hf_model: Any, tokenizer: Any, new_tokens: int,
                        ) -> list[str]:
    eos = tokenizer.eos_token_id
    rows, total = [], {"llmlab": 0.0, "transformers": 0.0, "tokens": 0}
    warm = tokenizer("Hello", return_tensors="pt").input_ids
    decoding.generate(model, warm, 4)
    hf_model.generate(warm, attention_mask=torch.ones_like(warm), max_new_tokens=4,
                      do_sample=False, pad_token_id=eos)
    for prompt in COMPARE_PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        t_ours, ours = timed(lambda ids=ids: decoding.generate(model, ids, new_tokens,
                                                               eos_token_id=eos))
        t_hf, theirs = timed(lambda ids=ids: hf_model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
            do_sample=False, eos_token_id=eos, pad_token_id=eos))
        same = ours.tolist() == theirs.tolist()
        assert same, f"llmlab and transformers generated different tokens for {prompt!r}"
        n = theirs.shape[1] - ids.shape[1]
        total["llmlab"] += t_ours
        total["transformers"] += t_hf
        total["tokens"] += n
        rows.append(f"| `{prompt}` | {n} | {n / t_ours:.1f} | {n / t_hf:.1f} "
                    f"| {t_hf / t_ours:.2f}x | yes |")
        print(rows[-1])
    n = total["tokens"]
    rows.append(f"| **all** | {n} | {n / total['llmlab']:.1f} | {n / total['transformers']:.1f} "
                f"| **{total['transformers'] / total['llmlab']:.2f}x** | yes |")
    return rows


# ----------------------------------------------------------------------------- 3. speculative


def int8_draft(model: GPT) -> GPT:
    """The target itself with int8 weights in every ``nn.Linear`` (dynamic quantization)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def speculative_table(model: GPT, tokenizer: Any, new_tokens: int, depths: list[int],
                      ks: list[int]) -> tuple[list[str], dict[str, list[float]]]:
    ids = tokenizer(SPECULATIVE_PROMPT, return_tensors="pt").input_ids
    decoding.generate(model, ids, 4)  # warm-up
    t_target, expected = timed(lambda: decoding.generate(model, ids, new_tokens))
    print(f"target alone: {new_tokens / t_target:.1f} tokens/s")
    drafts: list[tuple[str, GPT]] = [
        (f"first {d} of {model.config.n_layer} layers", decoding.truncated_draft(model, d))
        for d in depths]
    drafts.append(("SmolLM2 itself, int8 weights", int8_draft(model)))
    rows = [f"| target alone (`generate`, KV cache) | — | — | — | {new_tokens / t_target:.1f} "
            "| 1.00x |"]
    acceptance: dict[str, list[float]] = {}
    for name, draft in drafts:
        t_draft, _ = timed(lambda draft=draft: decoding.generate(draft, ids, new_tokens))
        for k in ks:
            seconds, (got, stats) = timed(lambda draft=draft, k=k: decoding.speculative_generate(
                model, draft, ids, new_tokens, k=k))
            assert torch.equal(got, expected), f"speculative output differs ({name}, k={k})"
            acceptance.setdefault("int8" if "int8" in name else "truncated", []).append(
                stats.acceptance_rate)
            per_call = (got.shape[1] - ids.shape[1]) / stats.target_calls
            rows.append(f"| {name} (alone {new_tokens / t_draft:.0f} tok/s) | {k} "
                        f"| {stats.acceptance_rate:.0%} | {per_call:.2f} "
                        f"| {new_tokens / seconds:.1f} | **{t_target / seconds:.2f}x** |")
            print(rows[-1])
    return rows, acceptance


def verify_cost_rows(model: GPT, tokenizer: Any, ks: list[int], repeat: int = 5) -> list[str]:
    """Best time of one cached forward pass over ``1 + k`` new tokens after the chat prompt,
    against one token: what a verify step costs relative to a plain decoding step."""
    ids = tokenizer(SPECULATIVE_PROMPT, return_tensors="pt").input_ids
    fresh = torch.randint(0, model.config.vocab_size, (1, max(ks) + 1),
                          generator=torch.Generator().manual_seed(0))
    cache = KVCache.allocate(model.config, 1, ids.shape[1] + max(ks) + 1)
    model(ids, cache=cache)
    best = {}
    for _ in range(repeat):  # interleaved, so that a burst of load hits every size alike
        for n in [1] + [k + 1 for k in ks]:
            start = time.perf_counter()
            model(fresh[:, :n], cache=cache)
            best[n] = min(best.get(n, float("inf")), time.perf_counter() - start)
            cache.crop(ids.shape[1])
    return [f"| {n} | {best[n] * 1e3:.1f} | **{best[n] / best[1]:.2f}x** |"
            for n in sorted(best)]


def prompt_lookup_rows(model: GPT, tokenizer: Any, new_tokens: int, ks: list[int],
                       repeat: int = 2) -> list[str]:
    """Prompt lookup against plain greedy ``generate`` on a task that quotes its input."""
    ids = tokenizer(QUOTE_PROMPT, return_tensors="pt").input_ids
    eos = tokenizer.eos_token_id
    t_target, expected = min(timed(lambda: decoding.generate(model, ids, new_tokens,
                                                             eos_token_id=eos))
                             for _ in range(repeat))
    n_new = expected.shape[1] - ids.shape[1]
    rows = [f"| greedy `generate` alone | — | — | — | {n_new / t_target:.1f} | 1.00x |"]
    for k in ks:
        seconds, (got, stats) = min(
            timed(lambda k=k: decoding.prompt_lookup_generate(model, ids, new_tokens, k=k,
                                                              eos_token_id=eos))
            for _ in range(repeat))
        assert torch.equal(got, expected), f"prompt lookup output differs (k={k})"
        rows.append(f"| prompt lookup | {k} | {stats.acceptance_rate:.0%} "
                    f"| {n_new / stats.target_calls:.2f} | {n_new / seconds:.1f} "
                    f"| **{t_target / seconds:.2f}x** |")
        print(rows[-1])
    return rows


# ----------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer settings")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the machine is shared, 1 is steadier)")
    parser.add_argument("--uncached-max", type=int, default=128,
                        help="longest uncached run actually measured; longer ones estimated")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decoding.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    hf_model, tokenizer = assets.load("smollm2-135m")
    hf_model.eval()
    model = GPT.from_hf_llama(hf_model)
    sizes = [32, 64, 128] if args.quick else [32, 64, 128, 256, 512]
    depths, ks = ([20], [2]) if args.quick else ([10, 20], [1, 2, 4])
    compare_tokens, speculative_tokens = (32, 32) if args.quick else (64, 64)

    with torch.no_grad():
        ids = tokenizer(CACHE_PROMPT, return_tensors="pt").input_ids
        cache_rows, ratios = cache_table(model, ids, sizes, args.uncached_max)
        hf_rows = versus_transformers(model, hf_model, tokenizer, compare_tokens)
        spec_rows, acceptance = speculative_table(model, tokenizer, speculative_tokens, depths,
                                                  ks)
        verify_rows = verify_cost_rows(model, tokenizer, [2, 4, 8])
        lookup_rows = prompt_lookup_rows(model, tokenizer, 64, [4, 8])
    elapsed = time.perf_counter() - started
    longest = max(sizes)
    verdict = "met" if ratios[longest] >= 5 else "NOT met"

    rows = [
        "# Decoding benchmark",
        "",
        f"{machine(torch=torch.__version__, transformers=transformers.__version__)} · "
        f"torch using {args.threads} thread(s) · load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (on a shared machine single runs vary, the "
        f"more so the higher the load) · whole run {elapsed / 60:.1f} min"
        + (" · **--quick**" if args.quick else ""),
        "",
        "Model: SmolLM2-135M-Instruct (the course asset, float32) in llmlab's `GPT`. Greedy "
        "decoding throughout; the prompt's forward pass is included in every time.",
        "",
        f"## KV cache: `generate(use_cache=True)` vs `use_cache=False` ({ids.shape[1]}-token "
        "prompt)",
        "",
        "| new tokens | tokens/s with cache | tokens/s without | cache speed-up |",
        "|---:|---:|---:|---:|",
        *cache_rows,
        "",
        f"Target ≥ 5x at {longest} tokens: **{verdict}** ({ratios[longest]:.1f}x). Cached and "
        "uncached runs produced identical tokens (checked where both ran). Without the cache "
        "each step is a forward pass over the whole prefix, so its time grows with the "
        "length and the total with its square; with it each step feeds one token and reads "
        "the stored keys and values. Uncached runs above "
        f"{args.uncached_max} tokens were not run (minutes each): their time is estimated "
        "from single uncached steps timed at prefix lengths every 64 tokens, summed over "
        "all steps; the rows that have both show how close the estimate is.",
        "",
        "## llmlab `generate` vs transformers `generate` (greedy, same prompts, KV cache on "
        "both)",
        "",
        "| prompt | new tokens | llmlab tokens/s | transformers tokens/s | llmlab speed "
        "(transformers time / llmlab time) | identical tokens |",
        "|---|---:|---:|---:|---:|---|",
        *hf_rows,
        "",
        f"Up to {compare_tokens} new tokens, stopping at EOS; one run each after a warm-up.",
        "",
        f"## Speculative decoding ({speculative_tokens} new tokens, greedy, chat prompt)",
        "",
        "| draft | k | acceptance | tokens per target call | tokens/s | speed-up vs target "
        "alone |",
        "|---|---:|---:|---:|---:|---:|",
        *spec_rows,
        "",
        "Every speculative run produced exactly the target's greedy output (checked). A "
        "draft made of the target's first layers reuses its embeddings, final norm and "
        "output head, which were never trained to read an intermediate layer, so few of "
        f"its guesses match (acceptance {min(acceptance['truncated']):.0%} to "
        f"{max(acceptance['truncated']):.0%} here), and on a CPU such a draft is not cheap: "
        "the output head alone (49,152 x 576) is about a fifth of a SmolLM2 step whatever "
        "the depth. A better draft needs no training: the target itself with int8 weights "
        "(dynamic quantization) proposes what the target would say far more often "
        f"({min(acceptance['int8']):.0%} to {max(acceptance['int8']):.0%} accepted) and "
        "costs less per token when the CPU's int8 matrix products beat float32 ones. "
        "With training: a smaller model of the same family (SmolLM2-135M drafting for "
        "SmolLM2-1.7B) or a distilled draft head.",
        "",
        "## What a verify pass costs (one cached forward pass after the chat prompt)",
        "",
        "| new tokens in the pass | ms (best of 5) | cost vs 1 token |",
        "|---:|---:|---:|",
        *verify_rows,
        "",
        "Speculative decoding pays off when a verify pass over `1 + k` tokens costs little "
        "more than one token. On a GPU a decoding step is limited by reading the weights; "
        "on one CPU core, too, a pass over a few tokens reuses each weight it loads, so "
        "the ratio stays well below `1 + k`.",
        "",
        "## Prompt lookup: draft tokens copied from the context (quote a given passage)",
        "",
        "| method | k | acceptance | tokens per model call | tokens/s | speed-up vs greedy |",
        "|---|---:|---:|---:|---:|---:|",
        *lookup_rows,
        "",
        "Task: the chat prompt asks SmolLM2 to repeat a 37-word passage exactly; up to 64 "
        "new tokens, stopping at EOS; best of 2 runs each. The draft is the `k` tokens that "
        "followed the latest earlier occurrence of the last 3 (or 2, or 1) tokens "
        "(`lookup_draft`): no draft model, nothing to run. Output identical to greedy "
        "(checked).",
    ]
    save_report(rows, args.out)


if __name__ == "__main__":
    main()
