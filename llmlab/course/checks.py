"""Exercise checks: specific feedback for a learner's answer, and a safety net for the lab.

A lab's exercise cell defines a function; the check cell below it calls
``check(exercise_id, answer)``. The check runs the answer on test cases and prints one of:

- ``passed``: the answer is used from here on;
- ``not attempted yet``: the function still raises ``NotImplementedError`` (the lab's stub);
- ``failed``: what was wrong, on which input, and how far off.

Whatever happens, ``check`` returns something that works: the learner's function if it
passed, otherwise llmlab's reference implementation, so the rest of the lab still runs::

    rms_norm = check("ch01.rms_norm", rms_norm)

Exercises are declared in ``llmlab.course.exercises`` with :func:`exercise`; each names its
reference and a few plausible wrong answers, and the tests make sure every check passes the
reference, reports the stub as not attempted and fails every wrong answer. An id's prefix
names its chapter module (``ch01.rms_norm`` lives in ``llmlab.course.exercises.ch01``), and
a check loads that module alone; :func:`all_exercises` loads every chapter.

Two environment variables serve tooling: ``LLMLAB_EXPECT`` (``passed`` or
``not_attempted``) makes a check raise when the outcome differs, so running a solution or a
fresh lab under nbval fails loudly; ``LLMLAB_PROGRESS_FILE`` appends each outcome as a JSON
line, for an instructor's progress report.
"""

from __future__ import annotations

import importlib
import json
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, Literal

import torch

Status = Literal["passed", "failed", "not_attempted"]
STUB_MESSAGE = "exercise not attempted yet: replace this line with your code"


class CheckFailed(AssertionError):
    """Raised by a check with a message for the learner: which case, what was expected."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: its check, the reference answer and plausible wrong answers."""

    id: str
    title: str
    check: Callable[[Any], None]
    reference: Any
    wrong_answers: tuple[Any, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CheckResult:
    exercise: str
    status: Status
    message: str

    def __str__(self) -> str:
        mark = {"passed": "PASSED", "failed": "FAILED", "not_attempted": "NOT ATTEMPTED YET"}
        return f"[{mark[self.status]}] {self.exercise}: {self.message}"


EXERCISES: dict[str, Exercise] = {}
RESULTS: list[CheckResult] = []


def exercise(
    exercise_id: str, *, title: str, reference: Any, wrong_answers: Sequence[Any] = ()
) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register the decorated function as the check of ``exercise_id``.

    The check receives the learner's answer and raises :class:`CheckFailed` with a specific
    message when it is wrong; returning normally means it passed.
    """

    def register(check_fn: Callable[[Any], None]) -> Callable[[Any], None]:
        if exercise_id in EXERCISES:
            raise ValueError(f"exercise {exercise_id!r} is registered twice")
        EXERCISES[exercise_id] = Exercise(
            exercise_id, title, check_fn, reference, tuple(wrong_answers))
        return check_fn

    return register


# Named, not imported: the chapter modules import this one to register their exercises, so
# an import the other way would make a cycle. The asset store names loaders the same way.
EXERCISE_PACKAGE = "llmlab.course.exercises"


def _exercise_package() -> ModuleType:
    return importlib.import_module(EXERCISE_PACKAGE)


def get_exercise(exercise_id: str) -> Exercise:
    """The registered exercise, loading its chapter's module (and no other) on first use.

    >>> get_exercise("ch99.rms_norm")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    KeyError: "no exercise named 'ch99.rms_norm': there is no chapter 'ch99'; known chapters: ..."
    """
    if exercise_id in EXERCISES:
        return EXERCISES[exercise_id]
    chapter = exercise_id.partition(".")[0]
    package = _exercise_package()
    if chapter in package.chapters():
        package.load(chapter)
        if exercise_id in EXERCISES:
            return EXERCISES[exercise_id]
    siblings = sorted(eid for eid in EXERCISES if eid.partition(".")[0] == chapter)
    if siblings:
        raise KeyError(f"no exercise named {exercise_id!r}; chapter {chapter!r} has: "
                       f"{', '.join(siblings)}")
    raise KeyError(f"no exercise named {exercise_id!r}: there is no chapter {chapter!r}; known "
                   f"chapters: {', '.join(package.chapters())} (an id is the chapter, a dot "
                   "and the exercise: 'ch01.rms_norm')")


def all_exercises() -> dict[str, Exercise]:
    """Every chapter's exercises, by id (imports every chapter: for tooling and the tests)."""
    _exercise_package().load_all()
    return dict(EXERCISES)


def run_check(exercise_id: str, answer: Any) -> CheckResult:
    """Run an exercise's check on ``answer`` and classify the outcome (prints nothing)."""
    ex = get_exercise(exercise_id)
    try:
        ex.check(answer)
    except NotImplementedError:
        return CheckResult(ex.id, "not_attempted",
                           f"{ex.title}: the cell above still raises NotImplementedError.")
    except CheckFailed as failure:
        return CheckResult(ex.id, "failed", f"{ex.title}: {failure}")
    except Exception as error:  # the learner's code crashed: say where, briefly
        where = traceback.extract_tb(error.__traceback__)[-1]
        return CheckResult(
            ex.id, "failed",
            f"{ex.title}: your code raised {type(error).__name__}: {error} "
            f"(line {where.lineno}: {where.line})")
    return CheckResult(ex.id, "passed", f"{ex.title}: all cases match the reference.")


def check(exercise_id: str, answer: Any) -> Any:
    """Check ``answer``, print the verdict, and return what the rest of the lab should use."""
    result = run_check(exercise_id, answer)
    RESULTS.append(result)
    print(result)
    _record(result)
    expected = os.environ.get("LLMLAB_EXPECT")
    if expected and result.status != expected:
        raise AssertionError(f"LLMLAB_EXPECT={expected} but the check said: {result}")
    if result.status == "passed":
        return answer
    print("  (using llmlab's reference implementation so the rest of the notebook runs)")
    return EXERCISES[exercise_id].reference


def _record(result: CheckResult) -> None:
    progress_file = os.environ.get("LLMLAB_PROGRESS_FILE")
    if progress_file:
        with open(progress_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(result)) + "\n")


# --------------------------------------------------------------------------------------------
# Helpers for writing checks with specific messages


def require_callable(answer: Any, name: str) -> None:
    """Fail unless ``answer`` is a function (the stub and the solution both are)."""
    if not callable(answer):
        raise CheckFailed(f"expected a function {name}(...), got {type(answer).__name__}")


def call_learner(
    answer: Callable[..., Any], what: str, *args: Any, hint: str = "", **kwargs: Any,
) -> Any:
    """Run the learner's function on one case. A stub's NotImplementedError and a check's
    own failure pass through; any other crash becomes a failure naming the case and the
    learner's line, plus ``hint``.

    >>> call_learner(lambda x: 1 / x, "f(0)", 0)
    Traceback (most recent call last):
    ...
    llmlab.course.checks.CheckFailed: f(0): your code raised ZeroDivisionError: division by zero \
(line 1: call_learner(lambda x: 1 / x, "f(0)", 0)).
    """
    try:
        return answer(*args, **kwargs)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        raise CheckFailed(f"{what}: your code raised {type(error).__name__}: {error} "
                          f"(line {where.lineno}: {where.line}). {hint}".strip()) from error


def expect_shape(actual: Any, expected: Sequence[int], what: str) -> None:
    """Fail with both shapes when ``actual`` is not a tensor of shape ``expected``."""
    if not isinstance(actual, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected):
        raise CheckFailed(
            f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected)}")


def expect_close(
    actual: Any, expected: torch.Tensor, what: str, atol: float = 1e-5, rtol: float = 1e-4,
    hint: str = "",
) -> None:
    """Fail with the largest difference and where it is, when two tensors differ."""
    expect_shape(actual, expected.shape, what)
    if not torch.is_floating_point(actual):
        raise CheckFailed(f"{what} should hold floating-point values, got dtype {actual.dtype}")
    if torch.allclose(actual.float(), expected.float(), atol=atol, rtol=rtol):
        return
    diff = (actual.float() - expected.float()).abs()
    if torch.isnan(diff).any():
        raise CheckFailed(f"{what} contains NaN where the reference does not. {hint}".strip())
    worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    raise CheckFailed(
        f"{what} differs from the reference: max abs difference {diff.max().item():.3g} at "
        f"index {worst} (got {actual[worst].item():.5g}, expected {expected[worst].item():.5g}; "
        f"tolerance {atol:g}). {hint}".strip())


def expect_equal(actual: Any, expected: Any, what: str, hint: str = "") -> None:
    """Fail showing both values when they differ (ints, strings, tuples...)."""
    if actual != expected:
        raise CheckFailed(f"{what} is {actual!r}, expected {expected!r}. {hint}".strip())
