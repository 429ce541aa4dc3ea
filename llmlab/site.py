"""A Sphinx extension (listed in _config.yml) that serves the site's JavaScript from the site.

Jupyter Book pages load MathJax, require.js and the ipywidgets HTML manager from CDNs, so
a page read without network shows raw LaTeX and blank widgets. At build time this
extension installs pinned copies from the npm registry (once; they are kept in
``_build/.site-js``), copies them into the site's ``_static/vendor/`` and points the pages
at them. No JavaScript library is committed to the repository.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

#: npm packages and versions the pages use (html-manager 1.0.6 matches ipywidgets 8.1).
PACKAGES = {"mathjax": "3.2.2", "requirejs": "2.3.6", "@jupyter-widgets/html-manager": "1.0.6"}

#: What each package contributes to _static/vendor/: (source inside node_modules, target).
VENDORED = [
    ("mathjax/es5", "mathjax"),
    ("requirejs/require.js", "require.js"),
    ("@jupyter-widgets/html-manager/dist", "html-manager"),
]
MATHJAX_ENTRY = "vendor/mathjax/tex-mml-chtml.js"
WIDGET_SCRIPTS = {"vendor/require.js": {}, "vendor/html-manager/embed-amd.js": {}}


def install_packages(cache: Path) -> Path:
    """``npm install`` the pinned packages into ``cache`` unless already there; return
    its node_modules folder."""
    stamp = cache / "installed.json"
    modules = cache / "node_modules"
    if stamp.is_file() and json.loads(stamp.read_text()) == PACKAGES and modules.is_dir():
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("building the site needs npm (to serve MathJax and the widget "
                           "scripts offline); install Node.js and npm")
    cache.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    result = subprocess.run(
        [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(cache), *specs],
        capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"npm install {' '.join(specs)} failed:\n{result.stderr[-2000:]}")
    stamp.write_text(json.dumps(PACKAGES))
    return modules


def stage_static(modules: Path, static: Path) -> Path:
    """Copy the files the pages load into ``static/vendor``; return ``static``."""
    vendor = static / "vendor"
    shutil.rmtree(vendor, ignore_errors=True)
    vendor.mkdir(parents=True)
    for source, target in VENDORED:
        origin = modules / source
        if origin.is_dir():
            shutil.copytree(origin, vendor / target)
        else:
            shutil.copy2(origin, vendor / target)
    return static


def _configure(app: Any, config: Any) -> None:
    cache = Path(app.outdir).parent / ".site-js"
    static = stage_static(install_packages(cache), cache / "static")
    config.html_static_path = [*config.html_static_path, str(static)]
    config.mathjax_path = MATHJAX_ENTRY
    config.nb_ipywidgets_js = dict(WIDGET_SCRIPTS)


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _configure, priority=900)  # after myst-nb's defaults
    return {"parallel_read_safe": True, "parallel_write_safe": True}
