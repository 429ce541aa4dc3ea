"""Fake asset sources for tests: a "registry" that is a local file, so no network is used."""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalWheel:
    """A source whose client is a Python one-liner copying a prepared wheel."""

    archive: str
    sha256: str

    @property
    def label(self) -> str:
        return f"local wheel {self.archive}"

    def command(self, dest: Path) -> list[str]:
        copy = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"
        return [sys.executable, "-c", copy, self.archive, str(dest)]


def make_wheel(path: Path, files: dict[str, bytes]) -> str:
    """Write a wheel (a zip) holding ``files`` at ``path``; return its SHA-256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()
