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
def built_site(tmp_path_factory) -> Path:
    """Build the learner's site from a copy of the working tree with `jupyter-book build -W`
    (what `make book` runs); return its `_build/html` folder.

    ``LLMLAB_BUILT_SITE=path/to/_build/html`` uses a site built beforehand instead (the
    build takes minutes; handy when working on the browser tests themselves)."""
    prebuilt = os.environ.get("LLMLAB_BUILT_SITE")
    if prebuilt:
        html_dir = Path(prebuilt)
        assert (html_dir / "index.html").is_file(), f"LLMLAB_BUILT_SITE={prebuilt} is no built site"
        return html_dir
    site = tmp_path_factory.mktemp("site") / "course"
    ignore = shutil.ignore_patterns(".venv", "_build", ".git", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", ".hypothesis")
    shutil.copytree(ROOT, site, ignore=ignore)
    # Tools leave markdown in hidden folders of a working tree (pytest's cache README): the
    # site must not pick them up, or `make book` fails with "not included in any toctree".
    (site / ".pytest_cache").mkdir()
    (site / ".pytest_cache" / "README.md").write_text("# pytest cache directory\n")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jupyter_book), "build", str(site), "--warningiserror", "--keep-going"],
        capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return site / "_build" / "html"


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
