"""Every chapter's exercise checks, one module (or subpackage) per chapter: ``ch01``, ``ch02``...

Importing a chapter registers its exercises with :mod:`llmlab.course.checks`. Importing
this package imports no chapter: ``check("ch01.rms_norm", fn)`` loads ``ch01`` alone, so a
chapter-01 lab never pays for the training stack that chapter 04's checks need. Tooling that
needs every exercise (the tests, an instructor's overview) calls :func:`load_all`.

>>> chapters()[:2]
['ch01', 'ch02']
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

CHAPTER_NAME = re.compile(r"ch\d\d")


def chapters() -> list[str]:
    """The chapter modules of this package, found on disk without importing any of them."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__)
                  if CHAPTER_NAME.fullmatch(info.name))


def load(chapter: str) -> ModuleType:
    """Import one chapter's exercises (registering them); ``chapter`` is e.g. ``"ch01"``."""
    known = chapters()
    if chapter not in known:
        raise KeyError(f"no exercises for chapter {chapter!r}; known chapters: "
                       f"{', '.join(known)}")
    return importlib.import_module(f"{__name__}.{chapter}")


def load_all() -> list[ModuleType]:
    """Import every chapter's exercises, in chapter order (for tooling and the tests)."""
    return [load(chapter) for chapter in chapters()]


__all__ = ["chapters", "load", "load_all"]
