"""What the browser tests share: Debian's chromium, where screenshots go, and a page
watcher that records every console error, script error and failed or refused request."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(os.environ.get("LLMLAB_SCREENSHOTS", "_build/screenshots"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def watch(page, allowed_prefix: str | None) -> list[str]:
    """Record the problems of ``page`` in the returned list, live; requests to anything but
    ``allowed_prefix`` (every request when it is None) are aborted and recorded."""
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))

    def only_local(route):
        if allowed_prefix and route.request.url.startswith(allowed_prefix):
            route.continue_()
        else:
            problems.append(f"outside request: {route.request.url}")
            route.abort()

    page.route("**/*", only_local)
    return problems
