"""Every exercise check passes its reference, calls the stub "not attempted", and fails
every plausible wrong answer with a message; every check used in a notebook exists."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from llmlab.course import checks, labs

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = sorted(checks.all_exercises())  # loads every chapter's exercises


def stub(*args, **kwargs):
    raise NotImplementedError(checks.STUB_MESSAGE)


@pytest.mark.parametrize("exercise_id", EXERCISES)
def test_reference_passes(exercise_id):
    reference = checks.EXERCISES[exercise_id].reference
    result = checks.run_check(exercise_id, reference)
    assert result.status == "passed", result.message


@pytest.mark.parametrize("exercise_id", EXERCISES)
def test_stub_is_not_attempted(exercise_id):
    assert checks.run_check(exercise_id, stub).status == "not_attempted"


WRONG = [(eid, i) for eid in EXERCISES for i in range(len(checks.EXERCISES[eid].wrong_answers))]


@pytest.mark.parametrize("exercise_id, index", WRONG)
def test_wrong_answer_fails_with_a_specific_message(exercise_id, index):
    wrong = checks.EXERCISES[exercise_id].wrong_answers[index]
    result = checks.run_check(exercise_id, wrong)
    assert result.status == "failed", f"{wrong.__name__} was not caught"
    assert len(result.message) > 40, result.message


@pytest.mark.parametrize("exercise_id", EXERCISES)
def test_every_exercise_has_wrong_answers(exercise_id):
    assert checks.EXERCISES[exercise_id].wrong_answers, f"{exercise_id} is never shown to fail"


def _solution_checks() -> dict[str, list[str]]:
    found = {}
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        found[path.name] = labs.check_ids(nb) or []
    return found


def test_solutions_use_registered_checks_and_every_check_is_used():
    used = _solution_checks()
    assert used, "no solution notebooks"
    every = [eid for ids in used.values() for eid in ids]
    assert sorted(set(every) - set(checks.EXERCISES)) == []
    assert sorted(set(checks.EXERCISES) - set(every)) == []


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "solutions").glob("*.ipynb")))
def test_solution_has_4_to_8_exercises_each_followed_by_its_check(name):
    nb = nbformat.read(ROOT / "solutions" / name, as_version=4)
    regions = labs.count_regions(nb)
    checks_called = _solution_checks()[name]
    assert 4 <= len(checks_called) <= 8, f"{name} has {len(checks_called)} checks"
    assert regions >= len(checks_called)
    prefix = name.split("_")[0]
    assert all(eid.startswith(f"ch{prefix}.") for eid in checks_called)
