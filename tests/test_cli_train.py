"""`llmlab train`: a YAML config plus --set overrides, clear errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import torch

from llmlab import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny_test.yaml")


def test_train_runs_a_config_with_overrides_and_writes_a_checkpoint(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = cli.main(["train", "--config", TINY, "--set", f"out_dir={tmp_path}",
                         "--set", "max_steps=6", "--set", "model.n_layer=1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "step 6: train loss" in out and "validation loss" in out
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6 and state["config"]["model"]["n_layer"] == 1
    assert len(state["history"]) == 6


def test_unknown_setting_exits_2_with_a_suggestion(capsys):
    assert cli.main(["train", "--config", TINY, "--set", "max_step=3"]) == 2
    assert "unknown config key 'max_step' (did you mean 'max_steps'?)" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert cli.main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no config file at" in capsys.readouterr().err
