"""A Sphinx extension (listed in _config.yml) that makes the course site work offline and
load without a console error.

1. **Scripts from the site itself.** Jupyter Book pages load MathJax, require.js and the
   ipywidgets HTML manager from CDNs, so a page read without network shows raw LaTeX and
   blank widgets. The pinned npm packages (:data:`llmlab.assets.jslibs.SITE_PACKAGES`) are
   installed once into the course cache, copied into the site's ``_static/vendor/`` and
   the pages point at them. No JavaScript library is committed to the repository.
2. **The widget manager's fonts and math.** See :data:`WIDGET_SETUP_JS`.
3. **Inline scripts emitted twice.** See :func:`drop_duplicate_inline_scripts`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from llmlab.assets import jslibs

#: What each package contributes to _static/vendor/: (source inside node_modules, target).
VENDORED = [
    ("mathjax/es5", "mathjax"),
    ("requirejs/require.js", "require.js"),
    ("@jupyter-widgets/html-manager/dist", "html-manager"),
]
MATHJAX_ENTRY = "vendor/mathjax/tex-mml-chtml.js"

#: A small script of ours that the widget pages load between require.js and the HTML
#: manager; it fixes two mismatches between the manager and the site:
#:
#: - **Fonts.** The manager's bundle defines AMD modules under names such as
#:   ``@jupyter-widgets/controls`` and ``@jupyter-widgets/html-manager/dist/libembed-amd``,
#:   and each derives webpack's public path (where its icon fonts are fetched from) from
#:   require.js's ``module.uri`` for its name. With no ``paths`` entry require.js resolves
#:   those names against the *page's* folder, so widget pages asked for
#:   ``<page dir>/@jupyter-widgets/html-manager/dist/*.woff`` and
#:   ``<page dir>/@jupyter-widgets/*.woff`` (404). Mapping each name into the folder the
#:   bundle is served from fixes the URLs at their origin (the manager's own hook,
#:   ``window.__jupyter_widgets_assets_path__``, is read only after the font CSS is built).
#:   The script finds that folder relative to its own URL, so it works at any page depth.
#: - **Math in widget labels.** The manager typesets every widget description with
#:   MathJax 2's API, ``MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])``, whenever
#:   ``window.MathJax`` exists. The site runs MathJax 3, which has no ``Hub``, so any widget
#:   with a description threw "Cannot read properties of undefined (reading 'Queue')".
#:   The script gives MathJax 3 that one entry point, typesetting with MathJax 3's own
#:   ``typesetPromise``. It is added at DOMContentLoaded: MathJax (a deferred script) has
#:   replaced its configuration object by then, and widgets render later, at ``load``.
WIDGET_SETUP_JS = """\
// Written by llmlab/site/build.py (see WIDGET_SETUP_JS there for why).
(function () {
  var here = document.currentScript.src;
  var folder = function (name) { return new URL("html-manager/" + name, here).href; };
  require.config({paths: {
    "@jupyter-widgets/html-manager/dist": new URL("html-manager", here).href,
    "@jupyter-widgets/html-manager": folder("html-manager"),
    "@jupyter-widgets/controls": folder("controls"),
    "@jupyter-widgets/base": folder("base")
  }});
  window.addEventListener("DOMContentLoaded", function () {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub) { return; }
    mathjax.Hub = {Queue: function (job) {
      var element = job[2];
      if (mathjax.startup && mathjax.typesetPromise) {
        mathjax.startup.promise.then(function () { return mathjax.typesetPromise([element]); });
      }
    }};
  });
})();
"""
WIDGET_SCRIPTS = {"vendor/require.js": {}, "vendor/widget-setup.js": {},
                  "vendor/html-manager/embed-amd.js": {}}


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
    (vendor / "widget-setup.js").write_text(WIDGET_SETUP_JS)
    return static


def drop_duplicate_inline_scripts(scripts: list[Any]) -> list[Any]:
    """``scripts`` without the second copy of any inline script.

    Sphinx 7.4 puts an inline script (``app.add_js_file(None, body=...)``) that an
    extension registers after the builder started on every page twice: once as added
    (file name ``None``) and again when ``prepare_writing`` re-adds everything in the
    registry, where the name has become ``""``. The two no longer compare equal, so the
    builder's de-duplication misses them. sphinx-thebe registers
    ``const THEBE_JS_URL = ...`` that way, and the second copy threw "Identifier
    'THEBE_JS_URL' has already been declared" on every page (sphinx-togglebutton's
    ``var togglebuttonSelector`` is doubled too, silently). Scripts with a file are kept
    as they are.

    >>> from sphinx.builders.html._assets import _JavaScript
    >>> body = "const THEBE_JS_URL = 'x'"
    >>> scripts = [_JavaScript(None, body=body), _JavaScript("a.js"), _JavaScript("", body=body)]
    >>> [script.filename for script in drop_duplicate_inline_scripts(scripts)]
    [None, 'a.js']
    """
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for script in scripts:
        filename = getattr(script, "filename", script)
        attributes = getattr(script, "attributes", {})
        if not filename and "body" in attributes:
            key = (getattr(script, "priority", None), *sorted(attributes.items()))
            if key in seen:
                continue
            seen.add(key)
        kept.append(script)
    return kept


def _configure(app: Any, config: Any) -> None:
    modules = jslibs.node_modules("site", jslibs.SITE_PACKAGES)
    static = stage_static(modules, Path(app.outdir).parent / ".site-js" / "static")
    config.html_static_path = [*config.html_static_path, str(static)]
    config.mathjax_path = MATHJAX_ENTRY
    config.nb_ipywidgets_js = dict(WIDGET_SCRIPTS)


def _clean_page_scripts(app: Any, pagename: str, templatename: str, context: dict,
                        doctree: Any) -> None:
    if "script_files" in context:
        context["script_files"] = drop_duplicate_inline_scripts(list(context["script_files"]))


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _configure, priority=900)  # after myst-nb's defaults
    # After every extension (myst-nb adds the widget scripts in this event too).
    app.connect("html-page-context", _clean_page_scripts, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
