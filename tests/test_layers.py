"""The import contract: llmlab's layers point one way, and its modules import without cycles.

The contract itself is ``[tool.importlinter]`` in pyproject.toml (CONTRIBUTING.md draws it).
These tests run it on the real package, prove that it catches an upward import (imports
inside functions count), and check what the layering is for: importing a low layer, or
checking a chapter-01 exercise, does not load the heavy layers above it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The command-line entry point of import-linter, run with this interpreter (no PATH lookup).
LINT_IMPORTS = "from importlinter.cli import lint_imports_command as main; main()"


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    """Run the contract of ``project``'s pyproject.toml on ``project``'s own llmlab.

    import-linter puts its working directory first on sys.path, ahead of the editable
    install's finder, so a copy in a temporary folder is analysed rather than the real tree.
    """
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=project, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(project)},
    )


def test_the_import_contract_holds():
    result = lint_imports(ROOT)
    assert result.returncode == 0, (
        f"the import contract is broken (fix the import, do not ignore it):\n"
        f"{result.stdout}{result.stderr}")
    assert " 0 broken" in result.stdout, result.stdout


def test_the_contract_fails_on_an_upward_import_inside_a_function(tmp_path):
    shutil.copytree(ROOT / "llmlab", tmp_path / "llmlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    store = tmp_path / "llmlab" / "assets" / "store.py"
    source = store.read_text(encoding="utf-8")
    # A lazy import is still a dependency: the asset store must never reach concept code.
    store.write_text(source.rstrip("\n") + "\n\n\ndef _upward() -> None:\n"
                     "    import llmlab.training  # noqa: F401\n", encoding="utf-8")
    line = len(store.read_text(encoding="utf-8").splitlines())

    result = lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout
    assert "llmlab.assets is not allowed to import llmlab.training" in result.stdout, (
        result.stdout + result.stderr)
    assert f"llmlab.assets.store -> llmlab.training (l.{line})" in result.stdout, result.stdout


def test_no_module_of_llmlab_is_in_an_import_cycle():
    """Stricter than the contract's ``acyclic_siblings``, which compares siblings only: a
    package's ``__init__`` and one of its own modules must not import each other either."""
    graph = grimp.build_graph("llmlab", cache_dir=None)
    cycles = sorted(
        f"{importer} -> {imported} -> ... -> {importer}"
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    )
    assert cycles == [], "import cycles between llmlab's modules:\n" + "\n".join(cycles)


def modules_loaded_by(code: str) -> set[str]:
    """The llmlab modules in sys.modules after running ``code`` in a fresh interpreter."""
    script = (f"{code}\nimport json, sys\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('llmlab'))))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "LLMLAB_EXPECT": ""})
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_the_asset_store_loads_no_concept_module():
    loaded = modules_loaded_by("import llmlab.assets")
    for concept in ("llmlab.tokenization", "llmlab.attention", "llmlab.model",
                    "llmlab.decoding", "llmlab.training"):
        assert concept not in loaded, f"import llmlab.assets loaded {concept}"


@pytest.mark.parametrize("exercise_id", ["ch01.rms_norm"])
def test_a_chapter_01_check_loads_chapter_01_only(exercise_id):
    loaded = modules_loaded_by(
        "from llmlab.course.checks import check, get_exercise\n"
        f"reference = get_exercise({exercise_id!r}).reference\n"
        f"assert check({exercise_id!r}, reference) is reference\n")
    assert "llmlab.course.exercises.ch01" in loaded
    assert "llmlab.training" not in loaded
    later = sorted(m for m in loaded if m.startswith("llmlab.course.exercises.ch")
                   and not m.startswith("llmlab.course.exercises.ch01"))
    assert later == [], f"checking {exercise_id} loaded other chapters' exercises: {later}"


def test_an_unknown_chapter_or_exercise_names_the_known_ones():
    from llmlab.course import checks

    with pytest.raises(KeyError, match=r"there is no chapter 'ch77'; known chapters: ch01, "):
        checks.get_exercise("ch77.rms_norm")
    with pytest.raises(KeyError, match=r"chapter 'ch01' has: .*ch01\.rms_norm"):
        checks.get_exercise("ch01.rms_nrom")
