"""A training run, described by one YAML file and loaded into a validated dataclass.

>>> config = TrainConfig.from_dict({"max_steps": 10, "warmup_steps": 2, "model": {"n_layer": 2}})
>>> config.max_steps, config.model["n_layer"]
(10, 2)
>>> TrainConfig.from_dict({"max_step": 10})
Traceback (most recent call last):
...
ValueError: unknown config key 'max_step' (did you mean 'max_steps'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlab.model import ModelConfig

__all__ = ["TrainConfig", "load_config", "apply_overrides", "config_path", "config_names"]

TOKENIZERS = ("char", "gpt2")
MODEL_STYLES = ("gpt2", "llama")
DISTRIBUTED = ("auto", "none", "ddp", "fsdp")


@dataclass
class TrainConfig:
    """Every setting of a run. ``model`` holds ``ModelConfig`` fields plus ``style``
    (``gpt2`` or ``llama``); ``vocab_size`` comes from the tokenizer and
    ``context_length`` defaults to ``block_size``."""

    # data
    dataset: str = "shakespeare"  # an llmlab asset name or a path to a UTF-8 text file
    tokenizer: str = "char"  # "char" or "gpt2" (GPT-2's byte-level BPE)
    max_chars: int | None = None  # use only the first characters of the corpus (tests)
    val_fraction: float = 0.1
    # model
    model: dict[str, Any] = field(default_factory=lambda: {"style": "gpt2"})
    # optimisation
    batch_size: int = 32  # sequences per micro-batch, over all ranks together
    block_size: int = 128  # tokens per sequence
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float | None = 1.0  # None: no clipping
    precision: str = "fp32"  # "fp32", "bf16" (autocast, CPU or GPU) or "fp16" (CUDA only)
    activation_checkpointing: bool = False
    # evaluation, logging, checkpoints
    eval_interval: int = 200  # steps between evaluations (and at the end)
    eval_batches: int = 20
    log_interval: int = 10
    checkpoint_interval: int | None = None  # steps between checkpoints (None: at the end)
    out_dir: str = "runs/shakespeare_char"
    tensorboard: bool = True
    progress: bool = True  # the tqdm bar
    sample_chars: int = 0  # > 0: decode a sample of this many tokens at each evaluation
    # where and how it runs
    seed: int = 1337
    device: str = "auto"  # "auto" = llmlab.device(), or "cpu", "cuda", ...
    distributed: str = "auto"  # "auto" (DDP under torchrun), "none", "ddp" or "fsdp"
    resume: bool = False  # continue from out_dir/checkpoint.pt if it exists

    def __post_init__(self) -> None:
        self._check_choices()
        for name in ("batch_size", "block_size", "grad_accum_steps", "max_steps",
                     "eval_interval", "eval_batches", "log_interval"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        for name in ("warmup_steps", "sample_chars", "seed"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be an int >= 0; got {value!r}")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < max_steps "
                             f"({self.max_steps})")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr; got min_lr={self.min_lr}, lr={self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or null; got {self.grad_clip}")
        if self.checkpoint_interval is not None and self.checkpoint_interval < 1:
            raise ValueError(f"checkpoint_interval must be >= 1 or null; "
                             f"got {self.checkpoint_interval}")
        if self.max_chars is not None and self.max_chars < 2:
            raise ValueError(f"max_chars must be >= 2 or null; got {self.max_chars}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1); got {self.val_fraction}")
        self.model_config(vocab_size=256)  # fail now, not after the data is prepared

    def _check_choices(self) -> None:
        for name, allowed in (("tokenizer", TOKENIZERS), ("distributed", DISTRIBUTED),
                              ("precision", ("fp32", "bf16", "fp16"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; "
                                 f"got {getattr(self, name)!r}")
        if not isinstance(self.model, dict):
            raise ValueError(f"model must be a mapping of ModelConfig fields; got {self.model!r}")
        if self.model.get("style", "gpt2") not in MODEL_STYLES:
            raise ValueError(f"model.style must be one of {MODEL_STYLES}; "
                             f"got {self.model['style']!r}")

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The ``ModelConfig`` of this run for a tokenizer of ``vocab_size`` ids."""
        fields = dict(self.model)
        style = fields.pop("style", "gpt2")
        _reject_unknown(fields, {f.name for f in dataclasses.fields(ModelConfig)}, "model.")
        if "vocab_size" in fields and fields["vocab_size"] < vocab_size:
            raise ValueError(f"model.vocab_size={fields['vocab_size']} is smaller than the "
                             f"tokenizer's {vocab_size} ids")
        fields.setdefault("vocab_size", vocab_size)
        fields.setdefault("context_length", self.block_size)
        if fields["context_length"] < self.block_size:
            raise ValueError(f"model.context_length={fields['context_length']} is shorter than "
                             f"block_size={self.block_size}")
        build = ModelConfig.llama_style if style == "llama" else ModelConfig.gpt2_style
        return build(**fields)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a mapping; unknown keys fail with the closest known one."""
        if not isinstance(values, dict):
            raise ValueError(f"a training config must be a mapping; got {type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        _reject_unknown(values, set(fields))
        values = dict(values)
        for name, value in values.items():
            # PyYAML reads 1e-3 (no dot) as a string; a float field takes it as a number.
            if "float" in str(fields[name].type) and isinstance(value, str):
                try:
                    values[name] = float(value)
                except ValueError:
                    raise ValueError(f"{name} must be a number; got {value!r}") from None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _reject_unknown(values: dict[str, Any], known: set[str], prefix: str = "") -> None:
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ValueError(f"unknown config key '{prefix}{key}'{hint}")


def _parse_value(text: str) -> Any:
    import yaml

    value = yaml.safe_load(text)  # "3" -> 3, "0.5" -> 0.5, "true" -> True, "null" -> None
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value):
        return float(value)  # YAML 1.1 wants a dot in 1.0e-3; accept 1e-3 too
    return value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (``model.d_model=64`` reaches into ``model``); values
    are read as YAML, so numbers, booleans and ``null`` work.

    >>> apply_overrides({"lr": 0.1, "model": {"n_layer": 4}}, ["lr=3e-4", "model.n_layer=2"])
    {'lr': 0.0003, 'model': {'n_layer': 2}}
    """
    out = {**values, "model": dict(values.get("model", {}))}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"overrides look like key=value (e.g. max_steps=100); got {item!r}")
        value = _parse_value(raw)
        if key.startswith("model."):
            out["model"][key.removeprefix("model.")] = value
        else:
            out[key] = value
    return out


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_names() -> list[str]:
    """The run configs that ship with llmlab (the repository's ``configs/`` folder).

    >>> {"shakespeare_char", "tiny_test"} <= set(config_names())
    True
    """
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def config_path(path_or_name: str | os.PathLike) -> Path:
    """A config file: ``path_or_name`` itself if it exists, else the packaged config of that
    name (``"shakespeare_char"`` or ``"shakespeare_char.yaml"``), so that the course's
    configs are found from any folder and in a pip-installed llmlab.

    >>> config_path("tiny_test").name
    'tiny_test.yaml'
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    packaged = CONFIGS / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if path.parent == Path(".") and packaged.is_file():
        return packaged
    close = difflib.get_close_matches(path.stem, config_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise FileNotFoundError(f"no config file at {path}, and no packaged config of that name"
                            f"{hint}; packaged configs: {', '.join(config_names())}")


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config file (a path, or the name of a packaged config such as
    ``"shakespeare_char"``), apply ``overrides`` (``key=value``), validate."""
    import yaml

    path = config_path(path)
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of settings; got {type(values).__name__}")
    return TrainConfig.from_dict(apply_overrides(values, overrides or []))
