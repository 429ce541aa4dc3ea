"""DeepSpeed ZeRO on CPU processes: the same training as llmlab's Trainer, sharded.

The ZeRO runs need DeepSpeed (built with ``DS_BUILD_OPS=0``: no compiled kernels) and
use its CPU accelerator with the gloo backend: ``run_deepspeed`` sets
``DS_ACCELERATOR=cpu`` in its worker processes, the torchrun test sets it itself, so
nothing needs to be set outside.
"""

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmlab.training import Trainer, load_config
from llmlab.training.trainer import free_port
from llmlab.training.zero import (
    deepspeed_config,
    optimizer_state_bytes,
    run_deepspeed,
    weights_file,
    worker_log,
)

CONFIGS = Path(__file__).resolve().parents[1] / "llmlab" / "configs"
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed is not installed (DS_BUILD_OPS=0 pip install --no-build-isolation "
           "deepspeed; `make setup` does it)")

# Two ranks against one process, 3 steps of 2 micro-batches: float32 rounding differs
# (the all-reduce sums the halves' gradients in another order, torch's AdamW arranges its
# arithmetic differently from llmlab's), ~3e-7 measured. A real mistake (a wrong learning
# rate, weight decay on the wrong tensors, another slice of the batch) moves weights by
# about lr = 1e-3 per step, thousands of times more.
TOLERANCE = 2e-6
STAGES = (1, 2, 3)


def tiny(tmp_path: Path, **changes):
    config = load_config("tiny_test", [f"out_dir={tmp_path / 'deepspeed'}"])
    defaults = dict(max_steps=3, warmup_steps=1, grad_accum_steps=2, eval_interval=3,
                    eval_batches=1)
    return dataclasses.replace(config, **{**defaults, **changes})


# ----------------------------------------------------------------------------- the config


def test_config_maps_the_run_onto_deepspeed_fields(tmp_path):
    config = tiny(tmp_path, batch_size=8, grad_accum_steps=3, grad_clip=0.5, beta2=0.95)
    ds = deepspeed_config(config, stage=3, world_size=4)
    assert ds["train_batch_size"] == 24  # sequences per optimizer step, all ranks
    assert ds["train_micro_batch_size_per_gpu"] * 4 * ds["gradient_accumulation_steps"] == 24
    assert ds["gradient_clipping"] == 0.5
    params = ds["optimizer"]["params"]
    assert ds["optimizer"]["type"] == "AdamW" and params["torch_adam"] is True
    assert params["betas"] == [config.beta1, 0.95] and params["lr"] == config.lr
    assert params["weight_decay"] == config.weight_decay and params["eps"] == config.eps
    assert ds["zero_optimization"]["stage"] == 3 and "bf16" not in ds
    assert deepspeed_config(dataclasses.replace(config, precision="bf16"), 1, 2)["bf16"] == {
        "enabled": True}
    assert deepspeed_config(dataclasses.replace(config, grad_clip=None), 0, 1)[
        "gradient_clipping"] == 0.0  # DeepSpeed's "no clipping"


@pytest.mark.parametrize("stage, world_size, message", [
    (4, 2, "stage must be a ZeRO stage in (0, 1, 2, 3); got 4"),
    ("2", 2, "stage must be a ZeRO stage"),
    (2, 0, "world_size must be a positive int; got 0"),
    (2, 3, "batch_size=8 must split evenly over world_size=3"),
])
def test_impossible_inputs_fail_clearly(tmp_path, stage, world_size, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        deepspeed_config(tiny(tmp_path), stage, world_size)
    with pytest.raises(ValueError, match="must be a TrainConfig"):
        deepspeed_config({"batch_size": 8}, 2, 2)  # type: ignore[arg-type]


def test_run_deepspeed_rejects_bad_stages_before_starting_processes(tmp_path):
    with pytest.raises(ValueError, match="at least one ZeRO stage"):
        run_deepspeed(tiny(tmp_path), stages=[])
    with pytest.raises(ValueError, match="stage must be a ZeRO stage"):
        run_deepspeed(tiny(tmp_path), stages=[2, 4])
    with pytest.raises(ValueError, match="runs on CPU processes"):
        run_deepspeed(dataclasses.replace(tiny(tmp_path), device="cuda"), stages=2)


@pytest.mark.parametrize("stage", [2, 3])
def test_the_shipped_json_is_what_deepspeed_config_writes(stage):
    shipped = json.loads((CONFIGS / "deepspeed" / f"shakespeare_char_zero{stage}.json")
                         .read_text(encoding="utf-8"))
    assert shipped == deepspeed_config(load_config("shakespeare_char"), stage, world_size=2)


def test_optimizer_state_bytes_counts_the_adam_moments():
    model = torch.nn.Linear(10, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    assert optimizer_state_bytes(optimizer) == 0  # moments appear at the first step
    model(torch.ones(2, 10)).sum().backward()
    optimizer.step()
    params = sum(p.numel() for p in model.parameters())
    steps = 2 * 4  # torch keeps a float32 step counter per parameter tensor
    assert optimizer_state_bytes(optimizer) == 2 * 4 * params + steps
    with pytest.raises(ValueError, match="expected a torch optimizer"):
        optimizer_state_bytes(object())


# ----------------------------------------------------------------------------- ZeRO runs


@pytest.fixture(scope="module")
def zero_runs(tmp_path_factory):
    """One process of llmlab's Trainer, and ZeRO-1, 2 and 3 on two ranks (in the same pair
    of processes, so DeepSpeed's imports are paid once)."""
    tmp_path = tmp_path_factory.mktemp("zero")
    config = tiny(tmp_path)
    single = Trainer(dataclasses.replace(config, out_dir=str(tmp_path / "single")))
    single.fit()
    printed = tmp_path / "printed.txt"
    with _file_descriptors_to(printed):  # what a notebook cell would show
        paths = run_deepspeed(config, stages=list(STAGES), world_size=2)
    runs = {stage: torch.load(path, weights_only=False) for stage, path in paths.items()}
    return single, runs, printed.read_text(), config


@contextlib.contextmanager
def _file_descriptors_to(path: Path):
    """Point this process's stdout and stderr descriptors (which spawned workers inherit)
    at ``path`` for the duration, as a notebook kernel captures them into the cell."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@needs_deepspeed
def test_workers_print_nothing_into_the_notebook_cell(zero_runs):
    """The site build (`jupyter-book -W`) fails on any stderr in a cell: DeepSpeed's workers
    must keep torch's FutureWarnings and gloo's logs in their own log files."""
    *_, printed, config = zero_runs
    assert printed == "", f"the workers printed into the cell: {printed[-2000:]}"
    for rank in range(2):
        assert worker_log(config, rank).is_file()


@needs_deepspeed
@pytest.mark.parametrize("stage", STAGES)
def test_two_zero_ranks_end_with_the_parameters_of_one_process(zero_runs, stage):
    single, runs, *_ = zero_runs
    expected, weights = single.model.state_dict(), runs[stage]["model"]
    assert weights.keys() == expected.keys()
    worst = max((weights[k] - expected[k]).abs().max().item() for k in expected)
    assert worst < TOLERANCE, f"ZeRO-{stage}: largest difference {worst:.2e}"
    initial = Trainer(dataclasses.replace(single.config, max_steps=3)).model.state_dict()
    moved = max((weights[k] - initial[k]).abs().max().item() for k in expected)
    assert moved > 1000 * TOLERANCE  # training really changed the weights
    losses = [row["loss"] for row in runs[stage]["history"]]
    assert losses == pytest.approx([row["loss"] for row in single.history], abs=1e-5)
    assert runs[stage]["deepspeed_config"]["zero_optimization"]["stage"] == stage


@needs_deepspeed
def test_each_stage_shards_what_zero_promises(zero_runs):
    single, runs, *_ = zero_runs
    full_moments = optimizer_state_bytes(single.optimizer)  # llmlab's AdamW: m and v
    parameter_bytes = sum(p.numel() * p.element_size() for p in single.model.parameters())
    assert full_moments == 2 * parameter_bytes
    for stage, run in runs.items():
        assert [m["rank"] for m in run["memory"]] == [0, 1]
        for memory in run["memory"]:
            # Each rank keeps half of the moments (plus torch's small step counters).
            assert full_moments / 2 <= memory["optimizer_state_bytes"] < 0.51 * full_moments
            held = memory["parameter_bytes"]
            if stage == 3:  # ZeRO-3 also shards the weights
                assert held == pytest.approx(parameter_bytes / 2, rel=0.01)
            else:
                assert held == parameter_bytes


@needs_deepspeed
def test_the_entry_point_runs_under_torchrun_without_zero(tmp_path):
    """Stage 0 is plain data parallelism through DeepSpeed: every rank keeps all the
    optimizer state, the baseline the ZeRO stages divide."""
    config = tiny(tmp_path, max_steps=2, grad_accum_steps=1)
    out_dir = tmp_path / "deepspeed"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", "-m", "llmlab.training.zero",
               "--config", "tiny_test", "--stage", "0", "--set", f"out_dir={out_dir}",
               "--set", "max_steps=2", "--set", "warmup_steps=1"]
    # No C++ compiler and an empty extension cache: nothing may need compiling.
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "CXX": "/nonexistent/c++", "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "saved the final weights of the ZeRO-0 run" in result.stdout
    assert "shm_comm" not in result.stdout + result.stderr  # no operator was built
    run = torch.load(weights_file(config, 0), weights_only=False)
    for memory in run["memory"]:  # nothing sharded: both moments of every weight
        assert memory["optimizer_state_bytes"] >= 2 * memory["parameter_bytes"] > 0
    from llmlab.training import load_trained

    model, tokenizer = load_trained(weights_file(config, 0))
    assert tokenizer is not None and model.config.n_layer == config.model["n_layer"]
