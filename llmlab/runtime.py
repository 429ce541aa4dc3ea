"""Where code runs and how it is made repeatable: device choice, seeds, versions, and the
cache directory every other part of llmlab writes to.

The lowest layer of the package: it imports nothing of llmlab."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import random
from pathlib import Path

import numpy as np
import torch

#: Packages whose versions a notebook prints in its first cell.
REPORTED_PACKAGES = ("llmlab", "torch", "transformers", "tokenizers", "numpy")

# Whenever bitsandbytes is imported (by transformers' Trainer, by quantization), its CPU
# backend warns that it could not download an optional faster kernel from a model hub:
# always so offline, and harmless. On stderr, the site build's -W would make it an error.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def cache_home() -> Path:
    """LLM Lab's cache directory: ``$LLMLAB_HOME`` or the user cache dir (``~/.cache/llmlab``
    on Linux). Assets, trained runs and npm packages live under it."""
    configured = os.environ.get("LLMLAB_HOME")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("llmlab"))


def device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the ``LLMLAB_DEVICE`` environment variable) forces one, e.g. ``"cpu"``
    to compare with a GPU run.

    >>> device("cpu")
    device(type='cpu')
    """
    choice = prefer or os.environ.get("LLMLAB_DEVICE")
    if choice:
        dev = torch.device(choice)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} was asked for, but CUDA is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) so a run repeats exactly.

    >>> seed_everything(0); a = torch.rand(1); seed_everything(0); bool(a == torch.rand(1))
    True
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def versions(packages: tuple[str, ...] = REPORTED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (``"not installed"`` where missing), plus Python."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def setup(seed: int = 0, packages: tuple[str, ...] = REPORTED_PACKAGES) -> torch.device:
    """A notebook's first call: seed everything, print versions and the device, return it."""
    seed_everything(seed)
    dev = device()
    shown = ", ".join(f"{name} {ver}" for name, ver in versions(packages).items())
    print(f"{shown} | device: {dev} | seed: {seed}")
    return dev
