"""Lab generation: solution regions become stubs; labs/ must match solutions/."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from llmlab import cli
from llmlab.course import checks, labs

ROOT = Path(__file__).resolve().parents[1]

SOLVED = '''import torch

def double(x):
    """Twice x."""
    # BEGIN SOLUTION
    y = x + x
    return y
    # END SOLUTION

class Scaler:
    def scale(self, x):
        # BEGIN SOLUTION
        return 3 * x
        # END SOLUTION'''

STUB = f'raise NotImplementedError("{checks.STUB_MESSAGE}")'


def test_stub_source_replaces_each_region_at_its_indentation():
    assert labs.stub_source(SOLVED) == f'''import torch

def double(x):
    """Twice x."""
    {STUB}

class Scaler:
    def scale(self, x):
        {STUB}'''


def test_generated_stub_runs_and_raises_only_when_called():
    namespace: dict = {}
    exec(labs.stub_source(SOLVED), namespace)  # defining the functions must not raise
    with pytest.raises(NotImplementedError, match="not attempted yet"):
        namespace["double"](1)


@pytest.mark.parametrize("source, message", [
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", "must be inside a function"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION", "END SOLUTION without"),
    ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n", "inside another region"),
])
def test_malformed_regions_are_rejected_with_the_line(source, message):
    with pytest.raises(labs.LabFormatError, match=message):
        labs.stub_source(source, where="x.ipynb, cell 3")


def _notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def test_make_lab_strips_outputs_and_solution_only_cells():
    solved = nbformat.v4.new_code_cell(SOLVED, execution_count=3)
    solved.outputs = [nbformat.v4.new_output("stream", text="hi")]
    note = nbformat.v4.new_markdown_cell("Why this works", metadata={"tags": ["solution-only"]})
    solution = _notebook(nbformat.v4.new_markdown_cell("# Lab"), solved, note)
    lab = labs.make_lab(solution, "ch99.ipynb")
    assert [c.cell_type for c in lab.cells] == ["markdown", "code"]
    assert lab.cells[1].outputs == [] and lab.cells[1].execution_count is None
    assert "BEGIN SOLUTION" not in lab.cells[1].source and STUB in lab.cells[1].source
    assert lab.metadata["llmlab"]["generated_from"] == "solutions/ch99.ipynb"
    assert solution.cells[1].outputs, "make_lab must not change its input"


def test_a_notebook_without_regions_is_not_a_solution():
    with pytest.raises(labs.LabFormatError, match="not a solution notebook"):
        labs.make_lab(_notebook(nbformat.v4.new_code_cell("x = 1")), "plain.ipynb")


def test_build_and_stale_detection(tmp_path):
    solutions, lab_dir = tmp_path / "solutions", tmp_path / "labs"
    solutions.mkdir()
    nbformat.write(_notebook(nbformat.v4.new_code_cell(SOLVED)), solutions / "ch99.ipynb")
    assert labs.stale_labs(solutions, lab_dir) == [f"{lab_dir / 'ch99.ipynb'} is missing"]
    labs.build_labs(solutions, lab_dir)
    assert labs.stale_labs(solutions, lab_dir) == []
    assert cli.main(["labs", "check", "--solutions", str(solutions), "--labs", str(lab_dir)]) == 0

    edited = lab_dir / "ch99.ipynb"
    edited.write_text(edited.read_text().replace("Twice x", "Thrice x"))
    (lab_dir / "orphan.ipynb").write_text(edited.read_text())
    problems = labs.stale_labs(solutions, lab_dir)
    assert any("differs from what" in p for p in problems)
    assert any("orphan.ipynb has no solution" in p for p in problems)
    assert cli.main(["labs", "check", "--solutions", str(solutions), "--labs", str(lab_dir)]) == 1

    labs.build_labs(solutions, lab_dir)  # regenerates and removes the orphan
    assert labs.stale_labs(solutions, lab_dir) == []


def test_missing_solutions_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no solutions folder"):
        labs.build_labs(tmp_path / "nowhere", tmp_path / "labs")


def test_committed_labs_are_generated_from_the_committed_solutions():
    assert labs.stale_labs(ROOT / "solutions", ROOT / "labs") == [], (
        "labs/ is out of date: run `llmlab labs build` (or `make labs`)")
    assert sorted(p.name for p in (ROOT / "labs").glob("*.ipynb")), "no labs at all"
