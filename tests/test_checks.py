"""llmlab.course.checks: verdicts, messages, the fallback to the reference, and tooling hooks."""

from __future__ import annotations

import json

import pytest
import torch

from llmlab.course import checks
from llmlab.course.checks import CheckFailed, check, expect_close, expect_shape, run_check


def reference_double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


@pytest.fixture
def toy_exercise():
    @checks.exercise("test.double", title="double a tensor", reference=reference_double,
                     wrong_answers=[lambda x: x + 2])
    def check_double(answer):
        checks.require_callable(answer, "double")
        x = torch.arange(6.0).reshape(2, 3)
        expect_close(answer(x), reference_double(x), "double(x) for x of shape (2, 3)",
                     hint="Multiply every element by 2.")

    yield "test.double"
    checks.EXERCISES.pop("test.double")


def stub(x):
    raise NotImplementedError(checks.STUB_MESSAGE)


def test_solution_passes_and_is_returned(toy_exercise, capsys):
    def mine(x):
        return x * 2

    assert check(toy_exercise, mine) is mine
    assert "[PASSED] test.double" in capsys.readouterr().out


def test_stub_is_not_attempted_and_reference_is_returned(toy_exercise, capsys):
    assert check(toy_exercise, stub) is reference_double
    out = capsys.readouterr().out
    assert "[NOT ATTEMPTED YET] test.double" in out
    assert "reference implementation" in out


def test_wrong_answer_fails_with_the_worst_element(toy_exercise):
    result = run_check(toy_exercise, lambda x: x + 2)
    assert result.status == "failed"
    # x = [[0,1,2],[3,4,5]]: x + 2 vs 2x differs most at x=0 and x=5 (by 2 and 3)
    assert "max abs difference 3 at index (1, 2) (got 7, expected 10" in result.message
    assert "Multiply every element by 2." in result.message


def test_wrong_shape_is_reported_with_both_shapes(toy_exercise):
    result = run_check(toy_exercise, lambda x: (2 * x).flatten())
    assert result.status == "failed"
    assert "has shape (6,), expected (2, 3)" in result.message


def test_crashing_answer_names_the_exception_and_line(toy_exercise):
    def crashes(x):
        return x @ torch.ones(5)

    result = run_check(toy_exercise, crashes)
    assert result.status == "failed"
    assert "your code raised RuntimeError" in result.message
    assert "x @ torch.ones(5)" in result.message


def test_non_function_answer(toy_exercise):
    result = run_check(toy_exercise, 42)
    assert result.status == "failed"
    assert "expected a function double(...), got int" in result.message


def test_expectation_env_turns_a_mismatch_into_an_error(toy_exercise, monkeypatch):
    monkeypatch.setenv("LLMLAB_EXPECT", "passed")
    with pytest.raises(AssertionError, match="LLMLAB_EXPECT=passed but the check said"):
        check(toy_exercise, stub)
    monkeypatch.setenv("LLMLAB_EXPECT", "not_attempted")
    check(toy_exercise, stub)
    with pytest.raises(AssertionError, match=r"\[PASSED\]"):
        check(toy_exercise, reference_double)


def test_progress_file_records_each_outcome(toy_exercise, monkeypatch, tmp_path):
    progress = tmp_path / "progress.jsonl"
    monkeypatch.setenv("LLMLAB_PROGRESS_FILE", str(progress))
    check(toy_exercise, stub)
    check(toy_exercise, reference_double)
    rows = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["not_attempted", "passed"]
    assert rows[0]["exercise"] == "test.double"


def test_unknown_and_duplicate_exercises(toy_exercise):
    with pytest.raises(KeyError, match="no exercise named 'test.triple'"):
        run_check("test.triple", reference_double)
    with pytest.raises(ValueError, match="registered twice"):
        checks.exercise("test.double", title="again", reference=None)(lambda a: None)


def test_expect_helpers_reject_non_tensors_and_nan():
    with pytest.raises(CheckFailed, match="should be a torch.Tensor, got list"):
        expect_shape([1, 2], (2,), "y")
    with pytest.raises(CheckFailed, match="contains NaN"):
        expect_close(torch.tensor([float("nan")]), torch.tensor([1.0]), "y")
    with pytest.raises(CheckFailed, match="floating-point"):
        expect_close(torch.tensor([1]), torch.tensor([1.0]), "y")
    expect_close(torch.tensor([1.0 + 1e-7]), torch.tensor([1.0]), "y")  # within tolerance
