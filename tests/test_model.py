"""The from-scratch transformer (llmlab.model) against torch and transformers.

Each piece is checked against the library version, and the whole model against
transformers' Llama (real SmolLM2-135M weights) and GPT-2 (random weights).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from llmlab import assets, decoding
from llmlab.attention import (
    KVCache,
    MultiHeadAttention,
    apply_rotary,
    rotary_cos_sin,
    sinusoidal_positions,
)
from llmlab.model import (
    GPT,
    Block,
    LayerNorm,
    ModelConfig,
    RMSNorm,
    count_parameters,
    flops_per_token,
    lm_loss,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a hub lookup

SMOLLM2_PARAMS = 134_515_008  # SmolLM2-135M, tied embeddings counted once
GPT2_SMALL_PARAMS = 124_439_808

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +",
    "Ünïcödé, émojis 🙂 and numbers: 3.14159 * 2 = 6.28318; 1234567 + 89 =",
]


def tiny(style: str = "llama", **overrides) -> ModelConfig:
    """A model small enough that building and running it takes milliseconds."""
    sizes = dict(vocab_size=50, context_length=16, n_layer=2, n_head=4, d_model=32)
    preset = ModelConfig.llama_style if style == "llama" else ModelConfig.gpt2_style
    return preset(**{**sizes, **overrides})


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def smollm2():
    """(model, tokenizer): SmolLM2-135M-Instruct as a transformers LlamaForCausalLM, fp32."""
    return assets.load("smollm2-135m")


@pytest.fixture(scope="module")
def ours(smollm2):
    return GPT.from_hf_llama(smollm2[0])


# ----------------------------------------------------------------------------- whole models


def test_llama_matches_transformers_logits(smollm2, ours):
    hf, tokenizer = smollm2
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three prime numbers."}],
        tokenize=False, add_generation_prompt=True)
    worst = 0.0
    for prompt in [*PROMPTS, chat]:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            diff = (ours(ids) - hf(ids).logits).abs().max().item()
        print(f"{ids.shape[1]:3d} tokens: max |logits diff| = {diff:.2e}")
        worst = max(worst, diff)
    print(f"max abs logits diff vs LlamaForCausalLM over {len(PROMPTS) + 1} prompts: {worst:.2e}")
    assert worst <= 1e-4


def test_llama_matches_eager_attention_exactly(smollm2, ours):
    """The remaining ~5e-5 above is transformers' SDPA kernel vs its own eager path."""
    hf, tokenizer = smollm2
    ids = tokenizer(PROMPTS[1], return_tensors="pt").input_ids
    before = hf.config._attn_implementation
    hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            diff = (ours(ids) - hf(ids).logits).abs().max().item()
    finally:
        hf.set_attn_implementation(before)
    print(f"max abs logits diff vs eager LlamaForCausalLM: {diff:.2e}")
    assert diff <= 1e-5


def test_llama_loaded_weights_are_tied_copies(smollm2, ours):
    hf, _ = smollm2
    assert ours.lm_head.weight is ours.tok_emb.weight
    assert ours.tok_emb.weight.data_ptr() != hf.model.embed_tokens.weight.data_ptr()
    assert not ours.training and ours.tok_emb.weight.requires_grad


def test_greedy_generate_matches_transformers(smollm2, ours):
    hf, tokenizer = smollm2
    ids = tokenizer("The three primary colours are", return_tensors="pt").input_ids
    expected = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                           do_sample=False)
    got = decoding.generate(ours, ids, 10, use_cache=False)
    print(repr(tokenizer.decode(got[0])))
    assert got.tolist() == expected.tolist()


def test_smollm2_parameter_count(smollm2, ours):
    hf, _ = smollm2
    config = ModelConfig.from_hf(hf.config)
    assert count_parameters(config) == SMOLLM2_PARAMS
    assert count_parameters(ours) == SMOLLM2_PARAMS
    assert sum(p.numel() for p in hf.parameters()) == SMOLLM2_PARAMS
    # Without the (tied) 49152 x 576 token embedding:
    assert count_parameters(config, exclude_embeddings=True) == SMOLLM2_PARAMS - 49152 * 576
    assert count_parameters(hf, exclude_embeddings=True) == SMOLLM2_PARAMS - 49152 * 576


def test_from_pretrained_asset(smollm2, ours):
    model = GPT.from_pretrained_asset("smollm2-135m")
    ids = smollm2[1](PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids), ours(ids))


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_matches_transformers_with_random_weights(tied):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf_config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32,
                           bos_token_id=0, eos_token_id=0, tie_word_embeddings=tied)
    hf = GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():  # move LayerNorms and biases off their 1/0 init, so a swap shows
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = GPT.from_hf(hf)
    assert ours.config.position == "learned" and ours.config.tie_embeddings is tied
    ids = torch.randint(0, 100, (3, 32))
    with torch.no_grad():
        diff = (ours(ids) - hf(ids).logits).abs().max().item()
    print(f"max abs logits diff vs GPT2LMHeadModel (tied={tied}): {diff:.2e}")
    assert diff <= 1e-5


def test_llama_with_biases_gqa_untied_matches_transformers():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf_config = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=96,
                            num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                            head_dim=16, attention_bias=True, mlp_bias=True,
                            tie_word_embeddings=False, max_position_embeddings=64,
                            rope_parameters={"rope_type": "default", "rope_theta": 500.0},
                            bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = LlamaForCausalLM(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = GPT.from_hf(hf)
    assert (ours.config.n_kv_head, ours.config.head_dim, ours.config.rope_theta) == (2, 16, 500.0)
    ids = torch.randint(0, 100, (2, 40))
    with torch.no_grad():
        diff = (ours(ids) - hf(ids).logits).abs().max().item()
    assert diff <= 1e-5


# ----------------------------------------------------------------------------- pieces


def test_rmsnorm_matches_torch():
    torch.manual_seed(0)
    ref = torch.nn.RMSNorm(24, eps=1e-5)
    torch.nn.init.normal_(ref.weight)
    ours = RMSNorm(24, eps=1e-5)
    ours.weight.data.copy_(ref.weight)
    x = 3 * torch.randn(2, 5, 24)
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_torch(bias):
    torch.manual_seed(0)
    ref = torch.nn.LayerNorm(24, eps=1e-5, bias=bias)
    ours = LayerNorm(24, eps=1e-5, bias=bias)
    for theirs, mine in zip(ref.parameters(), ours.parameters(), strict=True):
        theirs.data.normal_()
        mine.data.copy_(theirs)
    x = 3 * torch.randn(2, 5, 24) + 1
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("rotary", [False, True])
def test_attention_matches_sdpa_with_gqa(rotary):
    torch.manual_seed(0)
    config = tiny(n_head=6, n_kv_head=2, d_model=48, bias=True,
                  position="rotary" if rotary else "learned")
    attn = Block(config).attn  # the model's attention is llmlab.attention's
    assert isinstance(attn, MultiHeadAttention)
    for p in attn.parameters():
        p.data.normal_(0, 0.2)
    B, T, H, KV, D = 2, 7, 6, 2, 8
    x = torch.randn(B, T, 48)
    rope = rotary_cos_sin(T, D) if rotary else None
    got, weights = attn(x, rope=rope, is_causal=True, return_weights=True)  # as Block calls it
    if rotary:  # without rope it rotates by positions 0..T-1 itself, the same way
        torch.testing.assert_close(attn(x, is_causal=True), got)

    q = attn.q_proj(x).view(B, T, H, D).transpose(1, 2)
    k = attn.k_proj(x).view(B, T, KV, D).transpose(1, 2)
    v = attn.v_proj(x).view(B, T, KV, D).transpose(1, 2)
    if rotary:
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    # torch's own grouping (enable_gqa) and an explicit expansion must agree with ours.
    native = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    expanded = F.scaled_dot_product_attention(
        q, k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1), is_causal=True)
    for y in (native, expanded):
        torch.testing.assert_close(got, attn.o_proj(y.transpose(1, 2).reshape(B, T, H * D)))

    assert weights.shape == (B, H, T, T)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T))
    assert torch.all(weights.triu(diagonal=1) == 0), "a position attended to the future"


def test_rotary_matches_transformers_llama():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    T, D, theta = 11, 16, 100_000.0
    hf_config = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=D,
                            rope_parameters={"rope_type": "default", "rope_theta": theta})
    q, k = torch.randn(2, 4, T, D), torch.randn(2, 2, T, D)
    hf_cos, hf_sin = LlamaRotaryEmbedding(hf_config)(q, torch.arange(T)[None])
    cos, sin = rotary_cos_sin(T, D, theta)
    torch.testing.assert_close(cos, hf_cos[0])
    torch.testing.assert_close(sin, hf_sin[0])
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    torch.testing.assert_close(apply_rotary(q, cos, sin), hf_q)
    torch.testing.assert_close(apply_rotary(k, cos, sin), hf_k)


def test_rotary_scores_depend_only_on_offset():
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    cos, sin = rotary_cos_sin(20, 16)

    def score(m: int, n: int) -> torch.Tensor:
        return apply_rotary(q, cos[m], sin[m]) @ apply_rotary(k, cos[n], sin[n])

    torch.testing.assert_close(score(5, 2), score(18, 15))


@pytest.mark.parametrize("d", [6, 7])
def test_sinusoidal_positions_formula(d):
    n = 9
    expected = torch.tensor([[math.sin(p / 10_000 ** (i / d)) if i % 2 == 0
                              else math.cos(p / 10_000 ** ((i - 1) / d)) for i in range(d)]
                             for p in range(n)])
    torch.testing.assert_close(sinusoidal_positions(n, d), expected)


# ----------------------------------------------------------------------------- counting


CONFIGS = {
    "gpt2-style": tiny("gpt2"),
    "llama-style": tiny("llama"),
    "gqa-untied-bias": tiny("llama", n_kv_head=2, tie_embeddings=False, bias=True),
    "post-norm-sinusoidal": tiny("gpt2", pre_norm=False, position="sinusoidal", bias=False),
    "layernorm-swiglu-headdim": tiny("gpt2", mlp="swiglu", head_dim=12, n_kv_head=1),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_parameter_count_analytic_matches_module(name):
    config = CONFIGS[name]
    model = GPT(config)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    embeddings = sum(m.weight.numel() for m in model.modules()
                     if isinstance(m, torch.nn.Embedding))
    assert count_parameters(config, exclude_embeddings=True) == count_parameters(model) - embeddings
    assert count_parameters(model, exclude_embeddings=True) == count_parameters(model) - embeddings


def test_gpt2_small_parameter_count():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = ModelConfig.gpt2_style(vocab_size=50257, context_length=1024, n_layer=12,
                                    n_head=12, d_model=768)
    with torch.device("meta"):  # shapes only: no memory, no init time
        hf, ours = GPT2LMHeadModel(GPT2Config()), GPT(config)
    assert count_parameters(config) == count_parameters(ours) == GPT2_SMALL_PARAMS
    assert sum(p.numel() for p in hf.parameters()) == GPT2_SMALL_PARAMS
    assert count_parameters(config, exclude_embeddings=True) == 85_056_000


def test_flops_per_token_by_hand():
    config = ModelConfig.gpt2_style(vocab_size=10, context_length=8, n_layer=1, n_head=2,
                                    d_model=4)  # d_ff = 16, head_dim = 2
    # weights a token meets: attention 4*4*4 + 4*4 biases = 80; MLP 2*4*16 + 16 + 4 = 148;
    # LayerNorms 2 * 8 + final 8 = 24; output layer 10*4 = 40  ->  N = 292
    # forward = 2*292 + 2 * n_layer(1) * seq_len(8) * (n_head * head_dim = 4) = 584 + 64
    assert flops_per_token(config, seq_len=8) == 648
    assert flops_per_token(config, seq_len=8, training=True) == 3 * 648
    # Longer context: only the attention term grows.
    assert flops_per_token(config, seq_len=16) - flops_per_token(config, seq_len=8) == 64


def test_flops_per_token_is_about_2n_for_smollm2_at_short_context():
    config = ModelConfig.llama_style(vocab_size=49152, context_length=8192, n_layer=30,
                                     n_head=9, n_kv_head=3, d_model=576, d_ff=1536)
    n = count_parameters(config)  # tied: the embedding is also the output matmul
    assert flops_per_token(config, seq_len=1) == 2 * n + 2 * 30 * 1 * 576


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(d_model=100, n_head=3), r"d_model must be divisible by n_head.*d_model=100, n_head=3"),
    (dict(n_head=4, n_kv_head=3), r"n_head must be divisible by n_kv_head.*n_head=4, n_kv_head=3"),
    (dict(position="rope"),
     r"position must be one of 'learned', 'sinusoidal', 'rotary'; got 'rope'"),
    (dict(norm="batchnorm"), r"norm must be one of 'layernorm', 'rmsnorm'; got 'batchnorm'"),
    (dict(mlp="relu"), r"mlp must be one of 'gelu', 'swiglu'; got 'relu'"),
    (dict(n_layer=0), r"n_layer must be a positive int; got 0"),
    (dict(position="rotary", d_model=12, n_head=4),
     r"rotary positions need an even head_dim; got 3"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\); got 1.0"),
])
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(("idx", "message"), [
    ([[1, 2, 3]], r"torch.Tensor of token ids; got list"),
    (torch.tensor([1, 2, 3]),
     r"2-D \(batch, time\); got shape \(3,\) \(for one sequence use idx\[None\]\)"),
    (torch.rand(1, 3), r"integer token ids \(int64 or int32\); got torch.float32"),
    (torch.zeros(1, 17, dtype=torch.long), r"sequence length 17 exceeds context_length=16"),
    (torch.tensor([[0, 50]]), r"token ids must be in \[0, vocab_size=50\); got ids from 0 to 50"),
    (torch.tensor([[-1, 3]]), r"got ids from -1 to 3"),
    (torch.zeros(2, 0, dtype=torch.long), r"at least one token"),
])
def test_bad_input_is_rejected(idx, message):
    model = GPT(tiny("gpt2"))
    with pytest.raises(ValueError, match=message):
        model(idx)


def test_rotary_and_sinusoidal_models_run_past_context_length():
    for config in (tiny("llama"), tiny("gpt2", position="sinusoidal")):
        assert GPT(config)(torch.zeros(1, 20, dtype=torch.long)).shape == (1, 20, 50)


def test_bad_generate_arguments_and_loss_shapes_are_rejected():
    model = GPT(tiny())
    idx = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0.*got 0"):
        decoding.generate(model, idx, 3, decoding.SamplingConfig(temperature=0))
    with pytest.raises(ValueError, match=r"top-k needs an int k >= 1; got 0"):
        decoding.generate(model, idx, 3, decoding.SamplingConfig(top_k=0))
    with pytest.raises(ValueError, match=r"max_new_tokens must be an int >= 0; got -1"):
        decoding.generate(model, idx, -1)
    with pytest.raises(ValueError, match=r"expected logits \(B, T, vocab\) and targets \(B, T\)"):
        lm_loss(torch.zeros(2, 3, 50), torch.zeros(2, 4, dtype=torch.long))


def test_unsupported_transformers_configs_are_rejected():
    from transformers import BertConfig, GPT2Config, LlamaConfig

    with pytest.raises(ValueError, match=r"activation_function='gelu_new'; got 'relu'"):
        ModelConfig.from_hf(GPT2Config(activation_function="relu"))
    with pytest.raises(ValueError, match=r"hidden_act='silu'; got 'gelu'"):
        ModelConfig.from_hf(LlamaConfig(hidden_act="gelu"))
    with pytest.raises(ValueError, match=r"model_type 'llama' and 'gpt2'; got 'bert'"):
        ModelConfig.from_hf(BertConfig())


# ----------------------------------------------------------------------------- training, sampling


@pytest.mark.parametrize("style", ["gpt2", "llama"])
@pytest.mark.parametrize("pre_norm", [True, False])
def test_forward_backward_pre_and_post_norm(style, pre_norm):
    torch.manual_seed(0)
    model = GPT(tiny(style, pre_norm=pre_norm, dropout=0.1))
    tokens = torch.randint(0, 50, (4, 17))
    loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
    assert abs(loss.item() - math.log(50)) < 0.5  # near uniform at init
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # A few steps on one batch must drive the loss down.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        step_loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
        step_loss.backward()
        opt.step()
    assert step_loss.item() < loss.item() - 0.5


def test_lm_loss_ignores_padding():
    logits = torch.randn(1, 3, 50)
    full = lm_loss(logits[:, :2], torch.tensor([[4, 7]]))
    assert torch.allclose(lm_loss(logits, torch.tensor([[4, 7, -100]])), full)


def test_generate_sampling_eos_and_mode():
    """The model's generation is llmlab.decoding.generate (GPT has no loop of its own)."""
    torch.manual_seed(0)
    model = GPT(tiny("gpt2", dropout=0.5)).train()
    prompt = torch.tensor([[3, 1, 4, 1, 5, 9]])
    # 6 + 15 tokens run past context_length=16: without a cache the context is a window.
    greedy = decoding.generate(model, prompt, 15, use_cache=False)
    assert greedy.shape == (1, 21) and torch.equal(greedy[:, :6], prompt)
    assert model.training, "generate must restore training mode"
    top_1 = decoding.SamplingConfig(top_k=1)  # top-1 sampling = greedy
    assert torch.equal(decoding.generate(model, prompt, 15, top_1, use_cache=False), greedy)
    g1, g2 = (torch.Generator().manual_seed(7) for _ in range(2))
    sampled = decoding.generate(model, prompt, 8, decoding.SamplingConfig(), generator=g1)
    again = decoding.generate(model, prompt, 8, decoding.SamplingConfig(), generator=g2)
    assert torch.equal(sampled, again)  # seeded: repeats
    eos = int(greedy[0, 6])
    assert decoding.generate(model, prompt, 8, eos_token_id=eos).shape == (1, 7)


def test_generate_pads_finished_rows_with_eos():
    torch.manual_seed(0)
    model = GPT(tiny())
    prompts = torch.tensor([[3, 1, 4], [2, 7, 1]])
    free = decoding.generate(model, prompts, 6)
    eos = int(free[0, 3])  # the first row's first new token
    out = decoding.generate(model, prompts, 6, eos_token_id=eos)
    assert torch.all(out[0, 3:] == eos)
    second = free[1, 3:].tolist()
    stop = second.index(eos) + 1 if eos in second else len(second)
    assert out[1, 3 : 3 + stop].tolist() == second[:stop]


def test_attention_maps_are_causal_distributions():
    model = GPT(tiny())
    maps = model.attention_maps(torch.randint(0, 50, (2, 9)))
    assert maps.shape == (2, 2, 4, 9, 9)  # (n_layer, B, n_head, T, T)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 4, 9))
    assert torch.all(maps.triu(diagonal=1) == 0)


def test_tied_embeddings_share_one_matrix():
    model = GPT(tiny())
    assert model.lm_head.weight is model.tok_emb.weight
    untied = GPT(tiny(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.tok_emb.weight


# ----------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("style, position", [("llama", "rotary"), ("gpt2", "learned"),
                                             ("gpt2", "sinusoidal")])
def test_kv_cache_gives_the_same_logits_step_by_step(style, position):
    torch.manual_seed(0)
    make = ModelConfig.llama_style if style == "llama" else ModelConfig.gpt2_style
    extra = {"n_kv_head": 2} if style == "llama" else {}
    config = make(vocab_size=60, n_layer=2, n_head=4, d_model=32, context_length=32,
                  position=position, **extra)
    model = GPT(config).eval()
    ids = torch.randint(0, 60, (3, 20))
    full = model(ids)
    cache = KVCache.allocate(config, batch_size=3, max_len=20)
    pieces = [model(ids[:, :7], cache=cache)]  # a prompt, then one token at a time
    pieces += [model(ids[:, t : t + 1], cache=cache) for t in range(7, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cached_generation_is_identical_to_uncached():
    torch.manual_seed(1)
    model = GPT(ModelConfig.llama_style(vocab_size=50, n_layer=2, n_head=4, n_kv_head=1,
                                        d_model=32, context_length=64))
    prompts = torch.randint(0, 50, (2, 5))
    assert torch.equal(decoding.generate(model, prompts, 20, use_cache=True),
                       decoding.generate(model, prompts, 20, use_cache=False))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    config = decoding.SamplingConfig()
    assert torch.equal(decoding.generate(model, prompts, 20, config, generator=g1),
                       decoding.generate(model, prompts, 20, config, generator=g2,
                                         use_cache=False))


def test_cached_greedy_generate_matches_transformers(smollm2, ours):
    hf, tokenizer = smollm2
    ids = tokenizer("A recipe for pancakes:", return_tensors="pt").input_ids
    expected = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                do_sample=False)
    assert torch.equal(decoding.generate(ours, ids, 12, use_cache=True), expected)


def test_kv_cache_bad_use_is_rejected():
    config = ModelConfig.llama_style(vocab_size=20, n_layer=1, n_head=2, d_model=8,
                                     context_length=8)
    model = GPT(config)
    cache = KVCache.allocate(config, batch_size=1, max_len=4)
    model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="holds 4 positions; 3 are used and 2 more"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="allocated for batch 1"):
        model(torch.zeros(2, 1, dtype=torch.long), cache=KVCache.allocate(config, 1, 4))
    with pytest.raises(ValueError, match=r"must fit in context_length=8"):
        decoding.generate(model, torch.zeros(1, 5, dtype=torch.long), 4, use_cache=True)
    with pytest.raises(ValueError, match="batch_size >= 1"):
        KVCache.allocate(config, batch_size=0, max_len=4)


# ----------------------------------------------------------------------------- depth probes


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_residual_stream_stds_follow_the_model(style):
    from llmlab.model import residual_stream_stds

    torch.manual_seed(0)
    make = ModelConfig.llama_style if style == "llama" else ModelConfig.gpt2_style
    model = GPT(make(vocab_size=40, context_length=16, n_layer=3, n_head=2, d_model=16)).eval()
    idx = torch.randint(0, 40, (2, 10))
    stds = residual_stream_stds(model, idx)
    assert stds.shape == (4,)
    # The last entry is the stream that the final norm reads: the same hidden states the
    # model computes, before norm_f.
    captured = []
    hook = model.norm_f.register_forward_hook(lambda m, inputs, out: captured.append(inputs[0]))
    with torch.no_grad():
        model(idx)
    hook.remove()
    torch.testing.assert_close(stds[-1], captured[0].std())


def test_residual_init_scaling_keeps_the_stream_flat_with_depth():
    from llmlab.model import init_residual_projections, residual_stream_stds

    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    growth = {}
    for n_layer in (4, 32):
        torch.manual_seed(0)
        model = GPT(ModelConfig.gpt2_style(vocab_size=50, context_length=16, n_layer=n_layer,
                                           n_head=2, d_model=32))
        scaled = residual_stream_stds(model, idx)
        init_residual_projections(model, 0.02)
        unscaled = residual_stream_stds(model, idx)
        growth[n_layer] = (scaled[-1] / scaled[0]).item(), (unscaled[-1] / unscaled[0]).item()
    assert abs(growth[32][0] - growth[4][0]) < 0.2  # GPT-2's init: the same at any depth
    assert growth[32][1] > 1.5 * growth[4][1]  # unscaled: grows with depth
    with pytest.raises(ValueError, match="finite number >= 0"):
        init_residual_projections(model, -0.1)
    with pytest.raises(ValueError, match="no o_proj/down_proj"):
        init_residual_projections(torch.nn.Linear(2, 2), 0.02)


def test_block_grad_norms_vanish_without_residuals():
    from llmlab.model import block_grad_norms

    torch.manual_seed(0)
    config = ModelConfig.gpt2_style(vocab_size=50, context_length=16, n_layer=24, n_head=2,
                                    d_model=32)
    model = GPT(config)
    idx = torch.randint(0, 50, (2, 16))
    with_res = block_grad_norms(model, idx)
    without = block_grad_norms(model, idx, residual=False)
    assert with_res.shape == without.shape == (24,)
    assert 0.3 < (with_res[0] / with_res[-1]).item() < 3
    assert (without[0] / without[-1]).item() < 1e-2
    post = GPT(ModelConfig.gpt2_style(vocab_size=50, context_length=16, n_layer=2, n_head=2,
                                      d_model=32, pre_norm=False))
    with pytest.raises(ValueError, match="pre-norm blocks only"):
        block_grad_norms(post, idx, residual=False)
