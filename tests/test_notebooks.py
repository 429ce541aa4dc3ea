"""The notebook contract: how every course notebook starts, and that the book builds.

nbval (see conftest.py and pyproject's addopts) executes the notebooks themselves; these
tests check what execution cannot: committed state, the shared setup cell, the site build.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for folder in ("book", "labs", "solutions")
                   for p in (ROOT / folder).glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def setup_cell() -> str:
    """The first code cell of every notebook (the repository URL comes from _config.yml)."""
    url = CONFIG["repository"]["url"]
    comment = ("# Setup: in Colab, install the course package first; "
               "locally `make setup` already did.")
    return comment + f'''
import sys

if "google.colab" in sys.modules:
    !pip install -q "llmlab[course] @ git+{url}"

import llmlab

DEVICE = llmlab.setup(seed=0)'''


def test_every_chapter_has_a_page_a_solution_and_a_lab():
    names = {folder: {p.stem for p in (ROOT / folder).glob("*.ipynb")}
             for folder in ("labs", "solutions")}
    pages = {p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb")}
    assert pages, "no chapter pages"
    assert names["solutions"] == names["labs"] == pages


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_notebook_is_committed_clean_and_opens_with_its_title_then_the_setup_cell(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), (
        f"{path} has outputs: notebooks are committed without them")
    # The title and opening paragraph come first; the setup cell is the first code cell,
    # collapsed on the site (its versions line is one click away), and it still runs first.
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), (
        f"{path} must open with its title")
    assert nb.cells[1].cell_type == "code" and nb.cells[1].source == setup_cell()
    assert "hide-cell" in nb.cells[1].metadata.get("tags", [])


@pytest.mark.parametrize("path", [n for n in NOTEBOOKS if not n.startswith("labs/")])
def test_notebook_closes_with_a_summary(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    headings = [line for c in nb.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("#")]
    assert any(word in h.lower() for h in headings for word in ("summary", "takeaways"))


def shell_lines_as_calls(cell: str) -> str:
    """IPython's `!command` lines rewritten as `commands.append("command")`."""
    lines = []
    for line in cell.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("!"):
            line = f"{line[: len(line) - len(stripped)]}commands.append({stripped[1:]!r})"
        lines.append(line)
    return "\n".join(lines)


def test_setup_cell_does_nothing_locally_and_installs_in_colab(monkeypatch, capsys):
    program = shell_lines_as_calls(setup_cell())
    commands: list[str] = []
    exec(program, {"commands": commands})
    assert commands == []
    assert "torch" in capsys.readouterr().out  # the versions line
    monkeypatch.setitem(sys.modules, "google.colab", object())
    exec(program, {"commands": commands})
    assert commands == [f'pip install -q "llmlab[course] @ git+{CONFIG["repository"]["url"]}"']


def test_book_builds_with_warnings_as_errors(built_site):
    """Jupyter Book 1 builds the whole site, executing every page, with -W (see conftest)."""
    html_dir = built_site
    for page in ("book/intro.html", "book/01_architecture.html", "labs/01_architecture.html",
                 "book/instructors.html"):
        assert (html_dir / page).is_file(), f"{page} was not built"
    assert not (html_dir / "solutions").exists(), "the learner's site must not show solutions"
    page = (html_dir / "book" / "01_architecture.html").read_text()
    assert "Traceback" not in page
    lab = (html_dir / "labs" / "01_architecture.html").read_text()
    assert "colab.research.google.com/github/llm-lab/llm-lab/blob/main/labs/01_architecture.ipynb" \
        in lab, "the lab page has no Colab launch button"
    # Labs are shown as handed out (not executed): the exercise stubs, not their output.
    assert "NotImplementedError" in lab
    # Every script a page loads is served by the site itself: no CDN, so pages work offline.
    for html in html_dir.rglob("*.html"):
        remote = re.findall(r'<script[^>]*\bsrc="(https?://[^"]+)"', html.read_text())
        assert not remote, f"{html.relative_to(html_dir)} loads scripts from the network: {remote}"
    for script in ("mathjax/tex-mml-chtml.js", "require.js", "html-manager/embed-amd.js"):
        assert (html_dir / "_static" / "vendor" / script).is_file(), f"{script} not served"
    assert "_static/vendor/mathjax/tex-mml-chtml.js" in page
    guide = (html_dir / "book" / "instructors.html").read_text()
    assert "labs/01_architecture.ipynb" in guide, "the measured lab times are not included"


def _toc_files(path: Path) -> list[str]:
    toc = yaml.safe_load(path.read_text())
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


def test_tables_of_contents_list_every_notebook():
    pages = sorted(n.removesuffix(".ipynb") for n in NOTEBOOKS)
    prose = ["book/instructors", "book/intro"]
    learner = sorted(_toc_files(ROOT / "_toc.yml"))
    instructor = sorted(_toc_files(ROOT / "_toc_instructor.yml"))
    assert learner == sorted(prose + [p for p in pages if not p.startswith("solutions/")])
    assert instructor == sorted(prose + pages)
