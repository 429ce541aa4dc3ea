"""Shared fixtures: the course site, built once per test session; one torch thread."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and the CI machine's 2 cores are shared.
    Training test modules use it for every test: ``pytestmark = usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def built_site() -> Path:
    """Build the learner's site the way the README tells a learner to: ``make book`` in the
    working tree itself (set-up steps are already done, so it only builds, with
    ``jupyter-book build -W``); return its ``_build/html`` folder.

    An earlier version built a copy of the tree in a temporary folder, and the copy passed
    while ``make book`` failed for learners (worker processes' stderr in a cell): the test
    must run the very command, in the very place, a learner does. Without the project's
    ``.venv`` (pytest run from another environment) the recipe's build command runs instead.

    ``LLMLAB_BUILT_SITE=path/to/_build/html`` uses a site built beforehand instead (the
    build takes minutes; handy when working on the browser tests themselves)."""
    prebuilt = os.environ.get("LLMLAB_BUILT_SITE")
    if prebuilt:
        html_dir = Path(prebuilt)
        assert (html_dir / "index.html").is_file(), f"LLMLAB_BUILT_SITE={prebuilt} is no built site"
        return html_dir
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve() and shutil.which("make"):
        command = ["make", "--no-print-directory", "book"]
    else:
        jupyter_book = Path(sys.executable).with_name("jupyter-book")
        command = [str(jupyter_book), "build", ".", "--toc", "_toc.yml", "--warningiserror",
                   "--keep-going"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                            env=env)
    assert result.returncode == 0, (f"`{' '.join(command)}` failed:\n"
                                    + result.stdout[-4000:] + result.stderr[-4000:])
    return ROOT / "_build" / "html"


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium (no browser download), driven by Playwright. Per module, not
    per session: while Playwright's sync API is open its event loop runs in this thread, and
    every later test that calls asyncio.run (nbclient, the JupyterLab test) would fail."""
    from browsing import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is missing: `apt-get install chromium`"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()
