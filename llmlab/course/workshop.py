"""Tools for running the course in a room: ``llmlab doctor`` and ``llmlab progress``.

``doctor`` answers "will the course work on this machine?" before a workshop starts, one
line per check, each with what to do when it does not pass::

    $ llmlab doctor
    OK    python           3.11.9
    WARN  package torch    2.4.0 installed, the course is tested with 2.13.0
          fix: .venv/bin/python -m pip install -c constraints.txt 'torch==2.13.0'
    FAIL  asset gpt2-bpe   not in the cache (~/.cache/llmlab)
          fix: llmlab assets fetch gpt2-bpe

``progress`` answers "where is the room?" after a session: it executes every collected lab
notebook (a copy, in a scratch folder) with ``LLMLAB_PROGRESS_FILE`` set, so each
``check(...)`` call records its verdict, and tabulates the verdicts per learner and per
exercise. Each check is a small function returning a row, so the tests call them directly.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import nbformat

import llmlab
from llmlab import assets
from llmlab.course.labs import check_ids

Level = Literal["OK", "WARN", "FAIL"]

#: Packages whose versions decide whether the notebooks behave as tested; the first four are
#: needed to run anything, the last two only to build the site and run the notebook tests.
KEY_PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "jupyter-book", "nbval")
REQUIRED_PACKAGES = frozenset({"torch", "transformers", "tokenizers", "numpy"})
MIN_PYTHON = (3, 11)
MIN_FREE_GB = 2.0


class WorkshopError(RuntimeError):
    """A workshop command cannot start (no such folder, nothing to do); the message says why."""


# --------------------------------------------------------------------------------------------
# llmlab doctor


@dataclass(frozen=True)
class Diagnosis:
    """One line of ``llmlab doctor``: what was checked, how it went, and the remedy if any."""

    check: str
    level: Level
    detail: str
    fix: str = ""


def check_python(version: Sequence[int] | None = None) -> Diagnosis:
    """The interpreter must be 3.11+: the package and the notebooks use 3.11 syntax."""
    found = tuple(sys.version_info[:3] if version is None else version)
    shown = ".".join(str(part) for part in found)
    if found[:2] >= MIN_PYTHON:
        return Diagnosis("python", "OK", f"{shown} ({sys.executable})")
    wanted = ".".join(str(part) for part in MIN_PYTHON)
    return Diagnosis("python", "FAIL", f"{shown}: LLM Lab needs Python >= {wanted}",
                     f"install Python {wanted} or newer, then run `make setup` again")


def find_constraints() -> Path | None:
    """``constraints.txt`` of the repository this package was installed from, if any.

    An editable install (``make setup``) sits next to it; a pip or Colab install has none,
    and then versions are reported but not compared.
    """
    # From the package's root, not this file: this module moved once (into llmlab/course/)
    # and the lookup silently stopped finding the pins.
    candidate = Path(llmlab.__file__).resolve().parents[1] / "constraints.txt"
    return candidate if candidate.is_file() else None


def _normalise(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def read_pins(constraints: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints file, keyed by normalised package name."""
    pins = {}
    for line in constraints.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            pins[_normalise(name.strip())] = version.strip()
    return pins


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _same_version(installed: str, pinned: str) -> bool:
    """Equal ignoring the local label: the CPU wheel of torch 2.13.0 is ``2.13.0+cpu``."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # packaging comes with transformers, but stay usable without it
        return installed.split("+", 1)[0] == pinned.split("+", 1)[0]
    try:
        return Version(installed).public == Version(pinned).public
    except InvalidVersion:
        return installed == pinned


def check_package(package: str, pins: dict[str, str] | None,
                  constraints: Path | None = None) -> Diagnosis:
    """One key package against its pin; a mismatch warns (it may work, it is not tested)."""
    label = f"package {package}"
    installed = _installed_version(package)
    if installed is None:
        level: Level = "FAIL" if package in REQUIRED_PACKAGES else "WARN"
        need = "" if level == "FAIL" else " (needed to build the site and test notebooks)"
        return Diagnosis(label, level, f"not installed{need}", "run `make setup`")
    pinned = (pins or {}).get(_normalise(package))
    if pins is None:
        return Diagnosis(label, "OK", f"{installed} (no constraints.txt here: not compared)")
    if pinned is None:
        return Diagnosis(label, "OK", f"{installed} (not pinned in constraints.txt)")
    if _same_version(installed, pinned):
        return Diagnosis(label, "OK", installed)
    where = constraints or "constraints.txt"
    return Diagnosis(label, "WARN", f"{installed} installed, the course is tested with {pinned}",
                     f"{sys.executable} -m pip install -c {where} '{package}=={pinned}'")


def check_packages(constraints: Path | None) -> list[Diagnosis]:
    """Every key package; extra or unpinned packages are never a problem."""
    pins = read_pins(constraints) if constraints is not None else None
    return [check_package(name, pins, constraints) for name in KEY_PACKAGES]


def check_asset(name: str) -> Diagnosis:
    """Present and matching its manifest (files changed since the last check are re-hashed)."""
    label = f"asset {name}"
    try:
        folder = assets.verify(name)
    except assets.AssetCorruptedError as error:
        return Diagnosis(label, "FAIL", str(error), f"llmlab assets fetch {name} --force")
    except assets.AssetError:
        return Diagnosis(label, "FAIL", f"not in the cache ({assets.home()})",
                         f"llmlab assets fetch {name}")
    except OSError as error:  # a cache on a read-only or unmounted disk
        return Diagnosis(label, "FAIL", f"the cache cannot be read or written: {error}",
                         "check the permissions of LLMLAB_HOME, or point it elsewhere")
    return Diagnosis(label, "OK", f"verified in {folder}")


def _existing_parent(folder: Path) -> Path:
    """The folder or its nearest existing ancestor: the cache may not exist yet."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_disk(folder: Path | None = None, minimum_gb: float = MIN_FREE_GB) -> Diagnosis:
    """Free space where the assets live: a first fetch and conversion need room to unpack."""
    where = folder or assets.home()
    free_gb = shutil.disk_usage(_existing_parent(where)).free / 1e9
    detail = f"{free_gb:.1f} GB free for {where}"
    if free_gb >= minimum_gb:
        return Diagnosis("disk space", "OK", detail)
    return Diagnosis("disk space", "WARN", f"{detail} (less than {minimum_gb:g} GB)",
                     "free some space, or set LLMLAB_HOME to a folder on a larger disk")


def check_npm() -> Diagnosis:
    """npm fetches gpt2-bpe's package and, once each, the JavaScript the site build and the
    bertviz views use (``llmlab.assets.jslibs``); when all of those are cached npm is not needed."""
    from llmlab.assets import jslibs

    npm = shutil.which("npm")
    if npm:
        return Diagnosis("npm", "OK", npm)
    missing = [] if (assets.home() / "gpt2-bpe" / assets.MANIFEST).exists() else ["gpt2-bpe"]
    for name, packages in (("site", jslibs.SITE_PACKAGES), ("bertviz", jslibs.BERTVIZ_PACKAGES)):
        if not jslibs._is_complete(jslibs.install_dir(name, packages), packages):
            missing.append(f"the {name} JavaScript")
    if not missing:
        return Diagnosis("npm", "OK", "not on PATH, not needed: everything it fetches is cached")
    return Diagnosis("npm", "WARN", f"not on PATH: the first fetch of {', '.join(missing)} "
                     "needs it", "install Node.js (it brings npm), or `llmlab assets install "
                     "--from PACK` and copy $LLMLAB_HOME/npm from a machine that has it")


def check_accelerator() -> Diagnosis:
    """Informational: every chapter runs on a CPU, a GPU only makes some of them faster."""
    try:
        import torch
    except ImportError:
        return Diagnosis("accelerator", "WARN", "torch is not importable", "run `make setup`")
    if torch.cuda.is_available():
        return Diagnosis("accelerator", "OK", f"CUDA: {torch.cuda.get_device_name(0)}")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Diagnosis("accelerator", "OK", "Apple MPS")
    return Diagnosis("accelerator", "OK", "none, CPU only (every chapter runs on a CPU)")


def run_doctor() -> list[Diagnosis]:
    """Every check, in the order a person would fix them."""
    rows = [check_python(), *check_packages(find_constraints())]
    rows += [check_asset(name) for name in assets.names()]
    return rows + [check_disk(), check_npm(), check_accelerator()]


def format_doctor(rows: Sequence[Diagnosis]) -> str:
    """One line per check, the fix indented below it, and a count at the end."""
    width = max(len(row.check) for row in rows)
    lines = []
    for row in rows:
        lines.append(f"{row.level:<5} {row.check:<{width}}  {row.detail}")
        if row.fix:
            lines.append(f"{'':<5} {'':<{width}}  fix: {row.fix}")
    counts = {level: sum(row.level == level for row in rows) for level in ("OK", "WARN", "FAIL")}
    lines.append(", ".join(f"{n} {level}" for level, n in counts.items()))
    return "\n".join(lines)


def doctor_exit_code(rows: Sequence[Diagnosis]) -> int:
    """1 when anything FAILs (warnings are worth reading, not worth stopping a script)."""
    return 1 if any(row.level == "FAIL" for row in rows) else 0


# --------------------------------------------------------------------------------------------
# llmlab progress

Outcome = Literal["passed", "failed", "not_attempted", "not_run"]
NotebookState = Literal["executed", "stopped", "not_a_lab", "unreadable"]
SHOWN = {"passed": "passed", "failed": "failed", "not_attempted": "not attempted",
         "not_run": "not run"}


@dataclass(frozen=True)
class ExerciseResult:
    """One exercise in one learner's lab: the check's verdict and message."""

    exercise: str
    status: Outcome
    message: str = ""


@dataclass
class LearnerReport:
    """One notebook of the room: how far it ran, each exercise's verdict, the cell errors."""

    learner: str
    notebook: str
    state: NotebookState
    results: list[ExerciseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def status_of(self, exercise: str) -> Outcome | None:
        """The exercise's status, or None when this notebook does not have that exercise."""
        return next((r.status for r in self.results if r.exercise == exercise), None)


@dataclass
class RoomReport:
    """Every notebook of a folder and the exercises found in them, in lab order."""

    folder: str
    learners: list[LearnerReport]
    exercises: list[str]

    @property
    def labs(self) -> list[LearnerReport]:
        return [r for r in self.learners if r.state in ("executed", "stopped")]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per exercise, how many of the labs that have it ended in each status.

        A room may hold several chapters' labs: an exercise counts only the notebooks that
        contain it (``total``).
        """
        table: dict[str, dict[str, int]] = {}
        for exercise in self.exercises:
            found = [lab.status_of(exercise) for lab in self.labs]
            counts = {status: found.count(status) for status in SHOWN}
            table[exercise] = {**counts, "total": sum(counts.values())}
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "exercises": self.exercises,
                "learners": [asdict(learner) for learner in self.learners],
                "summary": self.summary()}


def room_notebooks(folder: Path) -> list[Path]:
    """The ``*.ipynb`` files of a room folder, or an error saying what is wrong with it."""
    if not folder.exists():
        raise WorkshopError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise WorkshopError(f"{folder} is not a folder: give the folder holding the labs")
    found = sorted(folder.glob("*.ipynb"))
    if not found:
        raise WorkshopError(f"no notebooks (*.ipynb) in {folder}: copy the learners' labs there")
    return found


def read_records(progress_file: Path) -> dict[str, ExerciseResult]:
    """The JSON lines llmlab.course.checks wrote; the last verdict per exercise wins (a re-run)."""
    found: dict[str, ExerciseResult] = {}
    if not progress_file.exists():
        return found
    for line in progress_file.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            result = ExerciseResult(record["exercise"], record["status"], record["message"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a dying kernel
        found[result.exercise] = result
    return found


def merge_results(declared: Sequence[str], records: dict[str, ExerciseResult]
                  ) -> list[ExerciseResult]:
    """Every exercise the notebook declares or recorded; one never reached is ``not_run``."""
    order = list(dict.fromkeys([*declared, *records]))
    return [records.get(ex, ExerciseResult(ex, "not_run", "the check cell never ran"))
            for ex in order]


def _cell_errors(notebook: nbformat.NotebookNode, timed_out: Sequence[int], timeout: float,
                 limit: int = 5) -> list[str]:
    """Errors cells raised (a check's verdict is never one), briefly, for the report's notes.

    A cell that ran past the timeout is named as such: its KeyboardInterrupt output may
    arrive too late to be seen (an endless loop in an answer, or a timeout set too short).
    """
    errors = []
    for index, cell in enumerate(notebook.cells):
        if index in timed_out:
            errors.append(f"cell {index}: interrupted after running {timeout:g} s (--timeout)")
            continue
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                errors.append(_truncate(f"cell {index}: {output['ename']}: {output['evalue']}"))
    return errors[:limit] + ([f"... and {len(errors) - limit} more"] if len(errors) > limit else [])


def _truncate(text: str, width: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _kernel_env(progress_file: Path, jobs: int) -> dict[str, str]:
    """The instructor's environment plus the progress file, offline, and no expectations.

    ``LLMLAB_EXPECT`` (set by the notebook tests) would turn a learner's failed check into a
    crash; with several kernels at once each gets a share of the cores.
    """
    env = {k: v for k, v in os.environ.items() if k != "LLMLAB_EXPECT"}
    env["LLMLAB_PROGRESS_FILE"] = str(progress_file)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    return env


TIMEOUT_ERROR = "CellTimeoutError"


def _client(notebook: nbformat.NotebookNode, workdir: Path, timeout: float,
            timed_out: list[int]) -> Any:
    """An nbclient runner whose kernel is this interpreter, in ``workdir``, that keeps going.

    ``allow_errors`` lets one crashing cell leave later checks to report; a cell running past
    ``timeout`` is interrupted (an error in that cell, its index added to ``timed_out``)
    rather than ending the notebook.
    """
    from nbclient import NotebookClient

    def note_timeout(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        if (execute_reply or {}).get("content", {}).get("ename") == TIMEOUT_ERROR:
            timed_out.append(cell_index)

    client = NotebookClient(
        notebook, kernel_name="python3", timeout=max(1, round(timeout)), allow_errors=True,
        interrupt_on_timeout=True, record_timing=False, on_cell_executed=note_timeout,
        error_on_timeout={"ename": TIMEOUT_ERROR, "traceback": [],
                          "evalue": f"the cell ran longer than {timeout:g} s and was interrupted"},
        resources={"metadata": {"path": str(workdir)}})
    # Whatever "python3" kernelspec is found first, run the interpreter llmlab runs in.
    client.create_kernel_manager().kernel_spec.argv = [
        sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    return client


async def _execute(path: Path, notebook: nbformat.NotebookNode, declared: list[str],
                   timeout: float, jobs: int) -> LearnerReport:
    """Run a copy of one lab in a scratch folder and read back what its checks recorded."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    with tempfile.TemporaryDirectory(prefix="llmlab-progress-") as scratch:
        workdir = Path(scratch)
        shutil.copy2(path, workdir / path.name)
        progress_file = workdir / "progress.jsonl"
        state: NotebookState = "executed"
        notes: list[str] = []
        timed_out: list[int] = []
        try:
            client = _client(notebook, workdir, timeout, timed_out)
            await client.async_execute(env=_kernel_env(progress_file, jobs),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except DeadKernelError:
            state, notes = "stopped", ["the kernel died; later cells did not run"]
        except CellTimeoutError as error:
            state, notes = "stopped", [_truncate(f"a cell timed out: {error}")]
        except Exception as error:  # kernel failed to start, protocol error...: report, go on
            state, notes = "stopped", [_truncate(f"execution stopped: {error!r}")]
        results = merge_results(declared, read_records(progress_file))
    notes += _cell_errors(notebook, timed_out, timeout)
    return LearnerReport(path.stem, path.name, state, results, notes)


def _read_notebook(path: Path) -> nbformat.NotebookNode | str:
    """The notebook, or why it cannot be read (the message goes in the report)."""
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except (OSError, ValueError, nbformat.ValidationError) as error:
        return _truncate(f"unreadable notebook: {type(error).__name__}: {error}")
    return notebook


async def _report_one(path: Path, timeout: float, jobs: int,
                      slots: asyncio.Semaphore) -> LearnerReport:
    notebook = _read_notebook(path)
    if isinstance(notebook, str):
        return LearnerReport(path.stem, path.name, "unreadable", notes=[notebook])
    declared = check_ids(notebook)
    if declared is None:
        return LearnerReport(path.stem, path.name, "not_a_lab",
                             notes=["not a lab notebook: it has no check(...) calls"])
    async with slots:
        return await _execute(path, notebook, declared, timeout, jobs)


async def _report_all(paths: list[Path], timeout: float, jobs: int) -> list[LearnerReport]:
    slots = asyncio.Semaphore(jobs)
    return list(await asyncio.gather(*(_report_one(p, timeout, jobs, slots) for p in paths)))


def progress(folder: Path, timeout: float = 600, jobs: int = 1) -> RoomReport:
    """Execute every lab notebook in ``folder`` (copies; originals untouched) and tabulate.

    ``timeout`` bounds each cell, in seconds; ``jobs`` notebooks run at once (each lab loads a
    model, so more than the number of cores / 2 rarely helps).
    """
    if jobs < 1 or timeout <= 0:
        raise WorkshopError(f"jobs must be >= 1 and timeout > 0, got {jobs} and {timeout}")
    reports = asyncio.run(_report_all(room_notebooks(folder), timeout, jobs))
    exercises = list(dict.fromkeys(r.exercise for report in reports for r in report.results))
    return RoomReport(str(folder), reports, exercises)


def _without_title(exercise: str, message: str) -> str:
    """The check's message minus its leading exercise title, which the table already shows."""
    from llmlab.course import checks

    try:
        title = checks.get_exercise(exercise).title
    except KeyError:  # an exercise this llmlab does not know: keep the message whole
        return message
    return message.removeprefix(f"{title}: ")


def format_progress(report: RoomReport, width: int = 90) -> str:
    """The room as text: per learner each exercise's status, then one line per exercise."""
    labs = report.labs
    others = [r for r in report.learners if r.state in ("not_a_lab", "unreadable")]
    lines = [f"{report.folder}: {len(labs)} lab notebook(s) run, {len(others)} skipped", ""]
    name_width = max([len(ex) for ex in report.exercises] + [8])
    for lab in labs:
        stopped = " (stopped early)" if lab.state == "stopped" else ""
        lines.append(f"{lab.learner} ({lab.notebook}){stopped}")
        for result in lab.results:
            message = (_truncate(_without_title(result.exercise, result.message), width)
                       if result.status == "failed" else "")
            lines.append(f"  {result.exercise:<{name_width}}  {SHOWN[result.status]:<13}  "
                         f"{message}".rstrip())
        lines += [f"  note: {note}" for note in lab.notes]
    if others:
        lines.append("skipped")
        lines += [f"  {other.notebook}: {'; '.join(other.notes)}" for other in others]
    lines += ["", "summary (passed / lab notebooks with that exercise)"]
    for exercise, counts in report.summary().items():
        rest = ", ".join(f"{counts[s]} {SHOWN[s]}" for s in SHOWN if counts[s] and s != "passed")
        lines.append(f"  {exercise:<{name_width}}  {counts['passed']}/{counts['total']} passed"
                     + (f"  ({rest})" if rest else ""))
    return "\n".join(lines)
