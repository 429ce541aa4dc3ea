"""The sampling explorer without a browser: the view is self-contained, carries its data,
the embedded distributions are exactly what llmlab.decoding computes on the same logits,
the samples are what its sampler draws, and a bad grid is refused early."""

from __future__ import annotations

import json
import re
from html import escape as html_escape

import pytest
import torch

from llmlab import decoding
from llmlab.model import GPT, ModelConfig
from llmlab.views import sampling_explorer as sampling

VOCAB = 40
GRID = dict(temperatures=[0.5, 1.0, 2.0], top_ks=[None, 5, 1], top_ps=[1.0, 0.9, 0.3])


class CharTokenizer:
    """Token i is the character chr(first + i); a few ids decode to HTML-sensitive text."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) - 97 for c in text]

    def decode(self, ids) -> str:
        special = {36: "</script>", 37: " ", 38: "<b>", 39: "\n"}
        return "".join(special.get(i, chr(97 + i)) for i in ids)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    config = ModelConfig.llama_style(vocab_size=VOCAB, n_layer=2, n_head=4, n_kv_head=2,
                                     d_model=32, context_length=64)
    model = GPT(config).eval()
    with torch.no_grad():  # a peaked distribution, like a trained model's, so the cuts bite
        model.lm_head.weight.mul_(5)  # tied: the embeddings grow too
    return model


@pytest.fixture(scope="module")
def explorer(model):
    return sampling.sampling_explorer(model, CharTokenizer(), "abcab", n_bars=8, n_samples=3,
                                      max_new_tokens=6, **GRID)


def embedded(html: str) -> dict:
    match = re.search(r'<script type="application/json" class="llmlab-data">(.*?)</script>',
                      html, re.DOTALL)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def test_view_is_self_contained(explorer):
    html = explorer._repr_html_()
    assert not re.search(r"https?://", html), "the view references the network"
    assert not re.search(r"<script[^>]*\bsrc=", html) and "<link" not in html
    assert html.count(f'id="{explorer.element_id}"') == 1
    assert f'document.getElementById("{explorer.element_id}")' in html
    for name in ("temperature", "top-k", "top-p"):
        slider = rf'<input type="range" class="llmlab-slider llmlab-{name}"'
        assert len(re.findall(slider, html)) == 1
    # A token or a sample reading "</script>" must not end the data block early.
    assert html.lower().count("</script") == 2  # the data block's and the script's own
    assert html.count('class="llmlab-row"') == 8


def test_embedded_data_is_every_setting_in_slider_order(explorer):
    data = embedded(explorer._repr_html_())
    assert data["sizes"] == [3, 3, 3]
    assert data["labels"] == [["0.5", "1", "2"], ["off", "5", "1"], ["1 (off)", "0.9", "0.3"]]
    assert len(data["settings"]) == 27
    for t, temperature in enumerate(GRID["temperatures"]):
        for k, top_k in enumerate(GRID["top_ks"]):
            for p, top_p in enumerate(GRID["top_ps"]):
                index = (t * 3 + k) * 3 + p  # what the page's script computes
                assert data["settings"][index] == explorer.setting(temperature, top_k, top_p)


def test_embedded_filtering_equals_llmlab_decoding(model, explorer):
    logits, _ = sampling.next_token_logits(model, CharTokenizer(), "abcab")
    bars = logits[0].topk(8).indices
    assert explorer.grid["bars"] == bars.tolist()
    history = torch.zeros(1, 1, dtype=torch.long)
    cuts_bite = False
    for temperature in GRID["temperatures"]:
        for top_k in GRID["top_ks"]:
            for top_p in GRID["top_ps"]:
                setting = explorer.setting(temperature, top_k, top_p)
                tempered = decoding.apply_temperature(logits, temperature)
                cut = tempered
                if top_k is not None:
                    cut = decoding.top_k_filter(cut, top_k)
                if top_p < 1:
                    cut = decoding.top_p_filter(cut, top_p)
                config = decoding.SamplingConfig(temperature=temperature, top_k=top_k,
                                                 top_p=top_p)
                assert torch.equal(cut, decoding.process_logits(logits, history, config))
                before, after = tempered.softmax(-1)[0], cut.softmax(-1)[0]
                assert setting["before"] == pytest.approx(before[bars].tolist(), abs=1e-4)
                assert setting["after"] == pytest.approx(after[bars].tolist(), abs=1e-4)
                assert setting["kept"] == int(torch.isfinite(cut).sum())
                assert setting["mass"] == pytest.approx(
                    before[torch.isfinite(cut[0])].sum().item(), abs=1e-4)
                cuts_bite |= 1 < setting["kept"] < VOCAB
    assert cuts_bite, "the test logits never made a cut keep some but not all tokens"
    assert explorer.setting(1.0, 1, 1.0)["kept"] == 1


def test_samples_are_what_llmlab_decoding_draws(model, explorer):
    configs = sampling.settings(**GRID)
    ids = CharTokenizer().encode("abcab")
    again = sampling.sample_continuations(model, ids, configs, n_samples=3, max_new_tokens=6)
    greedy = decoding.generate(model, torch.tensor([ids]), 6)[0, len(ids):].tolist()
    for config, rows in zip(configs, again, strict=True):
        assert len(rows) == 3 and all(len(row) == 6 for row in rows)
        if config.top_k == 1:
            assert rows == [greedy] * 3
            samples = explorer.setting(config.temperature, 1, config.top_p or 1.0)["samples"]
            assert samples == [CharTokenizer().decode(greedy)] * 3
        if config.top_k == 5:  # every sampled token is one of the 5 best at its step
            for row in rows:
                history = torch.tensor([ids + row])
                with torch.no_grad():
                    step_logits = model(history)[0, len(ids) - 1:-1]
                best5 = step_logits.topk(5, dim=-1).indices
                assert all(token in best5[i].tolist() for i, token in enumerate(row))
    # Seeded: the same call gives the same texts; another seed gives others.
    assert sampling.sample_continuations(model, ids, configs, 3, 6) == again
    assert sampling.sample_continuations(model, ids, configs, 3, 6, seed=1) != again


def test_first_frame_is_rendered_without_script(explorer):
    html = explorer._repr_html_()
    first = explorer.setting(1.0, None, 1.0)  # temperature 1 is the initial position
    assert 'class="llmlab-slider llmlab-temperature" min="0" max="2" step="1" value="1"' in html
    assert f'<b class="llmlab-kept">{first["kept"]}</b>' in html
    for sample in first["samples"]:
        assert html_escape(sample) in html


@pytest.mark.parametrize("grid, message", [
    (dict(temperatures=[1.0, 0.0]), r"temperatures\[1\] must be a finite number > 0"),
    (dict(temperatures=[-0.5]), r"temperatures\[0\] must be a finite number > 0"),
    (dict(temperatures=[float("inf")]), r"temperatures\[0\] must be a finite"),
    (dict(top_ks=[None, 0]), r"top_ks\[1\] must be an int k >= 1"),
    (dict(top_ks=[2.5]), r"top_ks\[0\] must be an int k >= 1"),
    (dict(top_ps=[0.0]), r"top_ps\[0\] must be in \(0, 1\]"),
    (dict(top_ps=[0.5, 1.2]), r"top_ps\[1\] must be in \(0, 1\]"),
    (dict(top_ps=[]), "top_ps must be a non-empty list"),
    (dict(top_ks=[5, 5]), "must not repeat"),
])
def test_invalid_grids_are_refused_clearly(model, grid, message):
    with pytest.raises(ValueError, match=message):
        sampling.sampling_explorer(model, CharTokenizer(), "abc", **grid)
    with pytest.raises(ValueError, match=message):
        sampling.filter_grid(torch.zeros(1, VOCAB), **{**GRID, **grid})


def test_other_bad_input_is_refused(model):
    with pytest.raises(ValueError, match=r"logits must be one row .* got \(2, 40\)"):
        sampling.filter_grid(torch.zeros(2, VOCAB))
    with pytest.raises(ValueError, match=r"n_bars must be an int in \[1, vocab=40\]"):
        sampling.filter_grid(torch.zeros(1, VOCAB), n_bars=41)
    with pytest.raises(ValueError, match="prompt must be a non-empty string"):
        sampling.sampling_explorer(model, CharTokenizer(), "")
    with pytest.raises(ValueError, match="model must be an llmlab.model.GPT"):
        sampling.sampling_explorer(object(), CharTokenizer(), "abc")


def test_live_explorer_recomputes_when_a_slider_moves(model):
    pytest.importorskip("ipywidgets")
    view = sampling.sampling_explorer(model, CharTokenizer(), "abcab", live=True, n_bars=5,
                                      max_new_tokens=4)
    temperature, top_k, top_p, _ = view.children[0].children
    output = view.children[1]
    assert output.value.count('class="llmlab-row"') == 5
    assert f'<b class="llmlab-kept">{VOCAB}</b>' in output.value
    assert top_k.options == ("off", "50", "10", "1")
    top_k.value = "1"
    assert '<b class="llmlab-kept">1</b>' in output.value
    greedy = decoding.generate(model, torch.tensor([CharTokenizer().encode("abcab")]), 4)
    text = CharTokenizer().decode(greedy[0, 5:].tolist())
    assert output.value.count(f"<li>{html_escape(text)}</li>") == 2


def test_view_responds_to_its_sliders_in_a_browser(explorer):
    """Straight from llmlab (no site, every request refused): moving the sliders changes
    the shown setting, the bars, the counts and the samples to the embedded ones."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.route("**/*", lambda route: (problems.append(route.request.url), route.abort()))
        page.set_content(f"<html><body>{explorer._repr_html_()}</body></html>")
        view = page.locator(".llmlab-sampling")

        def shown() -> tuple[list[str], str, list[str], list[str]]:
            return (view.locator(".llmlab-setting-value").all_text_contents(),
                    view.locator(".llmlab-kept").inner_text(),
                    [bar.evaluate("e => e.style.width")
                     for bar in view.locator(".llmlab-bar-after").all()],
                    view.locator(".llmlab-samples li").all_text_contents())

        labels, kept, _, samples = shown()
        assert labels == ["1", "off", "1 (off)"]
        assert kept == str(explorer.setting(1.0, None, 1.0)["kept"])
        assert samples == explorer.setting(1.0, None, 1.0)["samples"]
        view.locator("input.llmlab-top-k").focus()
        page.keyboard.press("End")  # top-k = 1: one token left, all the probability on it
        labels, kept, widths, samples = shown()
        assert labels == ["1", "1", "1 (off)"] and kept == "1"
        assert widths[0] == "100%" and set(widths[1:]) == {"0%"}
        assert samples == explorer.setting(1.0, 1, 1.0)["samples"]
        view.locator("input.llmlab-temperature").focus()
        page.keyboard.press("Home")
        view.locator("input.llmlab-top-k").focus()
        page.keyboard.press("Home")
        view.locator("input.llmlab-top-p").focus()
        page.keyboard.press("ArrowRight")  # temperature 0.5, no top-k, top-p 0.9
        labels, kept, _, samples = shown()
        assert labels == ["0.5", "off", "0.9"]
        assert kept == str(explorer.setting(0.5, None, 0.9)["kept"])
        assert samples == explorer.setting(0.5, None, 0.9)["samples"]
        assert problems == []
        browser.close()
