"""LLM Lab's helper package: the code every chapter, lab and test imports.

It is layered, lowest first; a module imports only from its own layer or below (imports
inside functions count), and ``tests/test_layers.py`` enforces it (CONTRIBUTING.md):

- ``llmlab.runtime``: device, seeds, versions, the cache home; imports nothing of llmlab;
- ``llmlab.assets``: real models and data, offline, from the package registries; names the
  concept modules' loaders by string (``Ref("module:function")``) and never imports them;
- the concept modules, each using only the ones before it: ``llmlab.tokenization``,
  ``llmlab.attention``, ``llmlab.model``, ``llmlab.decoding``, ``llmlab.training``
  (later chapters add their own, each above the last);
- three independent siblings on top: ``llmlab.course`` (exercise checks, each chapter's
  exercises, lab generation, the workshop tools), ``llmlab.views`` (interactive views that
  also work on the static site) and ``llmlab.site`` (the site build);
- ``llmlab.cli``: the ``llmlab`` command.

Importing ``llmlab`` itself loads only the runtime: ``llmlab.device()``,
``llmlab.seed_everything()``, ``llmlab.setup()`` and ``llmlab.versions()``.
"""

from llmlab.runtime import device, seed_everything, setup, versions

__version__ = "0.1.0"

__all__ = ["device", "seed_everything", "setup", "versions", "__version__"]
