"""The repository's entry points agree: README commands, CI script and Pages workflow."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _readme_commands() -> list[str]:
    block = re.search(r"## Two commands\s+.*?```bash\n(.*?)```", README, re.S)
    assert block, "README has no 'Two commands' block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_gives_a_build_and_a_test_command():
    assert _readme_commands() == ["make book", "make test"]


def test_ci_runs_exactly_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line.strip() for line in script if line.strip() and not line.startswith("#")]
    assert commands[-1] == _readme_commands()[1]


def test_pages_workflow_builds_with_the_readme_command_and_publishes_the_site():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
    steps = workflow["jobs"]["build"]["steps"]
    assert _readme_commands()[0] in [step.get("run") for step in steps]
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html"
    assert "deploy-pages" in str(workflow["jobs"]["deploy"]["steps"])
