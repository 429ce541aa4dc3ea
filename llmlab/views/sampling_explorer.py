"""The sampling explorer: how temperature, top-k and top-p reshape a model's next-token
distribution, and what text comes out.

One prompt, three sliders. The bar chart shows the most likely next tokens twice: grey,
the distribution after temperature only; blue, what is left after the top-k and top-p cuts
(renormalised), which is what a sample is drawn from. Under it, a few sampled
continuations for the same setting.

- **Static** (default): every setting of a grid is computed up front with
  ``llmlab.decoding`` and embedded as JSON; a few lines of inline JavaScript switch between
  them as the sliders move. Nothing is fetched and no kernel is needed, so the view works
  in JupyterLab, in Colab and on the static site alike (the pattern of
  ``llmlab.views.interactive.slider_view``).
- **Live** (``live=True``): ipywidgets sliders; every change recomputes with the model
  (JupyterLab and Colab, a running kernel needed).

>>> grid = filter_grid(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), [1.0], [None, 1], [1.0], n_bars=3)
>>> [setting["kept"] for setting in grid["settings"]]  # top-k off keeps 4 tokens, k = 1 one
[4, 1]
>>> grid["settings"][1]["after"]
[1.0, 0.0, 0.0]
"""

from __future__ import annotations

import html
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llmlab.attention import KVCache
from llmlab.decoding import SamplingConfig, choose_next_token, process_logits
from llmlab.model import GPT, eval_mode

DEFAULT_TEMPERATURES = (0.3, 0.7, 1.0, 1.5, 2.5)
DEFAULT_TOP_KS: tuple[int | None, ...] = (None, 50, 10, 1)
DEFAULT_TOP_PS = (1.0, 0.95, 0.8, 0.5)
DECIMALS = 4  # probabilities are embedded rounded: invisible in a bar, 4x less data


# ----------------------------------------------------------------------------- the grid


def check_grid(
    temperatures: Sequence[float], top_ks: Sequence[int | None], top_ps: Sequence[float],
) -> None:
    """Fail early, naming the bad entry, if a slider's values are not valid settings.

    >>> check_grid([1.0, 0.0], [None], [1.0])
    Traceback (most recent call last):
    ...
    ValueError: temperatures[1] must be a finite number > 0 (greedy decoding is top-k = 1); got 0.0
    """
    for name, values in (("temperatures", temperatures), ("top_ks", top_ks), ("top_ps", top_ps)):
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{name} must be a non-empty list of values; got {values!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"{name} must not repeat a value; got {list(values)}")
    for i, t in enumerate(temperatures):
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < math.inf:
            raise ValueError(f"temperatures[{i}] must be a finite number > 0 (greedy decoding "
                             f"is top-k = 1); got {t!r}")
    for i, k in enumerate(top_ks):
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"top_ks[{i}] must be an int k >= 1, or None for no top-k cut; "
                             f"got {k!r}")
    for i, p in enumerate(top_ps):
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
            raise ValueError(f"top_ps[{i}] must be in (0, 1] (1 means no top-p cut); got {p!r}")


def settings(
    temperatures: Sequence[float], top_ks: Sequence[int | None], top_ps: Sequence[float],
) -> list[SamplingConfig]:
    """Every combination, temperature slowest and top-p fastest: setting number
    ``(t * len(top_ks) + k) * len(top_ps) + p`` (the order the page's script indexes)."""
    check_grid(temperatures, top_ks, top_ps)
    return [SamplingConfig(temperature=float(t), top_k=k, top_p=None if p == 1 else float(p))
            for t in temperatures for k in top_ks for p in top_ps]


def filter_grid(
    logits: torch.Tensor,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    top_ks: Sequence[int | None] = DEFAULT_TOP_KS,
    top_ps: Sequence[float] = DEFAULT_TOP_PS,
    n_bars: int = 12,
) -> dict[str, Any]:
    """The bar chart's data for every setting, from next-token ``logits (1, vocab)``.

    ``bars`` are the ``n_bars`` most likely token ids (the same for every setting:
    temperature keeps the order and the cuts keep a best-first prefix). Each setting gives
    ``before`` (softmax after temperature), ``after`` (after top-k and top-p, renormalised:
    the distribution a sample is drawn from, ``llmlab.decoding.process_logits``), ``kept``
    (how many tokens of the whole vocabulary survive the cuts) and ``mass`` (the
    probability those tokens had before the cut).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be one row of next-token scores (1, vocab); got {shape}")
    if not isinstance(n_bars, int) or not 1 <= n_bars <= logits.shape[-1]:
        raise ValueError(f"n_bars must be an int in [1, vocab={logits.shape[-1]}]; got {n_bars!r}")
    logits = logits.detach().float().cpu()
    bars = logits[0].topk(n_bars).indices
    empty_history = torch.zeros(1, 1, dtype=torch.long)  # no penalties: history is unused
    out = []
    for config in settings(temperatures, top_ks, top_ps):
        before = (logits / config.temperature).softmax(-1)[0]
        processed = process_logits(logits, empty_history, config)
        after = processed.softmax(-1)[0]
        survivors = torch.isfinite(processed[0])
        out.append({
            "before": [round(v, DECIMALS) for v in before[bars].tolist()],
            "after": [round(v, DECIMALS) for v in after[bars].tolist()],
            "kept": int(survivors.sum()),
            "mass": round(float(before[survivors].sum()), DECIMALS),
        })
    return {"bars": bars.tolist(), "settings": out}


# ----------------------------------------------------------------------------- the model


def next_token_logits(model: GPT, tokenizer: Any, prompt: str) -> tuple[torch.Tensor, list[int]]:
    """``model``'s scores for the token after ``prompt``, ``(1, vocab)``, and the prompt ids."""
    if not isinstance(model, GPT):
        raise ValueError(f"model must be an llmlab.model.GPT (GPT.from_hf converts a "
                         f"transformers model); got {type(model).__name__}")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string; got {prompt!r}")
    ids = list(tokenizer.encode(prompt))
    device = model.tok_emb.weight.device
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device))[:, -1]
    return logits.float().cpu(), ids


@torch.no_grad()
def sample_continuations(
    model: GPT,
    prompt_ids: Sequence[int],
    configs: Sequence[SamplingConfig],
    n_samples: int = 2,
    max_new_tokens: int = 10,
    seed: int = 0,
) -> list[list[list[int]]]:
    """``n_samples`` continuations of ``max_new_tokens`` tokens for each config:
    ``result[config][sample]`` is a list of token ids.

    All of them are generated together, one batched forward pass per token: the prompt is
    run once and its KV cache copied to every row, then each config's rows pick their next
    token with ``llmlab.decoding.choose_next_token`` (one seeded generator, so a rerun gives
    the same text).
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1; got {n_samples!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1; got {max_new_tokens!r}")
    weight = model.tok_emb.weight
    rows = len(configs) * n_samples
    prompt = torch.tensor([list(prompt_ids)], device=weight.device)
    cache = KVCache.allocate(model.config, 1, prompt.shape[1] + max_new_tokens, weight.dtype,
                             weight.device)
    with eval_mode(model):
        logits = model(prompt, cache=cache)[:, -1].expand(rows, -1)
        cache.reorder(torch.zeros(rows, dtype=torch.long, device=weight.device))
        ids = prompt.expand(rows, -1)
        generator = torch.Generator(device=weight.device).manual_seed(seed)
        for _ in range(max_new_tokens):
            chosen = [choose_next_token(logits[i * n_samples:(i + 1) * n_samples],
                                        ids[i * n_samples:(i + 1) * n_samples], config, generator)
                      for i, config in enumerate(configs)]
            next_ids = torch.cat(chosen)
            ids = torch.cat([ids, next_ids], dim=1)
            logits = model(next_ids, cache=cache)[:, -1]
    new = ids[:, prompt.shape[1]:].tolist()
    return [new[i * n_samples:(i + 1) * n_samples] for i in range(len(configs))]


def token_label(tokenizer: Any, token: int) -> str:
    """A token's text with its whitespace made visible (a leading space matters)."""
    text = tokenizer.decode([token])
    return text.replace(" ", "\u2423").replace("\n", "\u23ce").replace("\t", "\u21e5") or "\u2205"


# ----------------------------------------------------------------------------- the view

_STYLE = """
#%(id)s .llmlab-controls label {display: inline-block; margin-right: 1.2em}
#%(id)s .llmlab-row {display: flex; align-items: center; height: 1.35em; font-size: 0.85em}
#%(id)s .llmlab-token {width: 8em; text-align: right; padding-right: 0.5em; overflow: hidden;
  white-space: pre; font-family: monospace}
#%(id)s .llmlab-track {position: relative; flex: 1; max-width: 28em; height: 1.1em}
#%(id)s .llmlab-bar-before, #%(id)s .llmlab-bar-after {position: absolute; left: 0}
#%(id)s .llmlab-bar-before {top: 0; height: 1.1em; background: #d0d0d0}
#%(id)s .llmlab-bar-after {top: 0.25em; height: 0.6em; background: #1f77b4}
#%(id)s .llmlab-prob {width: 9em; padding-left: 0.5em; font-family: monospace}
#%(id)s .llmlab-samples li {white-space: pre-wrap; font-family: monospace; font-size: 0.85em}
"""

# The slider positions index the settings in the order of ``settings()``.
_SCRIPT = """
(function () {
  var root = document.getElementById("%(id)s");
  var data = JSON.parse(root.querySelector("script.llmlab-data").textContent);
  var sliders = ["temperature", "top-k", "top-p"].map(function (name) {
    return root.querySelector("input.llmlab-" + name);
  });
  function percent(p) { return (100 * p).toFixed(1) + "%%"; }
  function show() {
    var i = sliders.map(function (s) { return Number(s.value); });
    var n = data.sizes;
    var setting = data.settings[(i[0] * n[1] + i[1]) * n[2] + i[2]];
    root.querySelectorAll(".llmlab-setting-value").forEach(function (span, j) {
      span.textContent = data.labels[j][i[j]];
    });
    var scale = 100 / Math.max.apply(null, setting.before.concat(setting.after));
    root.querySelectorAll(".llmlab-row").forEach(function (row, b) {
      row.querySelector(".llmlab-bar-before").style.width = (scale * setting.before[b]) + "%%";
      row.querySelector(".llmlab-bar-after").style.width = (scale * setting.after[b]) + "%%";
      row.querySelector(".llmlab-prob").textContent =
        percent(setting.before[b]) + " \\u2192 " + percent(setting.after[b]);
    });
    root.querySelector(".llmlab-kept").textContent = setting.kept;
    root.querySelector(".llmlab-mass").textContent = percent(setting.mass);
    root.querySelectorAll(".llmlab-samples li").forEach(function (li, j) {
      li.textContent = setting.samples[j];
    });
  }
  sliders.forEach(function (s) { s.addEventListener("input", show); });
  show();
})();
"""


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%"


def render_setting(
    labels: Sequence[str], setting: dict[str, Any], prompt: str, element_id: str = "",
) -> str:
    """The chart, the counts and the samples of one setting, as HTML (no script): the
    static view's first frame, and the live view's whole output."""
    scale = 100 / max(max(setting["before"]), max(setting["after"]), 1e-12)
    rows = "".join(
        f'<div class="llmlab-row"><span class="llmlab-token">{html.escape(label)}</span>'
        f'<span class="llmlab-track"><span class="llmlab-bar-before" '
        f'style="width: {scale * before:.2f}%"></span><span class="llmlab-bar-after" '
        f'style="width: {scale * after:.2f}%"></span></span>'
        f'<span class="llmlab-prob">{_percent(before)} \u2192 {_percent(after)}</span></div>'
        for label, before, after in zip(labels, setting["before"], setting["after"], strict=True))
    samples = "".join(f"<li>{html.escape(text)}</li>" for text in setting["samples"])
    style = f"<style>{_STYLE % {'id': element_id}}</style>" if element_id else ""
    return (
        f'{style}<div class="llmlab-prompt">prompt: <code>{html.escape(prompt)}</code></div>'
        f'<div class="llmlab-chart">{rows}</div>'
        f'<div class="llmlab-summary">kept <b class="llmlab-kept">{setting["kept"]}</b> '
        f'tokens, holding <b class="llmlab-mass">{_percent(setting["mass"])}</b> of the '
        f"probability before the cut (grey: after temperature; blue: after top-k and top-p, "
        f"renormalised)</div>"
        f'<ol class="llmlab-samples">{samples}</ol>')


def _label_k(k: int | None) -> str:
    return "off" if k is None else str(k)


def _label_p(p: float) -> str:
    return "1 (off)" if p == 1 else f"{p:g}"


@dataclass
class SamplingExplorer:
    """The precomputed view: ``grid`` is ``filter_grid``'s result with each setting's
    ``samples`` (texts) added; ``_repr_html_`` is the self-contained page fragment."""

    prompt: str
    temperatures: list[float]
    top_ks: list[int | None]
    top_ps: list[float]
    labels: list[str]
    grid: dict[str, Any]
    initial: tuple[int, int, int] = (0, 0, 0)
    element_id: str = field(default_factory=lambda: f"llmlab-sampling-{uuid.uuid4().hex[:12]}")

    def setting(self, temperature: float, top_k: int | None, top_p: float) -> dict[str, Any]:
        """The embedded data of one setting of the grid."""
        try:
            t, k, p = (self.temperatures.index(temperature), self.top_ks.index(top_k),
                       self.top_ps.index(top_p))
        except ValueError:
            raise ValueError(f"({temperature}, {top_k}, {top_p}) is not on the grid: "
                             f"temperatures {self.temperatures}, top_ks {self.top_ks}, "
                             f"top_ps {self.top_ps}") from None
        return self.grid["settings"][(t * len(self.top_ks) + k) * len(self.top_ps) + p]

    def _slider(self, name: str, title: str, labels: list[str], index: int) -> str:
        return (f'<label>{title} = <span class="llmlab-setting-value">'
                f'{html.escape(labels[index])}</span> <input type="range" '
                f'class="llmlab-slider llmlab-{name}" min="0" max="{len(labels) - 1}" step="1" '
                f'value="{index}" aria-label="{title}"></label>')

    def _repr_html_(self) -> str:
        value_labels = [[f"{t:g}" for t in self.temperatures],
                        [_label_k(k) for k in self.top_ks],
                        [_label_p(p) for p in self.top_ps]]
        payload = {"sizes": [len(v) for v in value_labels], "labels": value_labels,
                   "settings": self.grid["settings"]}
        # "</" inside a <script> would end it early; JSON allows escaping the slash.
        data = json.dumps(payload, ensure_ascii=False).replace("</", "<\\/")
        t, k, p = self.initial
        first = self.grid["settings"][(t * len(self.top_ks) + k) * len(self.top_ps) + p]
        sliders = "".join(self._slider(name, title, labels, index) for name, title, labels, index
                          in zip(("temperature", "top-k", "top-p"),
                                 ("temperature", "top-k", "top-p"), value_labels, self.initial,
                                 strict=True))
        return (
            f'<div class="llmlab-sampling" id="{self.element_id}">'
            f'<div class="llmlab-title"><b>Sampling explorer</b></div>'
            f'<div class="llmlab-controls">{sliders}</div>'
            f"{render_setting(self.labels, first, self.prompt, self.element_id)}"
            f'<script type="application/json" class="llmlab-data">{data}</script>'
            f"<script>{_SCRIPT % {'id': self.element_id}}</script></div>")


def sampling_explorer(
    model: GPT,
    tokenizer: Any,
    prompt: str,
    *,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    top_ks: Sequence[int | None] = DEFAULT_TOP_KS,
    top_ps: Sequence[float] = DEFAULT_TOP_PS,
    n_bars: int = 12,
    n_samples: int = 2,
    max_new_tokens: int = 8,
    seed: int = 0,
    live: bool = False,
) -> Any:
    """The explorer for ``prompt``: a self-contained ``SamplingExplorer`` (every setting of
    the grid precomputed; works with no kernel) or, with ``live=True``, ipywidgets sliders
    that recompute with ``model`` at every change (a running kernel needed).

    ``top_ks`` may contain ``None`` (no top-k cut); a top-p of 1 means no top-p cut. The
    static grid's cost is one batched generation of ``n_samples`` rows per setting (the
    top-k = 1 settings share theirs: all are greedy) of ``max_new_tokens`` tokens; the
    default 80-setting grid is 122 rows of 8 tokens.
    """
    check_grid(temperatures, top_ks, top_ps)
    logits, prompt_ids = next_token_logits(model, tokenizer, prompt)
    if live:
        return _live_explorer(model, tokenizer, prompt, logits, prompt_ids, list(temperatures),
                              list(top_ks), list(top_ps), n_bars, n_samples, max_new_tokens, seed)
    grid = filter_grid(logits, temperatures, top_ks, top_ps, n_bars)
    configs = settings(temperatures, top_ks, top_ps)
    # Top-k = 1 is greedy whatever the temperature and top-p: generate that text once.
    distinct = [c for c in configs if c.top_k != 1] + [c for c in configs if c.top_k == 1][:1]
    samples = sample_continuations(model, prompt_ids, distinct, n_samples, max_new_tokens, seed)
    texts = [[tokenizer.decode(ids) for ids in rows] for rows in samples]
    for setting, config in zip(grid["settings"], configs, strict=True):
        setting["samples"] = texts[-1] if config.top_k == 1 else texts[distinct.index(config)]
    labels = [token_label(tokenizer, token) for token in grid["bars"]]
    initial = (list(temperatures).index(1.0) if 1.0 in temperatures else 0, 0, 0)
    return SamplingExplorer(prompt, list(temperatures), list(top_ks), list(top_ps), labels, grid,
                            initial)


def _live_explorer(
    model: GPT, tokenizer: Any, prompt: str, logits: torch.Tensor, prompt_ids: list[int],
    temperatures: list[float], top_ks: list[int | None], top_ps: list[float], n_bars: int,
    n_samples: int, max_new_tokens: int, seed: int,
) -> Any:
    import ipywidgets as widgets

    temperature = widgets.FloatSlider(value=1.0, min=min(0.05, *temperatures),
                                      max=max(2.5, *temperatures), step=0.05,
                                      description="temperature")
    # Option labels as values: a SelectionSlider cannot hold None (no top-k cut).
    k_options = ["off"] + [str(k) for k in sorted({k for k in top_ks if k}, reverse=True)]
    top_k = widgets.SelectionSlider(options=k_options, value="off", description="top-k")
    top_p = widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p")
    resample = widgets.Button(description="new samples")
    output = widgets.HTML()
    state = {"seed": seed}
    element_id = f"llmlab-sampling-{uuid.uuid4().hex[:12]}"
    labels = [token_label(tokenizer, t) for t in logits[0].topk(n_bars).indices.tolist()]

    def update(*_: Any) -> None:
        k = None if top_k.value == "off" else int(top_k.value)
        grid = filter_grid(logits, [temperature.value], [k], [top_p.value], n_bars)
        configs = settings([temperature.value], [k], [top_p.value])
        texts = sample_continuations(model, prompt_ids, configs, n_samples, max_new_tokens,
                                     state["seed"])[0]
        setting = {**grid["settings"][0], "samples": [tokenizer.decode(ids) for ids in texts]}
        output.value = (f'<div class="llmlab-sampling" id="{element_id}">'
                        f"{render_setting(labels, setting, prompt, element_id)}</div>")

    def new_samples(_: Any) -> None:
        state["seed"] += 1
        update()

    for slider in (temperature, top_k, top_p):
        slider.observe(update, names="value")
    resample.on_click(new_samples)
    update()
    return widgets.VBox([widgets.HBox([temperature, top_k, top_p, resample]), output])
