"""The built site in a real browser (Debian's chromium driven by Playwright), served from
localhost with every other address blocked: every page loads with no console error and no
failed request, math renders, and the interactive outputs (an llmlab slider view, a bertviz
view, ipywidgets restored from saved state) draw and respond with no kernel."""

from __future__ import annotations

import functools
import json
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from browsing import CHROMIUM, SCREENSHOTS, watch

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "book/01_architecture.html"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output readable
        pass


@pytest.fixture(scope="module")
def site_url(built_site):
    handler = functools.partial(QuietHandler, directory=str(built_site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def open_offline(browser, site_url: str, path: str):
    """A page of the site whose requests anywhere but the local site are aborted."""
    page = browser.new_page(viewport={"width": 1300, "height": 1800})
    problems = watch(page, site_url)
    page.goto(f"{site_url}/{path}", wait_until="networkidle")
    page.wait_for_timeout(300)  # fonts and typesetting that start after the load settle
    return page, problems


def site_pages(html_dir: Path) -> list[str]:
    """Every HTML page the build wrote (the theme's own _static files aside)."""
    return sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
                  if not p.relative_to(html_dir).parts[0].startswith("_"))


def test_every_page_loads_without_console_errors_or_failed_requests(
        browser, site_url, built_site):
    pages = site_pages(built_site)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert {f"{name}.html" for name in listed} <= set(pages), "a TOC page was not found"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    found = {}
    for path in pages:
        page, problems = open_offline(browser, site_url, path)
        page.screenshot(path=str(SCREENSHOTS / (path.replace("/", "_") + ".png")))
        found[path] = problems
        page.close()
    (SCREENSHOTS / "pages_checked.json").write_text(json.dumps(found, indent=1))
    assert {path: problems for path, problems in found.items() if problems} == {}


def test_math_renders_offline(browser, site_url):
    page, problems = open_offline(browser, site_url, "labs/01_architecture.html")
    page.wait_for_selector("mjx-container", timeout=15_000)
    assert page.locator("mjx-container").count() >= 4
    assert problems == []
    page.close()


def test_interactive_view_responds_to_its_slider(browser, site_url):
    page, problems = open_offline(browser, site_url, CHAPTER)
    view = page.locator(".llmlab-view").first
    view.scroll_into_view_if_needed()
    value, frame = view.locator(".llmlab-value"), view.locator(".llmlab-frame")
    assert value.inner_text() == "0"
    before = frame.inner_html()
    slider = view.locator("input.llmlab-slider")
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert value.inner_text() == "16"
    assert frame.inner_html() != before and "position 16" in frame.inner_html()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    view.screenshot(path=str(SCREENSHOTS / "interactive_view.png"))
    assert problems == []
    page.close()


def test_bertviz_view_draws_offline(browser, site_url):
    page, problems = open_offline(browser, site_url, CHAPTER)
    view = page.locator(".llmlab-bertviz").first
    view.scroll_into_view_if_needed()
    view.locator("svg text").first.wait_for(timeout=15_000)
    words = view.locator("svg text").all_text_contents()
    assert words.count("cat") == 2 and words.count("[CLS]") == 2  # the left and right columns
    assert view.locator("svg line, svg path").count() > 20  # attention lines were drawn
    drawing = view.locator("svg").first.inner_html()
    view.locator("select").first.select_option("3")  # another layer: other weights
    assert view.locator("svg").first.inner_html() != drawing
    view.locator("select").first.select_option("0")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    view.screenshot(path=str(SCREENSHOTS / "bertviz_head_view.png"))
    assert problems == []
    page.close()


def test_attention_explorer_responds_offline(browser, site_url):
    """Chapter 03's explorer: every sentence, layer and head is in the page; hovering a
    token shows what it attends to, the head slider and sentence menu switch the data."""
    page, problems = open_offline(browser, site_url, "book/03_attention.html")
    view = page.locator(".llmlab-attention-explorer").first
    view.scroll_into_view_if_needed()
    tokens, detail = view.locator(".llmlab-token"), view.locator(".llmlab-detail")
    assert view.locator(".llmlab-layer-value").inner_text() == "18"
    assert view.locator(".llmlab-head-value").inner_text() == "6"
    n = tokens.count()
    assert n > 5 and view.locator("table.llmlab-heatmap td").count() == n * n
    assert "attends most to" in detail.inner_text()
    tokens.nth(n - 2).hover()
    assert view.locator(".llmlab-token.llmlab-focus").get_attribute("data-index") == str(n - 2)
    hovered = detail.inner_text()
    view.locator("input.llmlab-head").focus()
    page.keyboard.press("ArrowLeft")
    assert view.locator(".llmlab-head-value").inner_text() == "5"
    assert detail.inner_text() != hovered
    view.locator("select.llmlab-sentence").select_option("1")
    assert tokens.count() != n
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    view.screenshot(path=str(SCREENSHOTS / "attention_explorer.png"))
    bertviz = page.locator(".llmlab-bertviz")
    assert bertviz.count() == 2  # MiniLM and SmolLM2
    for i in range(2):
        bertviz.nth(i).scroll_into_view_if_needed()
        bertviz.nth(i).locator("svg text").first.wait_for(timeout=15_000)
    bertviz.nth(1).screenshot(path=str(SCREENSHOTS / "bertviz_smollm2.png"))
    assert problems == []
    page.close()


def test_sampling_explorer_responds_offline(browser, site_url):
    """Chapter 05's sampling explorer: every setting is precomputed in the page; moving the
    sliders changes the bars, the kept-token count and the samples, with no kernel."""
    page, problems = open_offline(browser, site_url, "book/05_decoding.html")
    view = page.locator(".llmlab-sampling").first
    view.scroll_into_view_if_needed()
    values = view.locator(".llmlab-setting-value")
    assert values.all_inner_texts() == ["1", "off", "1 (off)"]
    kept = view.locator(".llmlab-kept").inner_text()
    view.locator("input.llmlab-top-k").focus()
    page.keyboard.press("End")  # top-k = 1: greedy
    assert view.locator(".llmlab-kept").inner_text() == "1"
    widths = view.locator(".llmlab-bar-after").evaluate_all("bars => bars.map(b => b.style.width)")
    assert widths[0] == "100%" and set(widths[1:]) == {"0%"}
    samples = view.locator(".llmlab-samples li").all_inner_texts()
    assert len(samples) >= 2 and len(set(samples)) == 1
    view.locator("input.llmlab-top-k").focus()
    page.keyboard.press("Home")
    view.locator("input.llmlab-top-p").focus()
    page.keyboard.press("ArrowRight")
    assert values.all_inner_texts()[2] != "1 (off)"
    assert view.locator(".llmlab-kept").inner_text() != kept
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    view.screenshot(path=str(SCREENSHOTS / "sampling_explorer.png"))
    assert problems == []
    page.close()


def test_saved_widgets_respond_without_a_kernel(browser, site_url):
    """The chapter's ipywidgets slider is jslink-ed to a stack of charts: the html-manager
    rebuilds both from the saved widget state, and the link works in the browser alone."""
    page, problems = open_offline(browser, site_url, CHAPTER)
    slider = page.locator(".widget-slider", has=page.locator("label", has_text="layer"))
    slider.scroll_into_view_if_needed()
    box = slider.locator("xpath=..")
    shown = box.locator(".widget-html-content")  # a Stack shows only its selected child
    assert shown.count() == 1
    # matplotlib keeps each text as a comment next to its outline in the SVG
    assert "MiniLM, layer 0:" in shown.inner_html()
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert slider.locator(".widget-readout").inner_text() == "2"
    assert "MiniLM, layer 2:" in shown.inner_html()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    box.screenshot(path=str(SCREENSHOTS / "ipywidgets_saved_state.png"))
    assert problems == []
    page.close()


def test_attention_view_draws_alone_and_next_to_an_amd_loader(browser):
    """Straight from llmlab (no site): the view draws with every request refused, also on a
    page where an AMD loader is present (the widget pages load require.js), so the inlined
    libraries must not call a global define()."""
    import torch

    from llmlab.views.interactive import attention_view

    torch.manual_seed(0)
    weights = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)
    html = attention_view(weights, ["one", "two", "three", "four"]).html
    loader = ("<script>window.define = function () { throw new Error('global define() "
              "called'); }; window.define.amd = {};</script>")
    for head in ("", loader):
        page = browser.new_page()
        problems = watch(page, None)
        page.set_content(f"<html><head>{head}</head><body>{html}</body></html>")
        page.locator(".llmlab-bertviz svg text").first.wait_for(timeout=10_000)
        assert page.locator(".llmlab-bertviz svg text").all_text_contents().count("three") == 2
        assert problems == []
        page.close()
