"""Interactive views that work in JupyterLab, in Colab and on the static site alike.

The kernel computes every state of the view up front (one frame per slider value) and the
cell's output is a self-contained piece of HTML: the frames are embedded as JSON and a
few lines of inline JavaScript swap them as the slider moves. Nothing is loaded from the
network and no kernel is needed to interact, so the executed page on the site behaves
exactly as it did in the notebook.

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
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

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
        return (
            f'<div class="llmlab-view" id="{self.element_id}">'
            f'<div class="llmlab-title"><b>{html.escape(self.title)}</b></div>'
            f'<label>{html.escape(self.label)} = <span class="llmlab-value">'
            f"{html.escape(self.values[self.initial])}</span> "
            f'<input type="range" class="llmlab-slider" min="0" max="{len(self.values) - 1}" '
            f'step="1" value="{self.initial}" aria-label="{html.escape(self.label)}"></label>'
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
