"""The built site in a real browser (Debian's chromium driven by Playwright), served from
localhost with every other address blocked: pages load cleanly, math renders, and an
llmlab interactive view responds to its slider with no kernel."""

from __future__ import annotations

import functools
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)
SCREENSHOTS = Path(os.environ.get("LLMLAB_SCREENSHOTS", "_build/screenshots"))
PAGES = ["book/intro.html", "book/01_architecture.html", "labs/01_architecture.html",
         "book/instructors.html"]


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


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is missing: `apt-get install chromium`"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield instance
        instance.close()


def open_offline(browser, site_url: str, path: str):
    """A page whose requests anywhere but the local site are aborted (and recorded)."""
    page = browser.new_page(viewport={"width": 1300, "height": 1800})
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))

    def only_local(route):
        if route.request.url.startswith(site_url):
            route.continue_()
        else:
            problems.append(f"outside request: {route.request.url}")
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{site_url}/{path}", wait_until="networkidle")
    return page, problems


def outside(problems: list[str]) -> list[str]:
    return [p for p in problems if p.startswith("outside request")]


@pytest.mark.parametrize("path", PAGES)
def test_page_needs_nothing_beyond_the_site(browser, site_url, path):
    page, problems = open_offline(browser, site_url, path)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / (path.replace("/", "_") + ".png")), full_page=False)
    assert outside(problems) == []
    page.close()


@pytest.mark.xfail(strict=True, reason=(
    "known, not yet fixed: the Jupyter Book 1 theme declares THEBE_JS_URL twice and logs "
    "'Got invalid theme mode'; the widget manager looks for its fonts relative to the page "
    "(404). Remove this mark once the page is clean."))
@pytest.mark.parametrize("path", ["book/01_architecture.html"])
def test_page_loads_without_console_errors_or_failed_requests(browser, site_url, path):
    page, problems = open_offline(browser, site_url, path)
    assert problems == []
    page.close()


def test_math_renders_offline(browser, site_url):
    page, problems = open_offline(browser, site_url, "labs/01_architecture.html")
    page.wait_for_selector("mjx-container", timeout=15_000)
    assert page.locator("mjx-container").count() >= 4
    assert outside(problems) == []
    page.close()


def test_interactive_view_responds_to_its_slider(browser, site_url):
    page, problems = open_offline(browser, site_url, "book/01_architecture.html")
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
    assert outside(problems) == []
    page.close()
