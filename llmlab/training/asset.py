"""Models trained here that later chapters load as assets: ``shakespeare-gpt`` is trained on
the learner's machine by chapter 4's :class:`~llmlab.training.trainer.Trainer` from a packaged
recipe (``llmlab/configs/shakespeare_gpt.yaml``), exported as a safetensors folder and then
loaded like any downloaded asset.

The asset catalogue names :func:`train_asset` and :func:`load_trained_gpt` (it never imports
this module); ``llmlab assets fetch shakespeare-gpt --checkpoint RUN`` adopts a learner's own
run with :func:`install_trained`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmlab import assets
from llmlab.assets import (
    Asset,
    AssetCorruptedError,
    AssetError,
    Pretrained,
    TrainedHere,
    materialise,
)
from llmlab.model import GPT, ModelConfig
from llmlab.runtime import cache_home
from llmlab.tokenization import from_state
from llmlab.training.config import load_config
from llmlab.training.trainer import Trainer

TRAINED_WEIGHTS = "model.safetensors"
TRAINED_INFO = "trained.json"


def train_asset(asset: Asset, target: Path) -> None:
    """Run the asset's config (resuming an interrupted build) and export the result."""
    # A changed recipe must not resume another recipe's run: the folder names its hash.
    settings = json.dumps(load_config(asset.source.config).to_dict(), sort_keys=True)
    recipe_hash = hashlib.sha256(settings.encode()).hexdigest()
    run_dir = cache_home() / "runs" / f"{asset.name}-{recipe_hash[:12]}"
    config = load_config(asset.source.config, [f"out_dir={run_dir}", "resume=true",
                                               "tensorboard=false"])
    print(f"llmlab: training asset {asset.name!r} from config {asset.source.config!r} "
          f"({config.max_steps} steps on {asset.source.threads} CPU thread(s); a few minutes, "
          "once; an interrupted build resumes)", file=sys.stderr)
    threads = torch.get_num_threads()
    torch.set_num_threads(asset.source.threads)
    try:
        trainer = Trainer(config)
        trainer.fit()
    finally:
        torch.set_num_threads(threads)
    export_trained(run_dir / "checkpoint.pt", target, recipe=asset.source.config)


def export_trained(checkpoint: str | os.PathLike, folder: str | os.PathLike,
                   recipe: str | None = None) -> Path:
    """Write a training checkpoint (``llmlab train`` / ``Trainer``) as a loadable model
    folder: fp32 ``model.safetensors`` plus ``trained.json`` (model config, tokenizer, the
    run's config and its evaluations). Returns the folder."""
    checkpoint, folder = Path(checkpoint), Path(folder)
    if not checkpoint.is_file():
        raise AssetError(f"no training checkpoint at {checkpoint}; train one first, e.g. "
                         "`llmlab train --config shakespeare_gpt`")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model_config" not in state or not state.get("model"):
        raise AssetError(f"{checkpoint} is not a checkpoint written by llmlab's Trainer")
    if not (state.get("tokenizer") or {}).get("kind"):
        raise AssetError(f"{checkpoint} has no tokenizer saved with it: a model asset needs one")
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors stores each tensor once: a tied output layer is re-tied when loading.
    weights = {k: v.detach().float().contiguous() for k, v in state["model"].items()
               if not (state["model_config"].get("tie_embeddings") and k == "lm_head.weight")}
    save_file(weights, str(folder / TRAINED_WEIGHTS))
    evaluations = state.get("evaluations") or []
    info = {"model_config": state["model_config"], "tokenizer": state["tokenizer"],
            "recipe": recipe, "train_config": state.get("config"), "steps": state["step"],
            "evaluations": evaluations,
            "val_loss": evaluations[-1]["val_loss"] if evaluations else None,
            "torch": torch.__version__}
    (folder / TRAINED_INFO).write_text(json.dumps(info, indent=1))
    return folder


def install_trained(checkpoint: str | os.PathLike, name: str = "shakespeare-gpt") -> Path:
    """Make your own run the asset ``name`` (for example after
    ``llmlab train --config shakespeare_gpt --set max_steps=5000``): later chapters then
    load your model. ``llmlab assets fetch NAME --force`` restores the recipe's."""
    asset = assets.get(name)
    if not isinstance(asset.source, TrainedHere):
        raise AssetError(f"asset {asset.name!r} comes from {asset.source.label}; only a trained "
                         f"asset ({', '.join(n for n in assets.names() if _is_trained(n))}) can be "
                         "replaced by a checkpoint")

    def export_and_load(staging: Path) -> None:
        export_trained(checkpoint, staging)
        asset.loader(staging)  # refuse a checkpoint that would not load

    return materialise(asset, export_and_load)


def _is_trained(name: str) -> bool:
    return isinstance(assets.get(name).source, TrainedHere)


def load_trained_gpt(folder: Path) -> Pretrained:
    """``(GPT in eval mode, tokenizer)`` from a folder ``export_trained`` wrote."""
    info = json.loads((folder / TRAINED_INFO).read_text())
    model = GPT(ModelConfig(**info["model_config"]))
    missing, unexpected = model.load_state_dict(load_file(folder / TRAINED_WEIGHTS), strict=False)
    tied = {"lm_head.weight"} if model.config.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise AssetCorruptedError(f"{folder / TRAINED_WEIGHTS} does not fit its config: missing "
                                  f"{sorted(set(missing) - tied)}, unexpected {unexpected}")
    return Pretrained(model.eval(), from_state(info["tokenizer"]))


def trained_info(name: str = "shakespeare-gpt") -> dict[str, Any]:
    """How a trained asset was made: its recipe, steps, evaluations, final validation loss."""
    return json.loads((assets.path(name) / TRAINED_INFO).read_text())
