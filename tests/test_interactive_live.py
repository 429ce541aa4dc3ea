"""llmlab's interactive views live in JupyterLab: a real JupyterLab server, a notebook run
from headless Chromium (Debian's, driven by Playwright) with every request outside the
server refused. The same views on the static site are tested in test_site_browser.py."""

from __future__ import annotations

import os

import nbformat
import pytest
from browsing import CHROMIUM, SCREENSHOTS, watch
from jupyter_server import jupyterlab

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

CELL = """\
import torch
from llmlab.views.interactive import attention_view, slider_view

torch.manual_seed(0)
weights = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)
display(attention_view(weights, ["one", "two", "three", "four"]))
slider_view("squares", "n", [1, 2, 3], lambda n: f"<b>square {n * n}</b>")"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, folder / "views.ipynb")
    with jupyterlab(folder) as running:
        yield running


def test_views_work_live_in_jupyterlab_with_no_network(browser, lab):
    base, token = lab
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    problems = watch(page, base)
    page.goto(f"{base}/lab/tree/views.ipynb?token={token}")
    cell = page.locator(".jp-Notebook .jp-Cell").first
    cell.wait_for(timeout=120_000)
    # The status bar says "<kernel name> | Idle" once the kernel is connected; a cell run
    # before that is dropped.
    page.get_by_text("| Idle").first.wait_for(timeout=120_000)
    cell.click()
    page.keyboard.press("Shift+Enter")
    view = page.locator(".llmlab-bertviz")
    view.locator("svg text").first.wait_for(timeout=120_000)
    assert view.locator("svg text").all_text_contents().count("three") == 2
    slider_view = page.locator(".llmlab-view")
    slider_view.locator("input.llmlab-slider").focus()
    page.keyboard.press("ArrowRight")
    assert "square 4" in slider_view.locator(".llmlab-frame").inner_html()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".jp-OutputArea").first.screenshot(
        path=str(SCREENSHOTS / "jupyterlab_live_views.png"))
    outside = [p for p in problems if p.startswith("outside request")]
    assert outside == [], "a view asked for something beyond the JupyterLab server"
    page.close()
