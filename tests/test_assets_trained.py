"""The trained asset: a model this machine makes from a run config, then loads like any asset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from llmlab import assets, decoding
from llmlab.model import GPT, lm_loss
from llmlab.tokenization import CharTokenizer
from llmlab.training import Trainer, load_config, load_trained
from llmlab.training import asset as trained_asset
from llmlab.training.config import CONFIGS, config_path
from llmlab.training.data import WindowSampler
from llmlab.training.trainer import prepare_data

TINY = {
    "dataset": "shakespeare", "tokenizer": "char", "max_chars": 20_000,
    "model": {"style": "gpt2", "n_layer": 1, "n_head": 2, "d_model": 16, "dropout": 0.0},
    "batch_size": 4, "block_size": 16, "max_steps": 12, "warmup_steps": 2, "lr": 1e-2,
    "min_lr": 1e-3, "eval_interval": 6, "eval_batches": 2, "log_interval": 3,
    "tensorboard": False, "progress": False, "seed": 0, "device": "cpu",
}


@pytest.fixture
def toy_trained(tmp_path, monkeypatch):
    """Register 'toy-gpt', trained from a tiny config file, with a private LLMLAB_HOME."""
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))
    recipe = tmp_path / "toy_gpt.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    asset = assets.register(assets.Asset(
        name="toy-gpt", description="a test model", license="CC0",
        source=assets.TrainedHere(str(recipe),
                                  builder=assets.Ref("llmlab.training.asset:train_asset")),
        members={}, size_mb=0.0, loader=trained_asset.load_trained_gpt))
    yield asset, recipe
    assets.REGISTRY.pop("toy-gpt", None)


def _run_dir() -> Path:
    runs = list((assets.home() / "runs").glob("toy-gpt-*"))
    assert len(runs) == 1, runs
    return runs[0]


def _weights(model: GPT) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_first_load_trains_then_loads_the_same_model_as_the_checkpoint(toy_trained):
    _, recipe = toy_trained
    model, tokenizer = assets.load("toy-gpt")
    assert isinstance(model, GPT) and not model.training
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.decode(tokenizer.encode("ab")) == "ab"
    reference, _ = load_trained(_run_dir() / "checkpoint.pt")
    ids = torch.tensor([tokenizer.encode("To be, or not")])
    assert torch.equal(model(ids), reference(ids))
    assert model.lm_head.weight is model.tok_emb.weight  # tied again after loading
    made = trained_asset.trained_info("toy-gpt")
    assert made["steps"] == TINY["max_steps"]
    assert made["val_loss"] == made["evaluations"][-1]["val_loss"]
    assets.verify("toy-gpt", full=True)


def test_a_second_load_does_not_train_again(toy_trained, monkeypatch):
    assets.load("toy-gpt")

    def refuse(*args, **kwargs):
        raise AssertionError("trained a second time")

    monkeypatch.setattr(Trainer, "fit", refuse)
    assets.load("toy-gpt")


def test_two_machines_build_bit_identical_weights(toy_trained, tmp_path, monkeypatch):
    first = _weights(assets.load("toy-gpt").model)
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "other_home"))
    second = _weights(assets.load("toy-gpt").model)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_an_interrupted_build_resumes_to_the_same_weights(toy_trained, tmp_path, monkeypatch):
    asset, recipe = toy_trained
    uninterrupted = _weights(assets.load("toy-gpt").model)
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home2"))
    assets.load("toy-gpt")  # to learn the run folder's name, then start over half-way
    run_dir = _run_dir()
    for leftover in (assets.home() / "toy-gpt", run_dir):
        shutil.rmtree(leftover)
    half = Trainer(load_config(recipe, [f"out_dir={run_dir}"]))
    half.fit(steps=TINY["max_steps"] // 2)  # "Ctrl-C" after half the steps
    resumed = assets.load("toy-gpt").model
    assert trained_asset.trained_info("toy-gpt")["steps"] == TINY["max_steps"]
    assert all(torch.equal(v, uninterrupted[k]) for k, v in resumed.state_dict().items())


def test_a_changed_recipe_trains_in_a_new_run_folder(toy_trained):
    _, recipe = toy_trained
    assets.load("toy-gpt")
    recipe.write_text(yaml.safe_dump({**TINY, "max_steps": 8}))
    assets.fetch("toy-gpt", force=True)
    folders = sorted((assets.home() / "runs").glob("toy-gpt-*"))
    assert len(folders) == 2
    assets.load("toy-gpt")
    assert trained_asset.trained_info("toy-gpt")["steps"] == 8


def test_your_own_checkpoint_can_replace_the_asset(toy_trained, tmp_path):
    _, recipe = toy_trained
    assets.load("toy-gpt")
    mine = Trainer(load_config(recipe, [f"out_dir={tmp_path / 'mine'}", "max_steps=5"]))
    mine.fit()
    trained_asset.install_trained(tmp_path / "mine" / "checkpoint.pt", name="toy-gpt")
    model = assets.load("toy-gpt").model
    assert trained_asset.trained_info("toy-gpt")["steps"] == 5
    assert all(torch.equal(v, mine.model.state_dict()[k])
               for k, v in model.state_dict().items())
    assets.fetch("toy-gpt", force=True)  # back to the recipe's model, without retraining
    assets.load("toy-gpt")
    assert trained_asset.trained_info("toy-gpt")["steps"] == TINY["max_steps"]


def test_bad_replacements_are_refused_with_what_to_do(toy_trained, tmp_path):
    with pytest.raises(assets.AssetError, match="no training checkpoint at .*llmlab train"):
        trained_asset.install_trained(tmp_path / "missing.pt", name="toy-gpt")
    junk = tmp_path / "junk.pt"
    torch.save({"weights": 1}, junk)
    with pytest.raises(assets.AssetError, match="not a checkpoint written by llmlab's Trainer"):
        trained_asset.install_trained(junk, name="toy-gpt")
    with pytest.raises(assets.AssetError, match="only a trained asset .*shakespeare-gpt"):
        trained_asset.install_trained(junk, name="shakespeare")


def test_packs_leave_out_trained_assets_and_say_why(toy_trained, tmp_path):
    with pytest.raises(assets.AssetError, match="no archive to pack.*no network needed"):
        assets.pack(tmp_path / "pack", ["toy-gpt"])


def test_packaged_configs_are_found_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path("shakespeare_gpt") == CONFIGS / "shakespeare_gpt.yaml"
    assert config_path("tiny_test.yaml") == CONFIGS / "tiny_test.yaml"
    assert load_config("tiny_test").max_steps == 20
    with pytest.raises(FileNotFoundError, match="did you mean 'shakespeare_gpt'"):
        config_path("shakespeare_gtp")
    mine = tmp_path / "tiny_test.yaml"  # a file on disk wins over the packaged one
    mine.write_text(yaml.safe_dump({**TINY, "max_steps": 3}))
    assert load_config("tiny_test.yaml").max_steps == 3
    repo_configs = Path(__file__).resolve().parents[1] / "configs"
    assert repo_configs.resolve() == CONFIGS  # the repository's configs/ is the package's


# --------------------------------------------------------------------------------------------
# The real asset (trained by `make setup`)


def test_the_shakespeare_gpt_asset_writes_and_scores_what_it_recorded(tmp_path):
    model, tokenizer = assets.load("shakespeare-gpt")
    info = trained_asset.trained_info("shakespeare-gpt")
    recipe = load_config("shakespeare_gpt")
    assert info["recipe"] == "shakespeare_gpt" and info["steps"] == recipe.max_steps
    assert info["val_loss"] < 2.1, "the recipe's model should be well past word salad"
    # Re-measure the validation loss on fresh windows of the same held-out split.
    _, val_ids, data_tokenizer = prepare_data(load_config(
        "shakespeare_gpt", [f"out_dir={tmp_path}"]))
    assert data_tokenizer.chars == tokenizer.chars
    x, y = WindowSampler(val_ids, 64, recipe.block_size, seed=123).sample()
    with torch.no_grad():
        loss = lm_loss(model(x), y).item()
    assert abs(loss - info["val_loss"]) < 0.1, (loss, info["val_loss"])
    prompt = torch.tensor([tokenizer.encode("ROMEO:\n")])
    text = tokenizer.decode(decoding.generate(model, prompt, 80, decoding.SamplingConfig(),
                                              generator=torch.Generator().manual_seed(0))[0])
    assert text.startswith("ROMEO:\n") and len(text) == len("ROMEO:\n") + 80
    info_file = assets.path("shakespeare-gpt") / trained_asset.TRAINED_INFO
    assert json.loads(info_file.read_text()) == info


def test_the_command_line_adopts_a_checkpoint(toy_trained, tmp_path, capsys):
    from llmlab.cli import main

    _, recipe = toy_trained
    mine = Trainer(load_config(recipe, [f"out_dir={tmp_path / 'mine'}", "max_steps=4"]))
    mine.fit()
    assert main(["assets", "fetch", "toy-gpt", "--checkpoint",
                 str(tmp_path / "mine" / "checkpoint.pt")]) == 0
    assert "now holds the model of" in capsys.readouterr().out
    assets.load("toy-gpt")
    assert trained_asset.trained_info("toy-gpt")["steps"] == 4
    with pytest.raises(SystemExit, match="replaces one trained asset: name it"):
        main(["assets", "fetch", "--all", "--checkpoint", "x.pt"])
