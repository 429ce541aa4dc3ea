"""Asset packs: the cache's verified archives on a USB stick or a shared folder, for a room
with no (or slow) network.

Archives travel rather than materialised folders because the registry's SHA-256 vouches for
them, and installing re-derives everything else as a first fetch would.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmlab import __version__
from llmlab.assets.store import (
    REGISTRY,
    Asset,
    AssetCorruptedError,
    AssetError,
    TrainedHere,
    UnknownAssetError,
    archive_path,
    fetch,
    get,
    home,
    names,
    sha256_file,
    verify,
)

PACK_INDEX = "llmlab-assets.json"


def pack(dest: Path, asset_names: Sequence[str] | None = None) -> Path:
    """Copy the downloaded archive of each asset (default: all) into ``dest/<name>/``.

    Writes ``dest/llmlab-assets.json`` listing name, archive and SHA-256, and returns its path.
    Every archive is checked against the registry's SHA-256 after copying, so a pack never
    carries a file that ``install`` would refuse.
    """
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

