"""The attention explorer: pick a sentence, a layer and a head, hover over a token (click
to pin it) and see what it attends to, as shaded tokens and as the head's full heatmap.

Two versions of one view:

- static (the default): every sentence, layer and head is computed up front and embedded
  in a self-contained piece of HTML (compact JSON, inline JavaScript, no network, no
  kernel), so it works in JupyterLab, in Colab and on the static site alike;
- live (``live=True``): ipywidgets that run the model again on any sentence the learner
  types; it needs a kernel.

>>> import torch
>>> uniform = torch.full((2, 3, 4, 4), 0.25)              # 2 layers, 3 heads, 4 tokens
>>> view = attention_explorer([uniform], None, [["a", "b", "c", "d"]])
>>> view.n_layers, view.n_heads, view.weight(sentence=0, layer=1, head=2, query=3, key=0)
(2, 3, 0.25)
>>> "http" in view._repr_html_()
False
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llmlab.views.interactive import attention_weights

__all__ = ["AttentionExplorer", "attention_explorer", "display_token", "model_attention",
           "render_focus"]

# The shading: white for weight 0 to a saturated blue for weight 1 (kept in step with the
# JavaScript's shade()).
_RGB = (33, 113, 181)

_STYLE = """
#%(id)s .llmlab-controls label { margin-right: 1.2em; white-space: nowrap; }
#%(id)s .llmlab-tokens { margin: 0.6em 0; line-height: 2.1; }
#%(id)s .llmlab-token { display: inline-block; padding: 0 3px; margin: 1px;
  border: 1px solid #bbb; line-height: 1.6;
  border-radius: 3px; white-space: pre; cursor: pointer; font-family: monospace;
  color: #111; }
#%(id)s .llmlab-token.llmlab-focus { outline: 2px solid #d62728; }
#%(id)s .llmlab-detail { font-size: 0.9em; margin-bottom: 0.5em; min-height: 1.4em; }
#%(id)s table.llmlab-heatmap { border-collapse: collapse; font-size: 11px;
  font-family: monospace; }
#%(id)s table.llmlab-heatmap td { width: 15px; height: 15px; padding: 0;
  border: 1px solid #eee; }
#%(id)s table.llmlab-heatmap th { font-weight: normal; padding: 0 4px; white-space: pre;
  color: inherit; }
#%(id)s table.llmlab-heatmap thead th { writing-mode: vertical-rl; vertical-align: bottom; }
#%(id)s table.llmlab-heatmap tr.llmlab-focus-row th { color: #d62728; font-weight: bold; }
"""

_SCRIPT = """
(function () {
  var root = document.getElementById("%(id)s");
  var data = JSON.parse(root.querySelector("script.llmlab-data").textContent);
  var sentence = root.querySelector("select.llmlab-sentence");
  var layer = root.querySelector("input.llmlab-layer");
  var head = root.querySelector("input.llmlab-head");
  var tokensBox = root.querySelector(".llmlab-tokens");
  var detail = root.querySelector(".llmlab-detail");
  var heatmap = root.querySelector("table.llmlab-heatmap");
  var scale = Math.pow(10, data.decimals);
  var focus = null, pinned = false, spans = [], rows = [];

  function tokens() { return data.tokens[Number(sentence.value)]; }
  function weight(query, key) {
    // Rows are stored without their trailing zeros (a causal model's future keys).
    var row = data.weights[Number(sentence.value)][Number(layer.value)][Number(head.value)][query];
    return key < row.length ? row[key] / scale : 0;
  }
  function shade(w) {
    return "rgba(%(rgb)s, " + Math.min(1, Math.max(0, w)).toFixed(3) + ")";
  }
  function setFocus(index, pin) {
    if (pin) { pinned = !(pinned && focus === index); }
    if (pin || !pinned) { focus = index; paint(); }
  }
  function build() {
    var toks = tokens();
    tokensBox.textContent = ""; heatmap.textContent = ""; spans = []; rows = [];
    var headRow = document.createElement("tr");
    headRow.appendChild(document.createElement("th"));
    toks.forEach(function (tok, j) {
      var span = document.createElement("span");
      span.className = "llmlab-token";
      span.textContent = tok;
      span.setAttribute("data-index", j);
      span.addEventListener("mouseenter", function () { setFocus(j, false); });
      span.addEventListener("click", function () { setFocus(j, true); });
      tokensBox.appendChild(span); spans.push(span);
      var th = document.createElement("th"); th.textContent = tok; headRow.appendChild(th);
    });
    var thead = document.createElement("thead"); thead.appendChild(headRow);
    var tbody = document.createElement("tbody");
    toks.forEach(function (tok, i) {
      var tr = document.createElement("tr"), th = document.createElement("th");
      th.textContent = tok; tr.appendChild(th);
      toks.forEach(function () { tr.appendChild(document.createElement("td")); });
      tr.addEventListener("mouseenter", function () { setFocus(i, false); });
      tr.addEventListener("click", function () { setFocus(i, true); });
      tbody.appendChild(tr); rows.push(tr);
    });
    heatmap.appendChild(thead); heatmap.appendChild(tbody);
    if (focus === null || focus >= toks.length) { focus = toks.length - 1; pinned = false; }
  }
  function paint() {
    var toks = tokens();
    root.querySelector(".llmlab-layer-value").textContent = layer.value;
    root.querySelector(".llmlab-head-value").textContent = head.value;
    spans.forEach(function (span, j) {
      var w = weight(focus, j);
      span.style.backgroundColor = shade(w);
      span.style.color = w > 0.55 ? "#fff" : "#111";
      span.title = "weight " + w.toFixed(data.decimals);
      span.classList.toggle("llmlab-focus", j === focus);
    });
    rows.forEach(function (tr, i) {
      tr.classList.toggle("llmlab-focus-row", i === focus);
      Array.prototype.forEach.call(tr.querySelectorAll("td"), function (td, j) {
        var w = weight(i, j);
        td.style.backgroundColor = shade(w);
        td.title = toks[i] + " \\u2192 " + toks[j] + ": " + w.toFixed(data.decimals);
      });
    });
    var ranked = toks.map(function (tok, j) { return [weight(focus, j), j]; })
      .sort(function (a, b) { return b[0] - a[0]; }).slice(0, 3);
    detail.textContent = (pinned ? "pinned " : "") + "\\u201c" + toks[focus] +
      "\\u201d (position " + focus + ") attends most to: " + ranked.map(function (r) {
        return "\\u201c" + toks[r[1]] + "\\u201d (" + r[1] + ") " + r[0].toFixed(data.decimals);
      }).join(", ");
  }
  sentence.addEventListener("change", function () { focus = null; build(); paint(); });
  layer.addEventListener("input", paint);
  head.addEventListener("input", paint);
  build(); paint();
})();
"""


def display_token(token: str) -> str:
    """A token as the explorer shows it: line breaks and tabs made visible.

    >>> display_token("\\n\\tx")
    '↵⇥x'
    """
    return token.replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


def _encode(tokenizer: Any, sentence: str) -> list[int]:
    if not isinstance(sentence, str) or not sentence:
        raise ValueError(f"a sentence must be a non-empty string; got {sentence!r}")
    if not callable(getattr(tokenizer, "encode", None)) or not callable(
            getattr(tokenizer, "decode", None)):
        raise TypeError("tokenizer must have encode(text) -> ids and decode(ids) -> text (a "
                        f"transformers or llmlab tokenizer); got {type(tokenizer).__name__}")
    ids = list(tokenizer.encode(sentence))
    if not ids:
        raise ValueError(f"the tokenizer gave no tokens for {sentence!r}")
    return [int(i) for i in ids]


def model_attention(model: Any, tokenizer: Any, sentence: str) -> tuple[torch.Tensor, list[str]]:
    """Attention weights ``(layers, heads, T, T)`` of ``model`` on ``sentence`` and its
    ``T`` tokens as text.

    ``model`` is an ``llmlab.model.GPT`` (its ``attention_maps``) or a transformers model
    (``output_attentions=True``; in transformers 5 load it with
    ``attn_implementation="eager"``). ``tokenizer.encode`` gives the ids (with the special
    tokens a transformers tokenizer adds, such as BERT's ``[CLS]``/``[SEP]``); each token
    is shown as ``tokenizer.decode([id])``.
    """
    ids = _encode(tokenizer, sentence)
    parameter = next(iter(model.parameters()), None)
    idx = torch.tensor([ids], device=parameter.device if parameter is not None else None)
    with torch.no_grad():
        if callable(getattr(model, "attention_maps", None)):
            attention = model.attention_maps(idx)  # (layers, 1, heads, T, T)
        else:
            attention = model(input_ids=idx, output_attentions=True).attentions
    tokens = [display_token(tokenizer.decode([i])) for i in ids]
    return attention_weights(attention, len(tokens)).float(), tokens


def _compact(weights: torch.Tensor, decimals: int) -> list:
    """``(layers, heads, T, T)`` -> nested lists of integers in units of ``10**-decimals``,
    each row without its trailing zeros (a causal model's future keys cost nothing)."""
    scaled = torch.round(weights.double() * 10**decimals).to(torch.int64).tolist()
    for layer in scaled:
        for head in layer:
            for i, row in enumerate(head):
                end = len(row)
                while end > 1 and row[end - 1] == 0:
                    end -= 1
                head[i] = row[:end]
    return scaled


@dataclass
class AttentionExplorer:
    """The static explorer's state: one label, token list and weight array per sentence.

    ``weights[s][layer][head][query]`` is a row of integers in units of
    ``10**-decimals`` without its trailing zeros; :meth:`weight` reads one back.
    """

    title: str
    labels: list[str]
    # Out of the repr: notebooks store it as the output's text/plain next to the HTML.
    tokens: list[list[str]] = field(repr=False)
    weights: list[list] = field(repr=False)
    decimals: int
    n_layers: int
    n_heads: int
    initial: tuple[int, int, int] = (0, 0, 0)  # sentence, layer, head
    element_id: str = field(
        default_factory=lambda: f"llmlab-attention-{uuid.uuid4().hex[:12]}")

    def weight(self, sentence: int, layer: int, head: int, query: int, key: int) -> float:
        """The embedded (rounded) weight from ``query`` to ``key``."""
        row = self.weights[sentence][layer][head][query]
        return row[key] / 10**self.decimals if key < len(row) else 0.0

    def data_json(self) -> str:
        """The embedded data, safe inside a <script> element (``</`` is escaped)."""
        data = {"tokens": self.tokens, "weights": self.weights, "decimals": self.decimals}
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")

    def _repr_html_(self) -> str:
        sentence, layer, head = self.initial
        options = "".join(
            f'<option value="{i}"{" selected" if i == sentence else ""}>'
            f"{html.escape(label)}</option>" for i, label in enumerate(self.labels))
        tokens = "".join(f'<span class="llmlab-token">{html.escape(t)}</span>'
                         for t in self.tokens[sentence])  # shown until the script runs

        def slider(name: str, top: int, value: int) -> str:
            return (f'<label>{name} <input type="range" class="llmlab-{name}" min="0" '
                    f'max="{top}" step="1" value="{value}" aria-label="{name}"> '
                    f'<span class="llmlab-{name}-value">{value}</span></label>')

        substitutions = {"id": self.element_id, "rgb": ", ".join(map(str, _RGB))}
        return (
            f'<div class="llmlab-attention-explorer" id="{self.element_id}">'
            f"<style>{_STYLE % substitutions}</style>"
            f'<div class="llmlab-title"><b>{html.escape(self.title)}</b></div>'
            f'<div class="llmlab-controls"><label>sentence <select class="llmlab-sentence" '
            f'aria-label="sentence">{options}</select></label>'
            f"{slider('layer', self.n_layers - 1, layer)}"
            f"{slider('head', self.n_heads - 1, head)}</div>"
            f'<div class="llmlab-tokens">{tokens}</div>'
            '<div class="llmlab-detail">hover over a token to see what it attends to; '
            "click to pin it</div>"
            '<table class="llmlab-heatmap" aria-label="attention weights: rows read columns">'
            "</table>"
            f'<script type="application/json" class="llmlab-data">{self.data_json()}</script>'
            f"<script>{_SCRIPT % substitutions}</script></div>"
        )


def _check_index(name: str, value: Any, size: int) -> int:
    if type(value) is not int or not 0 <= value < size:
        raise ValueError(f"{name} must be an int in 0..{size - 1}; got {value!r}")
    return value


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, torch.nn.Module)


def attention_explorer(
    model_or_weights: Any,
    tokenizer: Any,
    sentences: Sequence[str] | Sequence[Sequence[str]],
    *,
    layer: int = 0,
    head: int = 0,
    live: bool = False,
    decimals: int = 2,
    max_tokens: int = 16,
    title: str = "Attention explorer",
) -> Any:
    """An attention explorer for ``sentences``: choose sentence, layer and head; hover over a
    token (click to pin) to see what it attends to.

    Give either a model and its tokenizer with sentences as strings (see
    :func:`model_attention`), or precomputed weights: one attention per sentence (anything
    ``llmlab.views.interactive.attention_weights`` takes, e.g. transformers' ``attentions``),
    ``tokenizer=None`` and each sentence as its list of tokens.

    The static view (default) embeds every weight rounded to ``decimals`` places; each
    sentence may have at most ``max_tokens`` tokens, which keeps the page small (4
    sentences of 16 tokens in a 30-layer, 9-head model: a few hundred KB). ``live=True``
    returns ipywidgets instead that recompute with the model for a sentence typed in a
    text box (needs a model and a kernel; no token limit).
    """
    if isinstance(sentences, str) or len(sentences) == 0:
        raise ValueError("sentences must be a non-empty list (of strings with a model, of "
                         f"token lists with precomputed weights); got {sentences!r}")
    if type(decimals) is not int or not 1 <= decimals <= 4:
        raise ValueError(f"decimals must be an int from 1 to 4; got {decimals!r}")
    if live:
        if not _is_model(model_or_weights) or tokenizer is None:
            raise ValueError("live=True recomputes attention, so it needs a model (a "
                             "torch.nn.Module) and its tokenizer, not precomputed weights")
        return _live_explorer(model_or_weights, tokenizer, list(sentences), layer, head,
                             decimals, title)
    if _is_model(model_or_weights):
        if tokenizer is None:
            raise ValueError("with a model, pass its tokenizer too (to turn the sentences "
                             "into ids and the ids back into tokens)")
        computed = [model_attention(model_or_weights, tokenizer, s) for s in sentences]
        all_weights, all_tokens = [w for w, _ in computed], [t for _, t in computed]
        labels = [str(s) for s in sentences]
    else:
        all_weights, all_tokens, labels = _precomputed(model_or_weights, tokenizer, sentences)
    for i, tokens in enumerate(all_tokens):
        if len(tokens) > max_tokens:
            raise ValueError(
                f"sentence {i} has {len(tokens)} tokens; the static explorer embeds at most "
                f"max_tokens={max_tokens} per sentence to keep the page small: shorten it, "
                "raise max_tokens or use live=True")
    shapes = {tuple(w.shape[:2]) for w in all_weights}
    if len(shapes) != 1:
        raise ValueError(f"every sentence must come from the same model (same layers and "
                         f"heads); got (layers, heads) {sorted(shapes)}")
    n_layers, n_heads = shapes.pop()
    initial = (0, _check_index("layer", layer, n_layers), _check_index("head", head, n_heads))
    return AttentionExplorer(title, labels, all_tokens,
                             [_compact(w, decimals) for w in all_weights], decimals,
                             n_layers, n_heads, initial)


def _precomputed(
    weights: Any, tokenizer: Any, sentences: Sequence[Any]
) -> tuple[list[torch.Tensor], list[list[str]], list[str]]:
    if tokenizer is not None:
        raise ValueError("with precomputed weights pass tokenizer=None and each sentence as "
                         "its list of tokens (the tokens the weights were computed on)")
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence):
        raise ValueError("model_or_weights must be a model (torch.nn.Module) or a list with "
                         f"one attention per sentence; got {type(weights).__name__}")
    if len(weights) != len(sentences):
        raise ValueError(f"got {len(weights)} attentions for {len(sentences)} sentences: give "
                         "one attention per sentence")
    all_weights, all_tokens = [], []
    for i, (attention, tokens) in enumerate(zip(weights, sentences, strict=True)):
        if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"sentence {i}: with precomputed weights each sentence must be "
                             f"its list of tokens (strings); got {tokens!r}")
        try:
            all_weights.append(attention_weights(attention, len(tokens)).float())
        except ValueError as error:
            raise ValueError(f"sentence {i}: {error}") from None
        all_tokens.append([display_token(t) for t in tokens])
    labels = [" ".join(t)[:60] for t in all_tokens]
    return all_weights, all_tokens, labels


# --------------------------------------------------------------------------------------------
# Live: ipywidgets, recomputing with the model. The view is drawn in Python (HTML with inline
# styles) rather than by the static view's script, since an HTML widget does not run scripts.


def _shade(weight: float) -> str:
    return f"rgba({', '.join(map(str, _RGB))}, {min(1.0, max(0.0, weight)):.3f})"


def render_focus(tokens: Sequence[str], matrix: torch.Tensor, focus: int,
                 decimals: int = 2) -> str:
    """HTML of one head for one reading token ``focus``: the tokens shaded by the weight
    ``focus`` gives them, a line naming the three largest, and the head's heatmap
    ``matrix (T, T)`` (rows read columns) with the focus row marked.

    >>> html_text = render_focus(["a", "b"], torch.tensor([[1.0, 0.0], [0.25, 0.75]]), 1)
    >>> "0.75" in html_text and "llmlab-token" in html_text
    True
    """
    T = len(tokens)
    _check_index("focus", focus, T)
    row = matrix[focus].tolist()
    spans = "".join(
        f'<span class="llmlab-token" title="weight {w:.{decimals}f}" style="background:'
        f"{_shade(w)};color:{'#fff' if w > 0.55 else '#111'};display:inline-block;"
        f"padding:0 3px;margin:1px;line-height:1.6;"
        f"border:1px solid {'#d62728' if j == focus else '#bbb'};border-radius:3px;"
        f'white-space:pre;font-family:monospace">{html.escape(tok)}</span>'
        for j, (tok, w) in enumerate(zip(tokens, row, strict=True)))
    best = sorted(range(T), key=lambda j: -row[j])[:3]
    detail = ", ".join(f"“{html.escape(tokens[j])}” ({j}) {row[j]:.{decimals}f}" for j in best)
    cell = "width:15px;height:15px;padding:0;border:1px solid #eee"
    header = "".join(f'<th style="writing-mode:vertical-rl;font-weight:normal;white-space:pre">'
                     f"{html.escape(t)}</th>" for t in tokens)
    body = "".join(
        f'<tr><th style="font-weight:{"bold" if i == focus else "normal"};white-space:pre;'
        f'text-align:right">{html.escape(tokens[i])}</th>'
        + "".join(f'<td title="{float(w):.{decimals}f}" style="{cell};background:'
                  f'{_shade(float(w))}"></td>' for w in matrix[i].tolist())
        + "</tr>" for i in range(T))
    return (f'<div style="line-height:2.1">{spans}</div>'
            f'<div class="llmlab-detail">“{html.escape(tokens[focus])}” (position {focus}) '
            f"attends most to: {detail}</div>"
            f'<table class="llmlab-heatmap" style="border-collapse:collapse;font-size:11px;'
            f'font-family:monospace"><thead><tr><th></th>{header}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _live_explorer(model: Any, tokenizer: Any, sentences: list[str], layer: int, head: int,
                   decimals: int, title: str) -> Any:
    import ipywidgets as widgets

    if not all(isinstance(s, str) for s in sentences):
        raise ValueError("with a model the sentences must be strings")
    computed: dict[str, tuple[torch.Tensor, list[str]]] = {}

    def attention_of(sentence: str) -> tuple[torch.Tensor, list[str]]:
        if sentence not in computed:
            computed[sentence] = model_attention(model, tokenizer, sentence)
        return computed[sentence]

    weights, tokens = attention_of(sentences[0])
    n_layers, n_heads = weights.shape[:2]
    examples = widgets.Dropdown(options=sentences, value=sentences[0], description="example")
    text = widgets.Text(value=sentences[0], continuous_update=False, description="sentence",
                        layout=widgets.Layout(width="90%"))
    layer_slider = widgets.IntSlider(value=_check_index("layer", layer, n_layers), min=0,
                                     max=n_layers - 1, description="layer")
    head_slider = widgets.IntSlider(value=_check_index("head", head, n_heads), min=0,
                                    max=n_heads - 1, description="head")
    focus = widgets.Dropdown(description="token")
    view = widgets.HTML()

    def set_tokens(new_tokens: list[str]) -> None:
        focus.options = [(f"{i}: {t}", i) for i, t in enumerate(new_tokens)]
        focus.value = len(new_tokens) - 1

    def redraw(_: Any = None) -> None:
        weights, tokens = attention_of(text.value)
        if focus.value is None or focus.value >= len(tokens):
            return
        view.value = render_focus(tokens, weights[layer_slider.value, head_slider.value],
                                  focus.value, decimals)

    def new_sentence(_: Any = None) -> None:
        try:
            set_tokens(attention_of(text.value)[1])
        except ValueError as error:  # an empty sentence, say: show why instead of failing
            view.value = f"<pre>{html.escape(str(error))}</pre>"
            return
        redraw()

    examples.observe(lambda change: setattr(text, "value", change["new"]), names="value")
    text.observe(new_sentence, names="value")
    for control in (layer_slider, head_slider, focus):
        control.observe(redraw, names="value")
    set_tokens(tokens)
    redraw()
    box = widgets.VBox([widgets.HTML(f"<b>{html.escape(title)}</b> (live: type a sentence "
                                     "and press Enter)"), examples, text,
                        widgets.HBox([layer_slider, head_slider, focus]), view])
    box.add_class("llmlab-attention-live")
    return box
