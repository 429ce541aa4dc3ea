"""Interactive views that work in JupyterLab, in Colab and on the static site alike.

The kernel computes every state of the view up front and the cell's output is a
self-contained piece of HTML: the data is embedded as JSON and inline JavaScript draws it.
Nothing is loaded from the network and no kernel is needed to interact, so the executed
page on the site behaves exactly as it did in the notebook. Two kinds of view:

- :func:`slider_view`: one precomputed frame (HTML or a matplotlib figure) per value of a
  slider;
- :func:`attention_view`: bertviz's head or model view of attention weights (any model:
  a tuple of per-layer tensors as transformers returns them, or one stacked tensor), with
  bertviz's CDN scripts replaced by inlined copies (:func:`bertviz_view`).

>>> view = slider_view("squares", "n", [1, 2, 3], lambda n: f"<b>{n * n}</b>")
>>> view.frames
['<b>1</b>', '<b>4</b>', '<b>9</b>']
>>> "input type=\\"range\\"" in view._repr_html_()
True
"""

from __future__ import annotations

import html
import io
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from llmlab.assets import jslibs

_SCRIPT = """
(function () {
  var root = document.getElementById("%(id)s");
  var data = JSON.parse(root.querySelector("script.llmlab-data").textContent);
  var slider = root.querySelector("input.llmlab-slider");
  var shown = root.querySelector(".llmlab-value");
  var frame = root.querySelector(".llmlab-frame");
  slider.addEventListener("input", function () {
    var i = Number(slider.value);
    shown.textContent = data.values[i];
    frame.innerHTML = data.frames[i];
  });
})();
"""


def to_html(content: Any) -> str:
    """HTML for one frame: a string as is, a matplotlib figure as inline SVG (then closed)."""
    if isinstance(content, str):
        return content
    if hasattr(content, "savefig"):
        import matplotlib.pyplot as plt

        buffer = io.StringIO()
        content.savefig(buffer, format="svg", bbox_inches="tight")
        plt.close(content)
        svg = buffer.getvalue()
        return svg[svg.index("<svg"):]  # drop the XML prolog: the SVG sits inside HTML
    raise TypeError(f"a frame must be an HTML string or a matplotlib figure, got "
                    f"{type(content).__name__}")


@dataclass
class SliderView:
    """A title, a slider over ``values`` and the precomputed HTML frame for each value."""

    title: str
    label: str
    values: list[str]
    frames: list[str]
    initial: int = 0
    element_id: str = field(default_factory=lambda: f"llmlab-view-{uuid.uuid4().hex[:12]}")

    def _repr_html_(self) -> str:
        # "</" inside a <script> would end it early; JSON allows escaping the slash.
        data = json.dumps({"values": self.values, "frames": self.frames}).replace("</", "<\\/")
        # data-lm-suppress-shortcuts: JupyterLab's notebook shortcuts would otherwise take the
        # arrow keys, and the keyboard could not move the slider there.
        return (
            f'<div class="llmlab-view" id="{self.element_id}">'
            f'<div class="llmlab-title"><b>{html.escape(self.title)}</b></div>'
            f'<label>{html.escape(self.label)} = <span class="llmlab-value">'
            f"{html.escape(self.values[self.initial])}</span> "
            f'<input type="range" class="llmlab-slider" min="0" max="{len(self.values) - 1}" '
            f'step="1" value="{self.initial}" aria-label="{html.escape(self.label)}" '
            'data-lm-suppress-shortcuts="true"></label>'
            f'<div class="llmlab-frame">{self.frames[self.initial]}</div>'
            f'<script type="application/json" class="llmlab-data">{data}</script>'
            f"<script>{_SCRIPT % {'id': self.element_id}}</script></div>"
        )


def slider_view(
    title: str, label: str, values: Sequence[Any], render: Callable[[Any], Any], initial: int = 0,
) -> SliderView:
    """Render ``render(value)`` for every value (HTML string or matplotlib figure) and
    return a view whose slider switches between them, live or on the static site."""
    if len(values) == 0:
        raise ValueError("slider_view needs at least one value")
    if not 0 <= initial < len(values):
        raise ValueError(f"initial must index values (0..{len(values) - 1}), got {initial}")
    frames = [to_html(render(value)) for value in tqdm(values, desc=title, leave=False)]
    return SliderView(title, label, [str(v) for v in values], frames, initial)


# --------------------------------------------------------------------------------------------
# bertviz views that need no network
#
# bertviz 1.4.1 returns HTML that loads require.js from cdnjs, then asks require.js for d3
# 5.7.0 and jQuery from cdnjs too: offline (a workshop room, the static site read without
# network) the view stays blank. The rewrite below inlines d3 and jQuery (installed once
# from npm, see llmlab.assets.jslibs) into the view itself instead of referencing copies served by
# the site: only an inlined view works in all three places, since a live JupyterLab or
# Colab output has no site to load files from. The cost is size: the two minified
# libraries add 323 KB to each view (d3 238 KB, jQuery 86 KB). The data often weighs more:
# MiniLM (6 layers x 12 heads) on 13 tokens is ~100 KB, a 30-layer, 9-head model on 20
# tokens ~0.9 MB (bertviz's include_layers trims it). Each library is evaluated as a
# CommonJS module inside the view's own scope, so it neither defines globals nor trips over
# a require.js that the page (the widget manager) already loaded: an anonymous AMD define()
# there would be a "Mismatched anonymous define()" error.

#: The files inlined into each view: npm path and its SHA-256 (checked before use).
BERTVIZ_LIBRARIES = {
    "jquery": ("jquery/dist/jquery.min.js",
               "05b85d96f41fff14d8f608dad03ab71e2c1017c2da0914d7c59291bad7a54f8e"),
    "d3": ("d3/dist/d3.min.js",
           "bdad5585ef9a965ff25458738309b006058c55f2c78d794d25fbecae35014609"),
}
_REQUIRE_TAG = re.compile(r"<script[^>]*\bsrc=[\"'][^\"']*require[^\"']*[\"'][^>]*>\s*</script>")
_REQUIRE_CONFIG = re.compile(r"require\.config\(\s*\{.*?\}\s*\);", re.DOTALL)
# bertviz substitutes its data for every "PYTHON_PARAMS", also the one in the comment that
# explains the marker: without that comment the view carries its data once, not twice.
_DATA_COMMENT = re.compile(r"(const params = .*?;)[ \t]*// HACK: .*$", re.MULTILINE)
_SCRIPT_START = re.compile(r"<script\b[^>]*>", re.IGNORECASE)
_LIBRARY_MODULE = """(function () {
  var module = {exports: {}}, exports = module.exports, define;
%s
  return module.exports;
})()"""
_OFFLINE_VIEW = """(function () {
  // d3 and jQuery from npm, inlined by llmlab.views.interactive.bertviz_view (no network needed).
  var libraries = {%s};
  function requirejs(names, callback) {
    callback.apply(null, names.map(function (name) { return libraries[name]; }));
  }
%s
})();"""


def _script_safe(code: str) -> str:
    """``code`` that cannot end or confuse the <script> element it is placed in (those
    character sequences can only occur inside strings, where the escape is harmless)."""
    return re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE).replace("<!--", "<\\!--")


def _bertviz_libraries() -> str:
    modules = []
    for name, (relative, sha256) in BERTVIZ_LIBRARIES.items():
        code = jslibs.read_file("bertviz", jslibs.BERTVIZ_PACKAGES, relative, sha256)
        modules.append(f"{json.dumps(name)}: {_LIBRARY_MODULE % _script_safe(code)}")
    return ", ".join(modules)


@dataclass
class HTMLView:
    """A self-contained piece of HTML that notebooks display as is (``_repr_html_``)."""

    # Not in the repr: the notebook would store the whole page twice (text/plain too).
    html: str = field(repr=False)

    def _repr_html_(self) -> str:
        return self.html


def bertviz_view(bertviz_html: Any) -> HTMLView:
    """bertviz's ``html_action="return"`` output (an ``IPython.display.HTML`` or its
    ``.data``) made self-contained: no require.js, d3 and jQuery inlined, nothing fetched.

    >>> bertviz_view("<p>no bertviz here</p>")
    Traceback (most recent call last):
    ...
    ValueError: not a bertviz view: expected bertviz's html_action="return" output (a \
require.js script tag, the view's markup, then one script that calls require.config and \
requirejs), got 22 characters with 0 require.js tags
    """
    source = getattr(bertviz_html, "data", bertviz_html)
    if not isinstance(source, str):
        raise TypeError(f"bertviz_view takes bertviz's HTML (a string or IPython HTML), got "
                        f"{type(bertviz_html).__name__}")
    tags = _REQUIRE_TAG.findall(source)
    rest = _REQUIRE_TAG.sub("", source, count=1)
    # The script runs to the *last* closing tag: bertviz does not escape its data, so a
    # token such as "</script>" appears verbatim inside it.
    start, end = _SCRIPT_START.search(rest), rest.lower().rfind("</script>")
    code = rest[start.end():end] if start and end > start.end() else ""
    if len(tags) != 1 or len(_REQUIRE_CONFIG.findall(code)) != 1 or "requirejs(" not in code:
        raise ValueError(
            "not a bertviz view: expected bertviz's html_action=\"return\" output (a "
            "require.js script tag, the view's markup, then one script that calls "
            f"require.config and requirejs), got {len(source)} characters with {len(tags)} "
            "require.js tags")
    body = _script_safe(_DATA_COMMENT.sub(r"\1", _REQUIRE_CONFIG.sub("", code)))
    script = _OFFLINE_VIEW % (_bertviz_libraries(), body)
    markup = rest[:start.start()].strip()
    return HTMLView(f'<div class="llmlab-bertviz">{markup}\n'
                    f'<script type="text/javascript">\n{script}\n</script></div>')


def attention_weights(attention: Any, n_tokens: int) -> Any:
    """Attention weights as one tensor ``(layers, heads, T, T)``, checked.

    Takes what models return: transformers' ``outputs.attentions`` (a tuple with one
    ``(1, heads, T, T)`` tensor per layer), a list of ``(heads, T, T)`` tensors, or one
    stacked tensor ``(layers, heads, T, T)`` or ``(layers, 1, heads, T, T)`` (like
    ``llmlab.model.GPT.attention_maps``). NumPy arrays work too. Every row must be a
    probability distribution over ``T = n_tokens`` positions.

    >>> import torch
    >>> uniform = torch.full((2, 1, 3, 4, 4), 0.25)  # 2 layers, 3 heads, 4 tokens
    >>> attention_weights(uniform, n_tokens=4).shape
    torch.Size([2, 3, 4, 4])
    >>> attention_weights(uniform, n_tokens=5)
    Traceback (most recent call last):
    ...
    ValueError: attention covers 4 x 4 positions but 5 tokens were given: pass the tokens \
of the same input the attention was computed on
    """
    import torch

    if attention is None or (isinstance(attention, (tuple, list)) and (
            len(attention) == 0 or any(layer is None for layer in attention))):
        raise ValueError(
            "no attention weights: run the model with output_attentions=True, and in "
            "transformers 5 load it with attn_implementation=\"eager\" in its config (the "
            "default sdpa attention returns none)")
    if isinstance(attention, (tuple, list)):
        layers = [torch.as_tensor(layer) for layer in attention]
        layers = [layer[0] if layer.dim() == 4 and layer.shape[0] == 1 else layer
                  for layer in layers]
        if any(layer.dim() != 3 for layer in layers) or len({lay.shape for lay in layers}) != 1:
            raise ValueError(
                "expected one (1, heads, T, T) or (heads, T, T) tensor per layer, all the "
                f"same shape, got shapes {[tuple(layer.shape) for layer in layers]}")
        weights = torch.stack(layers)
    else:
        weights = torch.as_tensor(attention)
        if weights.dim() == 5 and weights.shape[1] == 1:
            weights = weights[:, 0]
        if weights.dim() != 4:
            raise ValueError("expected attention of shape (layers, heads, T, T) or (layers, 1, "
                             f"heads, T, T), got {tuple(weights.shape)}: one sequence at a time")
    weights = weights.detach().to("cpu", torch.float64)
    if weights.shape[-1] != n_tokens or weights.shape[-2] != n_tokens:
        raise ValueError(
            f"attention covers {weights.shape[-2]} x {weights.shape[-1]} positions but "
            f"{n_tokens} tokens were given: pass the tokens of the same input the attention "
            "was computed on")
    sums = weights.sum(-1)
    if not torch.isfinite(weights).all() or weights.min() < 0 or not torch.allclose(
            sums, torch.ones_like(sums), atol=1e-3):
        raise ValueError(
            "attention rows must be probability distributions (non-negative, summing to 1); "
            f"row sums range from {sums.min().item():.3g} to {sums.max().item():.3g}: pass the "
            "weights after the softmax, not the scores")
    return weights


def attention_view(
    attention: Any, tokens: Sequence[str], kind: str = "head", decimals: int = 4,
    **bertviz_options: Any,
) -> HTMLView:
    """bertviz's ``"head"`` or ``"model"`` view of ``attention`` over ``tokens``, working
    live and on the static site with no network.

    ``attention`` is anything :func:`attention_weights` takes (e.g. transformers'
    ``outputs.attentions``); ``bertviz_options`` go to bertviz (``layer``, ``heads``,
    ``include_layers``, ``sentence_b_start``, ``display_mode``...). Weights are rounded
    to ``decimals`` places: invisible in the drawing, and it shrinks the embedded data
    about fourfold.

    >>> import torch
    >>> view = attention_view(torch.full((1, 2, 3, 3), 1 / 3), ["a", "b", "c"])
    >>> "cdnjs" in view.html, '"left_text": ["a", "b", "c"]' in view.html
    (False, True)
    """
    if kind not in ("head", "model"):
        raise ValueError(f'kind must be "head" or "model", got {kind!r}')
    if isinstance(tokens, str) or not all(isinstance(token, str) for token in tokens):
        raise TypeError("tokens must be a list of strings, one per position, got "
                        f"{type(tokens).__name__}")
    weights = attention_weights(attention, len(tokens)).round(decimals=decimals)
    from bertviz import head_view, model_view

    render = head_view if kind == "head" else model_view
    per_layer = [layer[None] for layer in weights]  # bertviz wants (1, heads, T, T) per layer
    return bertviz_view(render(per_layer, list(tokens), html_action="return", **bertviz_options))
