"""llmlab.views.interactive's bertviz views and llmlab.assets.jslibs, without a browser (the browser
checks are in test_site_browser.py): the view is self-contained, carries the data, and
bad input is refused early with a clear message."""

from __future__ import annotations

import json
import re
import stat
import sys

import numpy as np
import pytest
import torch

from llmlab.assets import jslibs
from llmlab.site import build as site
from llmlab.views.interactive import (
    BERTVIZ_LIBRARIES,
    attention_view,
    attention_weights,
    bertviz_view,
)

TOKENS = ["[CLS]", "the", "cat", "sat", "[SEP]"]


def random_attention(layers=2, heads=3, n=5, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(layers, heads, n, n, generator=generator), dim=-1)


def embedded_params(html: str) -> dict:
    """The data bertviz embeds in its script (``const params = {...};``)."""
    match = re.search(r"const params = (\{.*?\});\s*$", html, re.MULTILINE)
    assert match, "the view carries no bertviz params"
    return json.loads(match.group(1))


@pytest.mark.parametrize("kind", ["head", "model"])
def test_view_is_self_contained_and_carries_the_data(kind):
    weights = random_attention()
    html = attention_view(weights, TOKENS, kind=kind).html
    assert not re.search(r"<script[^>]*\bsrc=", html), "the view loads a script file"
    assert "cdnjs" not in html and "require.config" not in html
    assert "jQuery v2.2.4" in html and "d3js.org v5.7.0" in html  # inlined from npm
    params = embedded_params(html)
    (data,) = params["attention"]
    assert data["left_text"] == data["right_text"] == TOKENS
    assert np.allclose(np.array(data["attn"]), weights.numpy(), atol=5e-5)  # 4 decimals
    assert html.count(json.dumps(data["attn"][0][0][0])) == 1  # the data is embedded once


def test_view_matches_bertviz_own_formatting():
    """Every input layout gives the same (layers, heads, T, T) tensor as bertviz's own
    format_attention does on transformers' tuple of per-layer tensors."""
    from bertviz.util import format_attention

    weights = random_attention()
    per_layer = tuple(layer[None] for layer in weights)  # what transformers returns
    expected = format_attention(per_layer).double()
    layouts = [per_layer, list(weights), weights, weights[:, None], weights.numpy()]
    for layout in layouts:
        assert torch.equal(attention_weights(layout, len(TOKENS)), expected)


def test_tokens_that_could_end_the_script_do_not_break_the_view():
    html = attention_view(random_attention(n=3), ["</script>", "<!--", "b"]).html
    assert html.lower().count("</script") == 1  # only the closing tag of the view's script
    assert "<!--" not in html


def test_bertviz_view_rewrites_bertviz_output_directly():
    from bertviz import model_view

    weights = random_attention()
    original = model_view([layer[None] for layer in weights], TOKENS, html_action="return")
    assert "cdnjs.cloudflare.com" in original.data  # what the rewrite is for
    html = bertviz_view(original).html
    assert "cdnjs" not in html and "<script" in html
    assert embedded_params(html)["attention"][0]["left_text"] == TOKENS


@pytest.mark.parametrize("bad", ["<p>plain html</p>", "<script src='x.js'></script><div></div>"])
def test_bertviz_view_refuses_what_is_not_a_bertviz_view(bad):
    with pytest.raises(ValueError, match="not a bertviz view"):
        bertviz_view(bad)
    with pytest.raises(TypeError, match="bertviz's HTML"):
        bertviz_view(42)


def test_attention_that_does_not_match_the_tokens_is_refused():
    with pytest.raises(ValueError, match="covers 5 x 5 positions but 4 tokens"):
        attention_view(random_attention(), TOKENS[:4])


@pytest.mark.parametrize("attentions", [(), None, (None, None)])
def test_missing_attention_points_to_eager_attention(attentions):
    """transformers 5's default sdpa attention returns no weights: say how to get them."""
    with pytest.raises(ValueError, match='attn_implementation="eager"'):
        attention_view(attentions, TOKENS)


def test_bad_shapes_and_values_are_refused():
    weights = random_attention()
    with pytest.raises(ValueError, match="one sequence at a time"):
        attention_view(torch.stack([weights, weights], dim=1), TOKENS)  # a batch of 2
    with pytest.raises(ValueError, match="all the same shape"):
        attention_view([weights[0], weights[1, :2]], TOKENS)
    with pytest.raises(ValueError, match="after the softmax"):
        attention_view(torch.randn(2, 3, 5, 5), TOKENS)  # scores, not weights
    with pytest.raises(ValueError, match='kind must be "head" or "model"'):
        attention_view(weights, TOKENS, kind="neuron")
    with pytest.raises(TypeError, match="list of strings"):
        attention_view(weights, "the cat sat")


def test_libraries_are_checked_against_their_recorded_checksums():
    for relative, sha256 in BERTVIZ_LIBRARIES.values():
        text = jslibs.read_file("bertviz", jslibs.BERTVIZ_PACKAGES, relative, sha256)
        assert len(text) > 50_000
    relative, sha256 = BERTVIZ_LIBRARIES["d3"]
    with pytest.raises(jslibs.NpmError, match="expected 0000"):
        jslibs.read_file("bertviz", jslibs.BERTVIZ_PACKAGES, relative, "0" * 64)


def test_missing_npm_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(jslibs.shutil, "which", lambda name: None)
    with pytest.raises(jslibs.NpmError, match="npm is not on PATH.*Install Node.js"):
        jslibs.node_modules("bertviz", jslibs.BERTVIZ_PACKAGES)


def test_failing_npm_is_a_clear_error_and_leaves_no_half_install(monkeypatch, tmp_path):
    if sys.platform == "win32":
        pytest.skip("uses a shell script as a stand-in for npm")
    fake_npm = tmp_path / "npm"
    fake_npm.write_text("#!/bin/sh\necho 'npm ERR! network unreachable' >&2\nexit 1\n")
    fake_npm.chmod(fake_npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(jslibs.shutil, "which", lambda name: str(fake_npm))
    with pytest.raises(jslibs.NpmError, match="(?s)failed.*network unreachable"):
        jslibs.node_modules("bertviz", {"d3": "5.7.0"})
    assert list((tmp_path / "cache" / "npm").iterdir()) == []


def test_a_cached_install_is_used_without_npm(monkeypatch):
    jslibs.node_modules("bertviz", jslibs.BERTVIZ_PACKAGES)  # installed once (or cached)
    monkeypatch.setattr(jslibs.shutil, "which", lambda name: None)
    modules = jslibs.node_modules("bertviz", jslibs.BERTVIZ_PACKAGES)
    assert (modules / "d3" / "package.json").is_file()


def test_duplicate_inline_scripts_are_dropped_once_and_files_kept():
    """The Sphinx 7.4 duplicate (same inline script as None and as "") goes; others stay."""
    from sphinx.builders.html._assets import _JavaScript

    thebe = "const THEBE_JS_URL = 'x'"
    scripts = [_JavaScript("_static/a.js", priority=200), _JavaScript(None, body=thebe),
               _JavaScript("_static/b.js"), _JavaScript("", body=thebe),
               _JavaScript("", body="var other = 1")]
    kept = site.drop_duplicate_inline_scripts(scripts)
    assert [(s.filename, s.attributes.get("body")) for s in kept] == [
        ("_static/a.js", None), (None, thebe), ("_static/b.js", None), ("", "var other = 1")]
