"""JavaScript libraries from the npm registry, installed once into the course cache.

Two parts of LLM Lab need third-party JavaScript and must work without network: the site
build (:mod:`llmlab.site.build` serves MathJax, require.js and the ipywidgets HTML manager from
the site itself) and bertviz views (:mod:`llmlab.views.interactive` inlines d3 and jQuery into
the view). No JavaScript library is committed to the repository: each set of pinned
packages is ``npm install``-ed once, by the ordinary client, into
``$LLMLAB_HOME/npm/<name>-<digest of the pins>/`` and reused from then on, offline.

>>> folder = install_dir("bertviz", BERTVIZ_PACKAGES)
>>> folder.parent.name, folder.name.startswith("bertviz-")
('npm', True)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from llmlab.runtime import cache_home

#: What the site pages load (html-manager 1.0.6 is the one that matches ipywidgets 8.1).
SITE_PACKAGES = {"mathjax": "3.2.2", "requirejs": "2.3.6", "@jupyter-widgets/html-manager": "1.0.6"}
#: What bertviz 1.4.1's views import through require.js (its own code pins d3 5.7.0).
BERTVIZ_PACKAGES = {"d3": "5.7.0", "jquery": "2.2.4"}
STAMP = "llmlab-npm.json"


class NpmError(RuntimeError):
    """npm is missing, or could not install the packages (and they are not cached)."""


def install_dir(name: str, packages: Mapping[str, str]) -> Path:
    """Where ``packages`` are (or will be) installed: one folder per exact set of pins, so
    changing a version installs afresh instead of mixing versions."""
    digest = hashlib.sha256(json.dumps(dict(packages), sort_keys=True).encode()).hexdigest()
    return cache_home() / "npm" / f"{name}-{digest[:12]}"


def node_modules(name: str, packages: Mapping[str, str]) -> Path:
    """The ``node_modules`` folder holding ``packages`` (``{"d3": "5.7.0"}``), installing
    them with npm the first time. Raises :class:`NpmError` with what to do when npm is
    missing or fails."""
    if not packages:
        raise ValueError("node_modules needs at least one package, got none")
    folder = install_dir(name, packages)
    if _is_complete(folder, packages):
        return folder / "node_modules"
    specs = [f"{package}@{version}" for package, version in packages.items()]
    npm = shutil.which("npm")
    if npm is None:
        raise NpmError(
            f"{' '.join(specs)} are not in the course cache ({folder}) and npm is not on "
            "PATH to install them. Install Node.js (it brings npm) and try again, or copy "
            f"that folder from a machine that has it.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Install next to the target and rename at the end: a build and a notebook (or two
    # test runs) may ask at the same time, and neither may see a half-installed folder.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        result = subprocess.run(
            [npm, "install", "--no-save", "--no-audit", "--no-fund", "--no-package-lock",
             "--prefix", str(staging), *specs],
            capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise NpmError(f"`npm install {' '.join(specs)}` failed (exit {result.returncode})"
                           f":\n{result.stderr[-2000:]}")
        (staging / STAMP).write_text(json.dumps(dict(packages), sort_keys=True))
        if not _is_complete(staging, packages):
            raise NpmError(f"`npm install {' '.join(specs)}` did not install every package "
                           f"into {staging}")
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: use its copy if it is complete
            if not _is_complete(folder, packages):
                shutil.rmtree(folder, ignore_errors=True)
                staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / "node_modules"


def _is_complete(folder: Path, packages: Mapping[str, str]) -> bool:
    stamp = folder / STAMP
    if not stamp.is_file() or json.loads(stamp.read_text()) != dict(packages):
        return False
    for package, version in packages.items():
        manifest = folder / "node_modules" / package / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text()).get("version") != version:
            return False
    return True


def read_file(name: str, packages: Mapping[str, str], relative: str, sha256: str) -> str:
    """The text of ``node_modules/<relative>`` from ``packages``, checked against the
    SHA-256 recorded for it (the code ends up inside course pages, so a changed file is
    refused rather than shipped)."""
    path = node_modules(name, packages) / relative
    if not path.is_file():
        raise NpmError(f"{relative} is missing from {path.parent}: the npm package layout "
                       "is not what llmlab expects")
    data = path.read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise NpmError(f"{path} has SHA-256 {found}, expected {sha256}: delete "
                       f"{install_dir(name, packages)} to install it again")
    return data.decode("utf-8")
