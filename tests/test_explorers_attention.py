"""llmlab.views.attention_explorer without a browser: the static view is self-contained (no
network, data embedded once, scripts that cannot be broken by a token), the weights it
carries are the model's (llmlab's GPT and transformers' Llama give the same), the live
widgets redraw, and bad input is refused early with a clear message."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import torch

from llmlab.model import GPT, ModelConfig
from llmlab.views.attention_explorer import (
    AttentionExplorer,
    attention_explorer,
    model_attention,
    render_focus,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOKENS = [["The", " cat", " sat", "."], ["a", " b", " </script>"]]


class CharTokenizer:
    """One token per character (ids are code points below 128)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 128 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


def causal_attention(layers: int, heads: int, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(layers, heads, n, n, generator=generator)
    allowed = torch.ones(n, n, dtype=torch.bool).tril()
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1)


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig.llama_style(vocab_size=128, n_layer=3, n_head=2, d_model=32,
                                       context_length=64)).eval()


def embedded_data(page: str) -> dict:
    match = re.search(r'<script type="application/json" class="llmlab-data">(.*?)</script>',
                      page, re.DOTALL)
    assert match, "the view carries no data"
    return json.loads(match.group(1))


def inline_script(page: str) -> str:
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    assert len(scripts) == 1
    return scripts[0]


def test_static_view_is_self_contained_and_carries_the_weights():
    weights = [causal_attention(2, 3, 4), causal_attention(2, 3, 3, seed=1)]
    view = attention_explorer(weights, None, TOKENS, layer=1, head=2, decimals=3)
    page = view._repr_html_()
    assert not re.search(r"<script[^>]*\bsrc=", page) and not re.search(r"https?://", page)
    assert "<link" not in page and "@import" not in page
    data = embedded_data(page)
    assert data["tokens"] == TOKENS and data["decimals"] == 3
    for s, attention in enumerate(weights):
        for layer in range(2):
            for head in range(3):
                n = len(TOKENS[s])
                embedded = torch.tensor([[view.weight(s, layer, head, i, j) for j in range(n)]
                                         for i in range(n)])
                torch.testing.assert_close(embedded, attention[layer, head], atol=5e-4, rtol=0)
    # a causal model's future keys are not stored: row i holds keys 0..i only
    assert [len(row) for row in data["weights"][0][0][0]] == [1, 2, 3, 4]
    assert 'class="llmlab-layer" min="0" max="1" step="1" value="1"' in page
    assert 'class="llmlab-head" min="0" max="2" step="1" value="2"' in page


def test_a_token_cannot_end_the_script_and_ids_are_unique():
    weights = [causal_attention(1, 1, 4), causal_attention(1, 1, 3)]
    first, second = (attention_explorer(weights, None, TOKENS) for _ in range(2))
    page = first._repr_html_()
    assert page.count("</script>") == 2  # the data's and the code's own closing tags
    assert "<\\/script>" in first.data_json()
    assert first.element_id != second.element_id
    assert f'document.getElementById("{first.element_id}")' in inline_script(page)


def test_the_script_handles_hover_click_and_controls():
    page = attention_explorer([causal_attention(1, 2, 4)], None, TOKENS[:1])._repr_html_()
    script = inline_script(page)
    for needed in ('"mouseenter"', '"click"', 'sentence.addEventListener("change"',
                   'layer.addEventListener("input"', 'head.addEventListener("input"'):
        assert needed in script
    if shutil.which("node"):  # the script is valid JavaScript (node parses it, runs nothing)
        subprocess.run(["node", "--check", "--input-type=commonjs"], input=script, text=True,
                       check=True, capture_output=True)


def test_explorer_from_a_model_shows_its_attention_maps():
    model, tokenizer = tiny_gpt(), CharTokenizer()
    view = attention_explorer(model, tokenizer, ["hello", "abc"], decimals=4)
    assert isinstance(view, AttentionExplorer)
    assert view.tokens == [list("hello"), list("abc")] and view.labels == ["hello", "abc"]
    with torch.no_grad():
        maps = model.attention_maps(torch.tensor([tokenizer.encode("hello")]))[:, 0]
    shown = torch.tensor([[[[view.weight(0, layer, head, i, j) for j in range(5)]
                            for i in range(5)] for head in range(2)] for layer in range(3)])
    torch.testing.assert_close(shown, maps, atol=5e-5, rtol=0)


def test_model_attention_is_the_same_from_llmlab_and_transformers():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                         pad_token_id=0, attn_implementation="eager")
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))  # away from the init, so heads differ
    theirs, tokens = model_attention(hf, CharTokenizer(), "attention!")
    ours, same_tokens = model_attention(GPT.from_hf_llama(hf), CharTokenizer(), "attention!")
    assert tokens == same_tokens == list("attention!") and theirs.shape == (2, 4, 10, 10)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_a_transformers_model_without_eager_attention_gets_a_clear_error():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2,
                         attn_implementation="sdpa")
    with pytest.raises(ValueError, match='attn_implementation="eager"'):
        model_attention(LlamaForCausalLM(config).eval(), CharTokenizer(), "abc")


def test_live_explorer_redraws_on_every_control():
    widgets = pytest.importorskip("ipywidgets")
    model = tiny_gpt()
    box = attention_explorer(model, CharTokenizer(), ["hello", "abc"], live=True, head=1)
    assert isinstance(box, widgets.VBox)
    _, examples, text, controls, view = box.children
    layer, head, token = controls.children
    assert (layer.max, head.max, head.value, token.value) == (2, 1, 1, 4)
    first = view.value
    layer.value = 2
    assert view.value != first
    text.value = "a longer sentence"  # typed: recomputed with the model
    assert len(token.options) == len("a longer sentence") and token.value == 16
    with torch.no_grad():
        maps = model.attention_maps(torch.tensor([CharTokenizer().encode(text.value)]))[:, 0]
    assert view.value == render_focus(list(text.value), maps[2, 1].float(), 16)
    examples.value = "abc"
    assert text.value == "abc" and len(token.options) == 3


def test_render_focus_shades_by_weight_and_names_the_largest():
    matrix = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.7, 0.2]])
    page = render_focus(["x", "y", "<z>"], matrix, focus=2)
    assert "rgba(33, 113, 181, 0.700)" in page and "&lt;z&gt;" in page
    assert "attends most to: “y” (1) 0.70, “&lt;z&gt;” (2) 0.20, “x” (0) 0.10" in page


@pytest.mark.parametrize("call, error, message", [
    (lambda: attention_explorer([causal_attention(2, 3, 4)], None, TOKENS[:1], layer=2),
     ValueError, r"layer must be an int in 0\.\.1; got 2"),
    (lambda: attention_explorer([causal_attention(2, 3, 4)], None, TOKENS[:1], head=-1),
     ValueError, r"head must be an int in 0\.\.2; got -1"),
    (lambda: attention_explorer([causal_attention(2, 3, 5)], None, TOKENS[:1]),
     ValueError, r"sentence 0: attention covers 5 x 5 positions but 4 tokens were given"),
    (lambda: attention_explorer([causal_attention(2, 3, 4)], None, TOKENS),
     ValueError, r"got 1 attentions for 2 sentences"),
    (lambda: attention_explorer([causal_attention(2, 3, 4), causal_attention(1, 3, 3)], None,
                                TOKENS), ValueError, r"same model.*\[\(1, 3\), \(2, 3\)\]"),
    (lambda: attention_explorer([causal_attention(1, 1, 4)], None, ["The cat sat."]),
     ValueError, r"sentence 0: .*list of tokens"),
    (lambda: attention_explorer([causal_attention(1, 1, 4)], CharTokenizer(), TOKENS[:1]),
     ValueError, r"tokenizer=None"),
    (lambda: attention_explorer([causal_attention(1, 1, 4)], None, TOKENS[:1], live=True),
     ValueError, r"live=True .* needs a model"),
    (lambda: attention_explorer([causal_attention(1, 1, 4)], None, []),
     ValueError, r"non-empty list"),
    (lambda: attention_explorer([causal_attention(1, 1, 4)], None, TOKENS[:1], decimals=0),
     ValueError, r"decimals must be an int from 1 to 4"),
    (lambda: attention_explorer(tiny_gpt(), CharTokenizer(), ["x" * 17]),
     ValueError, r"sentence 0 has 17 tokens.*max_tokens=16"),
    (lambda: attention_explorer(tiny_gpt(), None, ["abc"]), ValueError, r"its tokenizer"),
    (lambda: attention_explorer(tiny_gpt(), CharTokenizer(), [""]),
     ValueError, r"non-empty string"),
    (lambda: attention_explorer(tiny_gpt(), object(), ["abc"]),
     TypeError, r"encode\(text\) -> ids and decode\(ids\)"),
])
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_text_fallback_stays_short():
    """Notebooks store repr() next to the HTML: it must not carry the weights again."""
    view = attention_explorer([causal_attention(4, 4, 12)], None, [list("abcdefghijkl")])
    assert len(repr(view)) < 300 and "AttentionExplorer" in repr(view)
