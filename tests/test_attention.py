"""llmlab.attention against torch and transformers doing the same job.

SDPA and masks against ``F.scaled_dot_product_attention`` (and transformers' eager
attention and mask functions); ``MultiHeadAttention`` against ``torch.nn.MultiheadAttention``
and transformers' ``LlamaAttention``; RoPE against ``apply_rotary_pos_emb``; ALiBi against
BLOOM's ``build_alibi_tensor``; tiled attention against exact attention (also in memory:
no op may produce an L x S tensor); Performer's error against the number of features; the
KV-cache size against a real transformers cache.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from llmlab import attention as A
from llmlab.model import Block, ModelConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a hub lookup

TOL = {torch.float64: dict(atol=1e-12, rtol=1e-10), torch.float32: dict(atol=2e-6, rtol=1e-5)}


def qkv(B=2, H=3, L=7, S=None, E=8, Ev=None, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    S, Ev = S or L, Ev or E
    return (torch.randn(B, H, L, E, generator=gen, dtype=dtype),
            torch.randn(B, H, S, E, generator=gen, dtype=dtype),
            torch.randn(B, H, S, Ev, generator=gen, dtype=dtype))


# ----------------------------------------------------------------------------- SDPA and masks


def random_bool_mask(L: int, S: int, seed: int = 1) -> torch.Tensor:
    mask = torch.rand(L, S, generator=torch.Generator().manual_seed(seed)) < 0.6
    mask[:, 0] = True  # no fully masked row here (those have their own test)
    return mask


MASKS = {
    "none": lambda L, S: (None, False),
    "bool": lambda L, S: (random_bool_mask(L, S), False),
    "additive": lambda L, S: (torch.randn(L, S, generator=torch.Generator().manual_seed(2)),
                              False),
    "causal": lambda L, S: (None, True),
    "causal-as-mask": lambda L, S: (A.causal_mask(L, S), False),
    "padding": lambda L, S: (A.padding_mask([S, S - 3]), False),
    "sliding-window": lambda L, S: (A.sliding_window_mask(L, 3), False),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale", [None, 0.3])
@pytest.mark.parametrize("kind", list(MASKS))
def test_sdpa_matches_torch(kind, scale, dtype):
    L = S = 9
    q, k, v = qkv(L=L, S=S, Ev=5, dtype=dtype)
    mask, is_causal = MASKS[kind](L, S)
    if mask is not None and mask.is_floating_point():
        mask = mask.to(dtype)
    ours = A.scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal, scale=scale)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                            scale=scale)
    torch.testing.assert_close(ours, theirs, **TOL[dtype])


def test_sdpa_causal_with_more_keys_than_queries_matches_torch():
    q, k, v = qkv(L=4, S=10)
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v, is_causal=True),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True))


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), H=st.integers(1, 4), L=st.integers(1, 12), S=st.integers(1, 12),
       E=st.integers(1, 10), Ev=st.integers(1, 6), masked=st.booleans(), seed=st.integers(0, 99))
def test_sdpa_matches_torch_on_random_shapes(B, H, L, S, E, Ev, masked, seed):
    q, k, v = qkv(B, H, L, S, E, Ev, dtype=torch.float64, seed=seed)
    mask = random_bool_mask(L, S, seed) if masked else None
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v, mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_returned_weights_match_transformers_eager_attention():
    from transformers.models.llama.modeling_llama import eager_attention_forward

    q, k, v = qkv(L=6)
    mask = A.as_additive_mask(A.sliding_window_mask(6, 2))
    out, weights = A.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    module = SimpleNamespace(num_key_value_groups=1, training=False)
    hf_out, hf_weights = eager_attention_forward(module, q, k, v, mask, scaling=8**-0.5)
    torch.testing.assert_close(weights, hf_weights)
    torch.testing.assert_close(out, hf_out.transpose(1, 2))  # they return (B, L, H, E)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 6))


@pytest.mark.parametrize("as_float", [False, True])
def test_fully_masked_rows_give_zeros_like_torch_not_nan(as_float):
    q, k, v = qkv(L=4, S=5)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2] = False  # query 2 may attend nothing
    if as_float:
        mask = A.as_additive_mask(mask)
    out, weights = A.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert not out.isnan().any() and not weights.isnan().any()
    assert torch.all(out[..., 2, :] == 0) and torch.all(weights[..., 2, :] == 0)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_softmax_is_stable_for_huge_scores():
    scores = torch.tensor([[1e4, 1e4 - 1.0, -1e4]])
    torch.testing.assert_close(A.stable_softmax(scores), torch.softmax(scores, -1))
    assert torch.exp(scores).isinf().any()  # the naive formula would overflow here


@pytest.mark.filterwarnings("ignore:Lower right causal bias will produce NaNs")
def test_causal_mask_matches_torch_conventions():
    from torch.nn.attention.bias import causal_lower_right, causal_upper_left

    for L, S in [(5, 5), (3, 7), (7, 3)]:
        assert torch.equal(A.causal_mask(L, S), causal_upper_left(L, S)._materialize())
        assert torch.equal(A.causal_mask(L, S, offset=S - L),
                           causal_lower_right(L, S)._materialize())


def test_sliding_window_mask_matches_transformers():
    from transformers.masking_utils import and_masks, causal_mask_function, sliding_window_overlay

    T, window = 9, 3
    allowed = and_masks(causal_mask_function, sliding_window_overlay(window))
    zero, positions = torch.tensor(0), torch.arange(T)
    expected = allowed(zero, zero, positions[:, None], positions[None, :])
    assert torch.equal(A.sliding_window_mask(T, window), expected)
    assert A.sliding_window_mask(T, window).sum(-1).max() == window
    assert torch.equal(A.sliding_window_mask(T, T), A.causal_mask(T))


def test_sliding_window_global_tokens_stay_visible_and_causal():
    T, window = 10, 3
    mask = A.sliding_window_mask(T, window, n_global=2)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    expected = (j <= i) & ((i - j < window) | (j < 2))
    assert torch.equal(mask, expected)
    assert torch.equal(A.sliding_window_mask(T, window, n_global=0),
                       A.sliding_window_mask(T, window))
    with pytest.raises(ValueError, match="n_global"):
        A.sliding_window_mask(T, window, n_global=-1)


def test_causal_linear_attention_is_the_masked_quadratic_form_and_a_recurrence():
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 17, 8, generator=gen) / 2 for _ in range(2))
    v = torch.randn(2, 3, 17, 5, generator=gen)
    w = A.random_feature_matrix(32, 8, seed=1)
    phi_q, phi_k = A.positive_random_features(q, w), A.positive_random_features(k, w)
    out = A.causal_linear_attention(phi_q, phi_k, v)
    weights = (phi_q @ phi_k.transpose(-2, -1)).tril()
    torch.testing.assert_close(out, weights / weights.sum(-1, keepdim=True) @ v)
    state, z = torch.zeros(2, 3, 32, 5), torch.zeros(2, 3, 32)
    for t in range(17):  # the RNN view: one state update per token
        state = state + phi_k[..., t, :, None] * v[..., t, None, :]
        z = z + phi_k[..., t, :]
        step = (phi_q[..., t, None, :] @ state)[..., 0, :] / (phi_q[..., t, :] * z).sum(-1,
                                                                                      keepdim=True)
        torch.testing.assert_close(out[..., t, :], step)
    with pytest.raises(ValueError, match="phi_q"):
        A.causal_linear_attention(phi_q, phi_k[..., :4], v)


def test_padding_mask_from_lengths_equals_from_attention_mask():
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    from_lengths = A.padding_mask(torch.tensor([4, 2, 1]))
    assert from_lengths.shape == (3, 1, 1, 4)
    assert torch.equal(from_lengths, A.padding_mask(attention_mask))
    assert torch.equal(A.padding_mask([2], max_len=4)[0, 0, 0], torch.tensor([1, 1, 0, 0]).bool())


def test_mask_and_is_causal_combine():
    q, k, v = qkv(L=6)
    pad = A.padding_mask([6, 4])
    both = A.causal_mask(6) & pad
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v, pad, is_causal=True),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=both))


def test_sdpa_enable_gqa_matches_torch():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, 5, 4, generator=gen)
    k, v = torch.randn(2, 2, 2, 5, 4, generator=gen).unbind(0)
    torch.testing.assert_close(
        A.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))


def test_split_and_merge_heads_match_a_reshape():
    x = torch.randn(2, 5, 12)
    heads = A.split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(heads[:, 1], x[..., 4:8])  # head 1 owns features 4..7
    assert torch.equal(A.merge_heads(heads), x)


# ----------------------------------------------------------------------------- multi-head


def copy_from_torch_mha(ours: A.MultiHeadAttention, theirs: torch.nn.MultiheadAttention) -> None:
    if theirs._qkv_same_embed_dim:
        weights = theirs.in_proj_weight.chunk(3)
    else:
        weights = (theirs.q_proj_weight, theirs.k_proj_weight, theirs.v_proj_weight)
    with torch.no_grad():
        for proj, w, b in zip((ours.q_proj, ours.k_proj, ours.v_proj), weights,
                              theirs.in_proj_bias.chunk(3), strict=True):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        ours.o_proj.weight.copy_(theirs.out_proj.weight)
        ours.o_proj.bias.copy_(theirs.out_proj.bias)


def torch_mha(d_model: int, n_heads: int, kv_dim: int | None = None):
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(d_model, n_heads, batch_first=True, kdim=kv_dim,
                                         vdim=kv_dim).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)  # torch initialises biases to 0: make them matter
    ours = A.MultiHeadAttention(d_model, n_heads, kv_dim=kv_dim)
    copy_from_torch_mha(ours, theirs)
    return ours, theirs


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch_multihead_attention(causal):
    ours, theirs = torch_mha(24, 4)
    x = torch.randn(2, 7, 24)
    # torch.nn.MultiheadAttention's bool masks mean the opposite of SDPA's: True = ignore.
    key_padding_mask = ~A.padding_mask([7, 5])[:, 0, 0]
    their_mask = ~A.causal_mask(7) if causal else None
    expected, expected_w = theirs(x, x, x, key_padding_mask=key_padding_mask,
                                  attn_mask=their_mask, average_attn_weights=False)
    got, weights = ours(x, mask=A.padding_mask([7, 5]), is_causal=causal, return_weights=True)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(weights, expected_w)
    assert torch.all(weights[1, ..., 5:] == 0), "a padded key received attention"


def test_cross_attention_matches_torch_multihead_attention():
    ours, theirs = torch_mha(16, 2, kv_dim=10)
    x, memory = torch.randn(3, 4, 16), torch.randn(3, 9, 10)  # queries from x, keys from memory
    pad = A.padding_mask([9, 6, 2])
    expected, expected_w = theirs(x, memory, memory, key_padding_mask=~pad[:, 0, 0],
                                  average_attn_weights=False)
    got, weights = ours(x, memory, mask=pad, return_weights=True)
    assert weights.shape == (3, 2, 4, 9)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(weights, expected_w)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 6])  # MQA, GQA, MHA
def test_grouped_query_attention_matches_torch_enable_gqa(n_kv_heads):
    torch.manual_seed(0)
    mha = A.MultiHeadAttention(48, 6, n_kv_heads)
    x = torch.randn(2, 5, 48)
    q = A.split_heads(mha.q_proj(x), 6)
    k, v = A.split_heads(mha.k_proj(x), n_kv_heads), A.split_heads(mha.v_proj(x), n_kv_heads)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(mha(x, is_causal=True), mha.o_proj(A.merge_heads(y)))
    assert mha.k_proj.weight.shape == (n_kv_heads * 8, 48)  # fewer kv heads, smaller cache


def test_gqa_with_rope_matches_transformers_llama_attention():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
                         head_dim=16, attention_bias=True, max_position_embeddings=64,
                         rope_parameters={"rope_type": "default", "rope_theta": 500.0},
                         attn_implementation="eager")
    theirs = LlamaAttention(config, layer_idx=0).eval()
    ours = A.MultiHeadAttention(64, 8, 2, head_dim=16, rope_theta=500.0)
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.2)
    ours.load_state_dict(theirs.state_dict())  # same names: q_proj, k_proj, v_proj, o_proj
    B, T = 2, 10
    x = torch.randn(B, T, 64)
    allowed = A.causal_mask(T) & A.padding_mask([T, 6])
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    rope = LlamaRotaryEmbedding(config)(x, torch.arange(T)[None])
    expected, expected_w = theirs(x, position_embeddings=rope, attention_mask=additive)
    got, weights = ours(x, mask=A.padding_mask([T, 6]), is_causal=True, return_weights=True)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(weights, expected_w)


def test_the_models_attention_is_multi_head_attention_on_the_sdpa_formula():
    config = ModelConfig.llama_style(vocab_size=10, n_head=6, n_kv_head=3, d_model=48,
                                     bias=True, rope_theta=1000.0)
    torch.manual_seed(0)
    attn = Block(config).attn
    assert isinstance(attn, A.MultiHeadAttention) and attn.rope_theta == 1000.0
    x = torch.randn(2, 9, 48)
    rope = A.rotary_cos_sin(9, 8, 1000.0)  # the model hands over its angles...
    fast, weights = attn(x, rope=rope, is_causal=True, return_weights=True)
    torch.testing.assert_close(attn(x, is_causal=True), fast)  # ...the same as its own
    # ...and both are the from-scratch scaled_dot_product_attention on the same q, k, v.
    cos, sin = A.rotary_cos_sin(9, 8, 1000.0)
    q = A.apply_rotary(A.split_heads(attn.q_proj(x), 6), cos, sin)
    k = A.apply_rotary(A.split_heads(attn.k_proj(x), 3), cos, sin)
    v = A.split_heads(attn.v_proj(x), 3)
    y, expected_w = A.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True,
                                                   return_weights=True)
    torch.testing.assert_close(fast, attn.o_proj(A.merge_heads(y)))
    torch.testing.assert_close(weights, expected_w)


@pytest.mark.parametrize("position", ["rope", "alibi", "none"])
def test_kv_cache_step_by_step_equals_the_whole_sequence(position):
    torch.manual_seed(0)
    extra = {"rope": dict(rope_theta=100.0), "alibi": dict(alibi=True), "none": {}}[position]
    mha = A.MultiHeadAttention(32, 4, 2, **extra)
    x = torch.randn(2, 9, 32)
    full = mha(x, is_causal=True)
    cache = A.KVCache.allocate(SimpleNamespace(n_layer=1, n_kv_head=2, head_dim=8), 2, 9)
    pieces = []
    for start, end in [(0, 4), (4, 5), (5, 9)]:  # a prompt, a token, three at once
        pieces.append(mha(x[:, start:end], is_causal=True, cache=cache))
        cache.advance(end - start)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    cache.crop(4)  # forget the last 5 positions, then feed them again with a mask
    allowed = A.causal_allowed(4, 5)
    rest = mha(x[:, 4:], mask=allowed, cache=cache)
    torch.testing.assert_close(rest, full[:, 4:])


def test_causal_allowed_is_the_causal_mask_after_the_cache():
    for offset, T in [(0, 4), (3, 1), (2, 5)]:
        assert torch.equal(A.causal_allowed(offset, T), A.causal_mask(T, offset + T, offset=offset))


def test_dropout_drops_weights_only_in_training():
    torch.manual_seed(0)
    mha = A.MultiHeadAttention(16, 2, dropout=0.5)
    x = torch.randn(1, 6, 16)
    assert not torch.equal(mha(x, is_causal=True), mha(x, is_causal=True))  # random masks
    mha.eval()
    torch.testing.assert_close(mha(x, is_causal=True), mha(x, is_causal=True))
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\); got 1.0"):
        A.MultiHeadAttention(16, 2, dropout=1.0)


def test_a_query_with_nothing_to_read_gets_zeros_not_nan():
    mha = A.MultiHeadAttention(16, 2)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1] = False
    out, weights = mha(torch.randn(1, 4, 16), mask=mask, return_weights=True)
    assert not out.isnan().any() and torch.all(weights[..., 1, :] == 0)


def test_rope_matches_transformers_apply_rotary_pos_emb_in_cross_attention():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    torch.manual_seed(0)
    theta, T, S = 10_000.0, 4, 7
    ours = A.MultiHeadAttention(32, 4, rope_theta=theta, bias=False)
    x, memory = torch.randn(2, T, 32), torch.randn(2, S, 32)
    config = LlamaConfig(hidden_size=32, num_attention_heads=4, head_dim=8,
                         rope_parameters={"rope_type": "default", "rope_theta": theta})
    cos, sin = LlamaRotaryEmbedding(config)(memory, torch.arange(S)[None])
    q = A.split_heads(ours.q_proj(x), 4)
    k, v = A.split_heads(ours.k_proj(memory), 4), A.split_heads(ours.v_proj(memory), 4)
    q_rot, _ = apply_rotary_pos_emb(q, q, cos[:, :T], sin[:, :T])  # queries at 0..T-1
    _, k_rot = apply_rotary_pos_emb(k, k, cos, sin)  # keys at 0..S-1
    y = F.scaled_dot_product_attention(q_rot, k_rot, v)
    torch.testing.assert_close(ours(x, memory), ours.o_proj(A.merge_heads(y)))


# ----------------------------------------------------------------------------- ALiBi


@pytest.mark.parametrize("n_heads", [*range(1, 17), 24, 32, 40])
def test_alibi_slopes_match_bloom(n_heads):
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    # BLOOM's tensor is slope_h * j for key j (batch of one, no padding): j = 1 gives the slope.
    bloom = build_alibi_tensor(torch.ones(1, 3), n_heads, torch.float32)
    torch.testing.assert_close(A.alibi_slopes(n_heads), bloom[:, 0, 1])


def test_alibi_attention_matches_bloom_bias():
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    torch.manual_seed(0)
    H, T = 6, 9
    mha = A.MultiHeadAttention(48, H, alibi=True)
    x = torch.randn(2, T, 48)
    q, k, v = (A.split_heads(p(x), H) for p in (mha.q_proj, mha.k_proj, mha.v_proj))
    # BLOOM adds slope * j and relies on softmax ignoring the per-row constant -slope * i.
    bloom = build_alibi_tensor(torch.ones(1, T), H, torch.float32).view(H, 1, T)
    causal = A.as_additive_mask(A.causal_mask(T))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bloom + causal)
    got, weights = mha(x, is_causal=True, return_weights=True)
    torch.testing.assert_close(got, mha.o_proj(A.merge_heads(y)))
    assert weights.shape == (2, H, T, T)
    plain = mha(x, is_causal=True, mask=-A.alibi_bias(H, T))  # a mask that cancels the bias
    no_bias = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(plain, mha.o_proj(A.merge_heads(no_bias)))


# ----------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("block_size,query_block_size", [(1, None), (3, None), (7, 5),
                                                        (16, 2), (64, None)])
@pytest.mark.parametrize("L,S", [(16, 16), (13, 21), (21, 13)])
def test_tiled_equals_exact(L, S, block_size, query_block_size, is_causal):
    q, k, v = qkv(L=L, S=S, Ev=6, dtype=torch.float64)
    tiled = A.tiled_attention(q, k, v, block_size, is_causal=is_causal,
                              query_block_size=query_block_size)
    torch.testing.assert_close(tiled, F.scaled_dot_product_attention(q, k, v,
                                                                     is_causal=is_causal))


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 20), S=st.integers(1, 20), block=st.integers(1, 25),
       q_block=st.integers(1, 25), causal=st.booleans(), seed=st.integers(0, 99))
def test_tiled_equals_exact_on_random_shapes(L, S, block, q_block, causal, seed):
    q, k, v = qkv(1, 2, L, S, 4, 3, dtype=torch.float32, seed=seed)
    tiled = A.tiled_attention(q, k, v, block, is_causal=causal, query_block_size=q_block)
    exact = A.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(tiled, exact, atol=1e-5, rtol=1e-5)


def test_tiled_gradients_match_torch():
    q, k, v = (t.requires_grad_() for t in qkv(L=10, dtype=torch.float64))
    grads = torch.autograd.grad(A.tiled_attention(q, k, v, 3, is_causal=True).sum(), (q, k, v))
    expected = torch.autograd.grad(
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum(), (q, k, v))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


class LargestTensor(TorchDispatchMode):
    """Records the most elements any single op output had."""

    def __init__(self) -> None:
        super().__init__()
        self.most = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.most = max(self.most, t.numel())
        return out


def test_tiled_never_materialises_the_score_matrix():
    B, H, N, D, block = 1, 2, 256, 8, 32
    q, k, v = qkv(B, H, N, N, D)
    with LargestTensor() as naive:
        A.scaled_dot_product_attention(q, k, v, is_causal=True)
    with LargestTensor() as tiled:
        A.tiled_attention(q, k, v, block, is_causal=True)
    assert naive.most >= B * H * N * N  # the check can see an N x N matrix...
    assert tiled.most <= max(B * H * block * block, B * H * N * D)  # ...and tiling has none


def test_online_softmax_update_is_order_independent_and_handles_masked_tiles():
    gen = torch.Generator().manual_seed(0)
    scores, values = torch.randn(3, 12, generator=gen), torch.randn(12, 2, generator=gen)
    scores[0, :8] = float("-inf")  # row 0's first tiles are fully masked
    expected = torch.softmax(scores, -1) @ values
    for order in ([0, 1, 2], [2, 0, 1]):
        state = torch.zeros(3, 2), torch.full((3,), float("-inf")), torch.zeros(3)
        for tile in order:
            cols = slice(4 * tile, 4 * tile + 4)
            state = A.online_softmax_update(*state, scores[:, cols], values[cols])
        acc, row_max, row_sum = state
        torch.testing.assert_close(acc / row_sum[:, None], expected)
        torch.testing.assert_close(row_max, scores.amax(-1))


# ----------------------------------------------------------------------------- Performer


def test_performer_error_falls_as_features_grow():
    # Deterministic: fixed inputs and seeds. Small-norm q, k, where FAVOR+ is meant to work.
    gen = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 2, 128, 16, generator=gen).unbind(0)
    counts = (8, 32, 128, 512, 2048)
    errors = A.performer_approximation_error(q / 2, k / 2, v, counts, seeds=range(5))
    values = [errors[m] for m in counts]
    assert values == sorted(values, reverse=True), errors
    assert errors[2048] < 0.15 and errors[2048] < errors[8] / 4, errors
    # Against torch's exact attention, not only ours:
    exact = F.scaled_dot_product_attention(q / 2, k / 2, v)
    approx = A.performer_attention(q / 2, k / 2, v, n_features=2048, seed=0)
    assert (approx - exact).norm() / exact.norm() < 0.15


def test_orthogonal_features_beat_independent_ones():
    gen = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(3, 1, 128, 32, generator=gen).unbind(0)
    q, k = q / 2, k / 2
    ortho = A.performer_approximation_error(q, k, v, (256,), orthogonal=True)[256]
    iid = A.performer_approximation_error(q, k, v, (256,), orthogonal=False)[256]
    assert ortho < iid


@pytest.mark.parametrize("orthogonal", [False, True])
def test_positive_features_estimate_the_softmax_kernel_without_bias(orthogonal):
    gen = torch.Generator().manual_seed(3)
    q, k = (torch.randn(2, 6, 4, generator=gen) / 3).unbind(0)  # small norms: low variance
    estimates = []
    for seed in range(5):  # fixed seeds: deterministic, but an average of 200,000 features
        w = A.random_feature_matrix(40_000, 4, seed=seed, orthogonal=orthogonal)
        estimates.append((A.positive_random_features(q, w)
                          * A.positive_random_features(k, w)).sum(-1))
    estimate = torch.stack(estimates).mean(0)
    torch.testing.assert_close(estimate, torch.exp((q * k).sum(-1)), rtol=0.02, atol=0)


def test_random_features_are_positive_and_gaussian_like():
    w = A.random_feature_matrix(4096, 16, seed=0)
    assert abs(w.pow(2).mean().item() - 1.0) < 0.05  # rows ~ N(0, I): E[w_i^2] = 1
    block = w[:16] @ w[:16].T
    torch.testing.assert_close(block, torch.diag(block.diagonal()), atol=1e-4, rtol=0)
    assert (A.positive_random_features(torch.randn(5, 16), w) > 0).all()


# ----------------------------------------------------------------------------- KV cache


def test_kv_cache_bytes_per_token_matches_a_transformers_cache():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=48, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                         head_dim=8)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    T = 7
    with torch.no_grad():
        cache = model(torch.randint(0, 50, (1, T)), use_cache=True).past_key_values
    stored = sum(t.numel() * t.element_size()
                 for layer in cache.layers for t in (layer.keys, layer.values))
    assert stored == T * A.kv_cache_bytes_per_token(3, 2, 8, torch.bfloat16)
    assert A.kv_cache_bytes_per_token(3, 2, 8, "bfloat16") == stored // T


def test_kv_cache_shrinks_with_fewer_kv_heads():
    mha, gqa, mqa = (A.kv_cache_bytes_per_token(30, h, 64, torch.float16) for h in (9, 3, 1))
    assert (mha // gqa, mha // mqa) == (3, 9)
    assert A.kv_cache_bytes_per_token(1, 1, 1, torch.float32) == 2 * 4  # a key and a value


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call,message", [
    (lambda: A.scaled_dot_product_attention(torch.randn(2, 4), torch.randn(3, 5),
                                            torch.randn(3, 5)),
     r"same last dimension.*got q \(2, 4\) and k \(3, 5\)"),
    (lambda: A.scaled_dot_product_attention(torch.randn(2, 4), torch.randn(3, 4),
                                            torch.randn(5, 4)),
     r"same number of positions; got k \(3, 4\) and v \(5, 4\)"),
    (lambda: A.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(5, 3, 4),
                                            torch.randn(5, 3, 4)),
     r"must broadcast"),
    (lambda: A.scaled_dot_product_attention(torch.randn(1, 3, 4), torch.randn(1, 5, 4),
                                            torch.randn(1, 5, 4), torch.ones(3, 4).bool()),
     r"mask must broadcast to the scores' shape \(1, 3, 5\).*got mask \(3, 4\)"),
    (lambda: A.scaled_dot_product_attention(torch.randn(3, 4), torch.randn(3, 4),
                                            torch.randn(3, 4), torch.ones(2, 3, 3).bool()),
     r"mask must broadcast to the scores' shape \(3, 3\)"),
    (lambda: A.scaled_dot_product_attention(torch.randn(3, 4), torch.randn(3, 4),
                                            torch.randn(3, 4), torch.ones(3, 3, dtype=torch.long)),
     r"bool .* or float .*got torch.int64.*padding_mask"),
    (lambda: A.scaled_dot_product_attention(torch.randn(3, 4), torch.randn(3, 4).double(),
                                            torch.randn(3, 4)),
     r"share a dtype"),
    (lambda: A.scaled_dot_product_attention(torch.randn(1, 6, 3, 4), torch.randn(1, 4, 3, 4),
                                            torch.randn(1, 4, 3, 4), enable_gqa=True),
     r"H divisible by H_kv"),
    (lambda: A.MultiHeadAttention(30, 4), r"d_model must be divisible by n_heads.*30.*4"),
    (lambda: A.MultiHeadAttention(32, 4, 3),
     r"n_heads must be divisible by n_kv_heads.*n_heads=4, n_kv_heads=3"),
    (lambda: A.MultiHeadAttention(30, 2, rope_theta=1e4), r"even head_dim.*head_dim=15"),
    (lambda: A.MultiHeadAttention(32, 4, rope_theta=1e4, alibi=True), r"not both"),
    (lambda: A.MultiHeadAttention(32, 4)(torch.randn(2, 5, 16)),
     r"x must be \(B, T, d_model=32\); got \(2, 5, 16\)"),
    (lambda: A.MultiHeadAttention(32, 4)(torch.randn(2, 5, 32), torch.randn(3, 5, 32)),
     r"context must be \(B=2, S, kv_dim=32\); got \(3, 5, 32\)"),
    (lambda: A.tiled_attention(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4), 0),
     r"block_size must be a positive int; got 0"),
    (lambda: A.tiled_attention(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4), 2,
                               query_block_size=-1),
     r"query_block_size must be a positive int; got -1"),
    (lambda: A.sliding_window_mask(5, 0), r"window must be a positive int; got 0"),
    (lambda: A.padding_mask([3, 5], max_len=4), r"lengths must be in \[0, max_len=4\]"),
    (lambda: A.padding_mask(torch.tensor([[1, 2]])), r"only 0 and 1"),
    (lambda: A.split_heads(torch.randn(2, 3, 10), 4), r"divisible by n_heads=4.*\(2, 3, 10\)"),
    (lambda: A.merge_heads(torch.randn(2, 3, 10)), r"\(B, heads, T, head_dim\)"),
    (lambda: A.performer_attention(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4), 0),
     r"n_features must be a positive int; got 0"),
    (lambda: A.kv_cache_bytes_per_token(30, 0, 64), r"n_kv_heads must be a positive int"),
    (lambda: A.kv_cache_bytes_per_token(30, 3, 64, "float17"), r"torch dtype.*'float17'"),
    (lambda: A.alibi_slopes(0), r"n_heads must be a positive int; got 0"),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_scale_default_is_inverse_sqrt_of_head_dim():
    q, k, v = qkv(E=16)
    torch.testing.assert_close(A.scaled_dot_product_attention(q, k, v),
                               A.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(16)))


# ----------------------------------------------------------------------------- head analysis


def hand_built_heads() -> torch.Tensor:
    """Three heads over prefix, A, B, C, A, B, C (period 3, start 1), written out by hand:
    head 0 reads the previous token, head 1 is a perfect induction head, head 2 is uniform
    causal attention."""
    T = 7
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0
    for t in range(1, T):
        previous[t, t - 1] = 1.0
    induction = torch.zeros(T, T)
    induction[:4, 0] = 1.0  # nothing repeated yet: rest on the prefix
    induction[4, 2] = induction[5, 3] = induction[6, 4] = 1.0  # 2nd A->1st B, B->C, C->2nd A
    uniform = A.causal_mask(T).float()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    return torch.stack([previous, induction, uniform])[None]  # (layer=1, heads=3, T, T)


def test_previous_token_and_induction_scores_on_hand_built_heads():
    heads = hand_built_heads()
    uniform_previous = sum(1 / (t + 1) for t in range(1, 7)) / 6  # row t spreads over t + 1
    torch.testing.assert_close(A.previous_token_scores(heads),
                               torch.tensor([[1.0, 1 / 6, uniform_previous]]))
    # head 0 attends t-1, which for t=4,5,6 is 3,4,5, not the successor 2,3,4 (t - period + 1)
    torch.testing.assert_close(A.induction_scores(heads, period=3, start=1),
                               torch.tensor([[0.0, 1.0, (1/5 + 1/6 + 1/7) / 3]]))


def test_head_scores_match_a_loop_over_positions():
    weights = torch.softmax(torch.randn(2, 3, 4, 11, 11), dim=-1)  # (layer, batch, head, T, T)
    period, start = 4, 3
    loop_prev = torch.zeros(2, 3, 4)
    loop_induction = torch.zeros(2, 3, 4)
    for index in torch.cartesian_prod(*map(torch.arange, (2, 3, 4))).tolist():
        w = weights[tuple(index)]
        loop_prev[tuple(index)] = sum(w[t, t - 1] for t in range(1, 11)) / 10
        rows = range(start + period, 11)
        loop_induction[tuple(index)] = sum(w[t, t - period + 1] for t in rows) / len(rows)
    torch.testing.assert_close(A.previous_token_scores(weights), loop_prev)
    torch.testing.assert_close(A.induction_scores(weights, period, start), loop_induction)


def test_repeated_random_tokens_repeat_after_the_prefix():
    ids = A.repeated_random_tokens(50, period=6, repeats=3, prefix=[7, 8], seed=1, low=10)
    assert ids.shape == (1, 2 + 18) and ids[0, :2].tolist() == [7, 8]
    body = ids[0, 2:].view(3, 6)
    assert (body == body[0]).all() and (body >= 10).all() and (body < 50).all()
    assert not torch.equal(ids, A.repeated_random_tokens(50, period=6, repeats=3, seed=2))


@pytest.mark.parametrize("call, message", [
    (lambda: A.previous_token_scores(torch.ones(3, 4)), r"\(\.\.\., T, T\).*got \(3, 4\)"),
    (lambda: A.previous_token_scores(torch.ones(1, 1)), r"at least 2 positions"),
    (lambda: A.induction_scores(torch.ones(6, 6), period=1), r"period >= 2.*period=1"),
    (lambda: A.induction_scores(torch.ones(6, 6), period=3, start=3), r"start \+ period < T = 6"),
    (lambda: A.repeated_random_tokens(10, 4, low=10), r"low must be in \[0, vocab_size=10\)"),
])
def test_head_analysis_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
