"""LLM Lab's helper package: the code every chapter, lab and test imports.

One module per course concept:

- ``llmlab.assets``: real models and data, offline, from the package registries
- ``llmlab.model``: a decoder-only transformer written from scratch
- ``llmlab.tokenization``: byte-level BPE from scratch
- ``llmlab.course.checks``: the exercise checks used by the labs
- ``llmlab.course.labs``: generates labs/ from solutions/
"""

from llmlab.runtime import device, seed_everything, setup, versions

__version__ = "0.1.0"

__all__ = ["device", "seed_everything", "setup", "versions", "__version__"]
