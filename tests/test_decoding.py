"""llmlab.decoding's logit processors give what transformers' LogitsProcessors give on the
same logits, and reject bad settings with a clear message."""

from __future__ import annotations

import pytest
import torch
from transformers.generation import logits_process as hf

from llmlab import assets, decoding
from llmlab.model import GPT, ModelConfig

VOCAB = 50


def random_logits(seed: int, batch: int = 4, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=g) * 3
    logits[0, :5] = logits[0, 5]  # ties, which the cut-offs must treat as transformers does
    return logits


def history(seed: int, batch: int = 4, length: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


SEEDS = range(5)


def same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Equal including where the -inf are."""
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_matches_transformers(seed, temperature):
    logits = random_logits(seed)
    same(decoding.apply_temperature(logits, temperature),
         hf.TemperatureLogitsWarper(temperature)(history(seed), logits.clone()))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 3, 10, VOCAB, VOCAB + 7])
def test_top_k_matches_transformers(seed, k):
    logits = random_logits(seed)
    same(decoding.top_k_filter(logits, k), hf.TopKLogitsWarper(k)(history(seed), logits.clone()))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("keep", [1, 3])
def test_top_p_matches_transformers(seed, p, keep):
    logits = random_logits(seed)
    same(decoding.top_p_filter(logits, p, keep),
         hf.TopPLogitsWarper(p, min_tokens_to_keep=keep)(history(seed), logits.clone()))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.3, 1.0])
def test_min_p_matches_transformers(seed, min_p):
    logits = random_logits(seed)
    same(decoding.min_p_filter(logits, min_p),
         hf.MinPLogitsWarper(min_p)(history(seed), logits.clone()))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 3.0])
def test_repetition_penalty_matches_transformers(seed, penalty):
    logits, ids = random_logits(seed), history(seed)
    same(decoding.repetition_penalty(logits, ids, penalty),
         hf.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone()))


def test_frequency_and_presence_penalty_follow_their_definition():
    # transformers has no such processor: compare with the definition, token by token.
    logits, ids = random_logits(0), history(0)
    ours = decoding.frequency_presence_penalty(logits, ids, frequency=0.7, presence=0.4)
    for row in range(ids.shape[0]):
        tokens = ids[row].tolist()
        for token in range(VOCAB):
            count = tokens.count(token)
            expected = logits[row, token] - 0.7 * count - 0.4 * (count > 0)
            assert ours[row, token].item() == pytest.approx(expected.item(), abs=1e-5)


def test_logit_bias_matches_transformers_sequence_bias():
    logits, ids = random_logits(1), history(1)
    bias = {3: 2.5, 7: -100.0, 49: 1.0}
    theirs = hf.SequenceBiasLogitsProcessor({(t,): b for t, b in bias.items()})(ids, logits.clone())
    same(decoding.logit_bias(logits, bias), theirs)


@pytest.mark.parametrize("seed", SEEDS)
def test_banned_sequences_match_transformers_bad_words(seed):
    logits, ids = random_logits(seed), history(seed)
    # One banned pair is made to match the end of row 0, so both branches run.
    banned = [[5], [int(ids[0, -1]), 9], [1, 2, 3], [int(ids[1, -2]), int(ids[1, -1]), 11]]
    theirs = hf.NoBadWordsLogitsProcessor(banned, eos_token_id=None)(ids, logits.clone())
    ours = decoding.ban_sequences(logits, ids, banned)
    same(ours, theirs)
    assert ours[0, 9] == float("-inf") and ours[1, 11] == float("-inf")


def test_allow_only_matches_transformers_prefix_constraint():
    logits, ids = random_logits(2), history(2)
    allowed = [[1, 2, 3], [4], [0, 49], list(range(10))]
    constraint = hf.PrefixConstrainedLogitsProcessor(lambda row, _ids: allowed[row], 1)
    theirs = constraint(ids, logits.clone())
    same(decoding.allow_only(logits, allowed), theirs)
    shared = decoding.allow_only(logits, [7, 8])
    assert torch.isfinite(shared).sum(dim=-1).tolist() == [2, 2, 2, 2]


def test_process_logits_matches_a_transformers_processor_list():
    logits, ids = random_logits(3), history(3)
    config = decoding.SamplingConfig(temperature=0.7, top_k=20, top_p=0.9, min_p=0.02,
                                     repetition_penalty=1.2)
    pipeline = hf.LogitsProcessorList([
        hf.RepetitionPenaltyLogitsProcessor(1.2), hf.TemperatureLogitsWarper(0.7),
        hf.TopKLogitsWarper(20), hf.TopPLogitsWarper(0.9), hf.MinPLogitsWarper(0.02)])
    same(decoding.process_logits(logits, ids, config), pipeline(ids, logits.clone()))


def test_choose_next_token_greedy_and_sampled():
    logits, ids = random_logits(4), history(4)
    greedy = decoding.choose_next_token(logits, ids, decoding.SamplingConfig(greedy=True))
    assert torch.equal(greedy, logits.argmax(-1, keepdim=True))
    config = decoding.SamplingConfig(top_k=1)  # sampling from one token is greedy
    assert torch.equal(decoding.choose_next_token(logits, ids, config), greedy)
    g = torch.Generator().manual_seed(0)
    sampled = decoding.choose_next_token(logits, ids, decoding.SamplingConfig(top_k=5), g)
    top5 = logits.topk(5, dim=-1).indices
    assert sampled.shape == (4, 1) and bool((top5 == sampled).any(-1).all())


def test_sampling_follows_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, -3.0]])
    config = decoding.SamplingConfig(temperature=1.0, top_p=0.8)
    g = torch.Generator().manual_seed(0)
    start = torch.zeros(1, 1, dtype=torch.long)
    draws = [decoding.choose_next_token(logits, start, config, g).item() for _ in range(2000)]
    kept = decoding.top_p_filter(logits, 0.8).softmax(-1)[0]
    for token in range(4):
        assert draws.count(token) / len(draws) == pytest.approx(kept[token].item(), abs=0.04)


@pytest.mark.parametrize("call, message", [
    (lambda: decoding.apply_temperature(torch.zeros(1, 3), 0), "temperature must be"),
    (lambda: decoding.apply_temperature(torch.zeros(1, 3), -1.0), "temperature must be"),
    (lambda: decoding.top_k_filter(torch.zeros(1, 3), 0), "k >= 1"),
    (lambda: decoding.top_p_filter(torch.zeros(1, 3), 0.0), r"top_p must be in \(0, 1\]"),
    (lambda: decoding.top_p_filter(torch.zeros(1, 3), 1.5), r"top_p must be in \(0, 1\]"),
    (lambda: decoding.min_p_filter(torch.zeros(1, 3), -0.1), r"min_p must be in \[0, 1\]"),
    (lambda: decoding.repetition_penalty(torch.zeros(1, 3), torch.zeros(1, 2, dtype=torch.long), 0),
     "penalty must be > 0"),
    (lambda: decoding.top_k_filter(torch.zeros(3), 1), r"logits\[None\]"),
    (lambda: decoding.top_k_filter(torch.zeros(1, 3, dtype=torch.long), 1), "floating-point"),
    (lambda: decoding.repetition_penalty(torch.zeros(2, 3), torch.zeros(1, 2, dtype=torch.long), 2),
     r"input_ids must be \(batch=2"),
    (lambda: decoding.logit_bias(torch.zeros(1, 3), {5: 1.0}), r"in \[0, 3\)"),
    (lambda: decoding.ban_sequences(torch.zeros(1, 3), torch.zeros(1, 1, dtype=torch.long), [[]]),
     "at least one token"),
    (lambda: decoding.allow_only(torch.zeros(2, 3), [[0], [1], [2]]), "one list per row"),
    (lambda: decoding.allow_only(torch.zeros(1, 3), [[]]), "allows no token"),
    (lambda: decoding.SamplingConfig(top_p=2.0), "top_p must be"),
    (lambda: decoding.SamplingConfig(temperature=0.0), "use greedy decoding"),
    (lambda: decoding.SamplingConfig(frequency_penalty=3.0), r"frequency penalty .* \[-2, 2\]"),
])
def test_bad_settings_are_rejected_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- generation loops


@pytest.fixture(scope="module")
def smollm2():
    return assets.load("smollm2-135m")


@pytest.fixture(scope="module")
def ours(smollm2):
    return GPT.from_hf_llama(smollm2[0])


def tiny_model(seed: int = 0, vocab: int = 40, **overrides) -> GPT:
    torch.manual_seed(seed)
    sizes = dict(vocab_size=vocab, n_layer=2, n_head=4, n_kv_head=2, d_model=32,
                 context_length=128)
    return GPT(ModelConfig.llama_style(**{**sizes, **overrides})).eval()


def test_generate_with_and_without_cache_agree():
    model = tiny_model()
    prompt = torch.randint(0, 40, (3, 6))
    config = decoding.SamplingConfig(temperature=0.8, top_p=0.9, repetition_penalty=1.3)
    runs = [decoding.generate(model, prompt, 25, config, use_cache=cached,
                              generator=torch.Generator().manual_seed(7))
            for cached in (True, False)]
    assert torch.equal(*runs) and runs[0].shape == (3, 31)


def test_left_padded_batch_gives_each_row_its_own_greedy_output():
    model = tiny_model(1)
    prompts = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    ids, mask = decoding.left_pad(prompts, pad_token_id=0)
    batched = decoding.generate(model, ids, 12, attention_mask=mask)
    for row, prompt in enumerate(prompts):
        alone = decoding.generate(model, torch.tensor([prompt]), 12)
        assert batched[row, -12:].tolist() == alone[0, -12:].tolist(), f"row {row}"


def test_left_padded_greedy_matches_transformers(smollm2, ours):
    hf_model, tokenizer = smollm2
    texts = ["The capital of France is", "Water boils at", "1, 2, 3, 4,"]
    rows = [tokenizer(t).input_ids for t in texts]
    ids, mask = decoding.left_pad(rows, pad_token_id=tokenizer.pad_token_id or 0)
    expected = hf_model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or 0)
    got = decoding.generate(ours, ids, 10, attention_mask=mask)
    assert got.tolist() == expected.tolist()


def test_eos_ends_rows_and_pads_them():
    model = tiny_model(2)
    prompt = torch.randint(0, 40, (2, 4))
    free = decoding.generate(model, prompt, 15)
    eos = int(free[0, 6])  # a token row 0 emits early
    out = decoding.generate(model, prompt, 15, eos_token_id=eos, pad_token_id=39)
    first = out[0, 4:].tolist().index(eos)
    assert set(out[0, 4 + first + 1:].tolist()) <= {39}


@pytest.mark.parametrize("prompt, num_beams, length_penalty, early_stopping, n", [
    ("The capital of France is", 4, 1.0, True, 8),
    ("Once upon a time", 3, 0.5, False, 10),
    ("<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n", 2, 1.0, True, 24),
])
def test_beam_search_matches_transformers(smollm2, ours, prompt, num_beams, length_penalty,
                                          early_stopping, n):
    hf_model, tokenizer = smollm2
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    expected = hf_model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, num_beams=num_beams,
        do_sample=False, length_penalty=length_penalty, early_stopping=early_stopping,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    found = decoding.beam_search(ours, ids, n, num_beams, length_penalty=length_penalty,
                                 early_stopping=early_stopping, eos_token_id=tokenizer.eos_token_id)
    assert found[0].tokens == expected[0, ids.shape[1]:].tolist()
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)


def test_beam_step_keeps_the_best_extensions_of_every_beam():
    g = torch.Generator().manual_seed(0)
    beam_scores = torch.tensor([-0.5, -1.0, -3.0])
    log_probs = torch.randn(3, 7, generator=g).log_softmax(-1)
    scores, beams, tokens = decoding.beam_step(beam_scores, log_probs, 4)
    every = sorted(((float(beam_scores[b] + log_probs[b, t]), b, t)
                    for b in range(3) for t in range(7)), reverse=True)[:4]
    assert beams.tolist() == [b for _, b, _ in every] and tokens.tolist() == [t for *_, t in every]
    torch.testing.assert_close(scores, torch.tensor([s for s, _, _ in every]))
    with pytest.raises(ValueError, match=r"beam_scores \(num_beams,\) and log_probs"):
        decoding.beam_step(beam_scores, log_probs[:2], 4)


def test_generate_slides_a_window_past_the_context_without_a_cache():
    model = tiny_model(5, context_length=8, position="learned")
    prompt = torch.randint(0, 40, (2, 6))
    out = decoding.generate(model, prompt, 10, use_cache=False)  # 16 tokens > 8 positions
    assert out.shape == (2, 16)
    with torch.no_grad():  # the last token was predicted from the 8 tokens before it
        assert torch.equal(out[:, -1], model(out[:, -9:-1])[:, -1].argmax(-1))
    with pytest.raises(ValueError, match=r"\(16\) must fit in context_length=8"):
        decoding.generate(model, prompt, 10)


def test_one_beam_is_greedy():
    model = tiny_model(3)
    prompt = torch.randint(0, 40, (1, 5))
    [best] = decoding.beam_search(model, prompt, 12, num_beams=1)
    assert best.tokens == decoding.generate(model, prompt, 12)[0, 5:].tolist()


class CharTokenizer:
    """Token i is the character chr(first + i): enough to test streaming and stops."""

    def __init__(self, first: int = 97, size: int = 40):
        self.first, self.size = first, size

    def encode(self, text: str) -> list[int]:
        return [ord(c) - self.first for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(self.first + i) for i in ids)


def test_stream_pieces_join_to_the_generated_text_and_stop_strings_cut():
    model, tok = tiny_model(4), CharTokenizer()
    pieces = list(decoding.stream_text(model, tok, "abc", 20))
    generated = decoding.generate(model, torch.tensor([tok.encode("abc")]), 20)
    full = tok.decode(generated[0, 3:].tolist())
    assert "".join(pieces) == full and len(pieces) > 1
    stop = full[8:10]
    cut = decoding.generate_text(model, tok, "abc", 20, stop=[stop])
    assert cut == full[: full.find(stop)]


def test_stream_never_shows_half_a_character(smollm2, ours):
    _, tokenizer = smollm2
    pieces = list(decoding.stream_text(ours, tokenizer, "Three emoji in a row: 🙂🙂", 12))
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == tokenizer.decode(
        decoding.generate(ours, torch.tensor([tokenizer.encode("Three emoji in a row: 🙂🙂")]),
                          12)[0, len(tokenizer.encode("Three emoji in a row: 🙂🙂")):])


def test_held_back_text():
    held_back = decoding.loop._held_back
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("abc\ufffd", []) == 1
    assert held_back("abc", ["xyz"]) == 0


# ----------------------------------------------------------------------------- speculative


@pytest.mark.parametrize("k", [1, 3, 5])
def test_speculative_greedy_is_the_target_greedy(k):
    target = tiny_model(5, n_layer=4)
    draft = decoding.truncated_draft(target, 2)
    prompt = torch.randint(0, 40, (1, 6))
    got, stats = decoding.speculative_generate(target, draft, prompt, 30, k=k)
    assert torch.equal(got, decoding.generate(target, prompt, 30))
    assert stats.target_calls <= 30 and 0 <= stats.accepted <= stats.proposed


def test_speculative_with_the_target_as_its_own_draft_accepts_everything():
    target = tiny_model(6)
    prompt = torch.randint(0, 40, (1, 5))
    got, stats = decoding.speculative_generate(target, target, prompt, 20, k=4)
    assert torch.equal(got, decoding.generate(target, prompt, 20))
    assert stats.acceptance_rate == 1.0 and stats.target_calls == 4  # 5 tokens per call


def test_speculative_greedy_matches_smollm2(ours):
    prompt = torch.tensor([[1, 504, 3458, 282, 4649, 314, 2114]])
    draft = decoding.truncated_draft(ours, 20)
    got, _ = decoding.speculative_generate(ours, draft, prompt, 12, k=3)
    assert torch.equal(got, decoding.generate(ours, prompt, 12))


def test_speculative_sampling_keeps_the_target_distribution():
    # Tiny vocabulary: the distribution of the first two sampled tokens under speculative
    # sampling must equal the target's own, although the draft's differs a lot.
    target, draft = tiny_model(7, vocab=6, n_layer=2), tiny_model(8, vocab=6, n_layer=1)
    prompt = torch.tensor([[1, 2, 3]])
    config = decoding.SamplingConfig(temperature=1.0)
    with torch.no_grad():
        p = target(prompt)[0, -1].softmax(-1)
    g = torch.Generator().manual_seed(0)
    n = 3000
    firsts = [int(decoding.speculative_generate(target, draft, prompt, 1, k=2, config=config,
                                                generator=g)[0][0, 3]) for _ in range(n)]
    counts = torch.bincount(torch.tensor(firsts), minlength=6).float() / n
    assert torch.allclose(counts, p, atol=0.03), (counts, p)


def test_lookup_draft_copies_what_followed_the_latest_match():
    assert decoding.lookup_draft([1, 2, 3, 9, 1, 2, 4, 5, 1, 2], k=2) == [4, 5]  # latest "1 2"
    assert decoding.lookup_draft([7, 8, 9, 7, 8, 9, 1], k=3) == []  # "1" never occurred before
    assert decoding.lookup_draft([4, 5, 6, 0, 5, 6], k=5, max_ngram=2) == [0, 5, 6]
    assert decoding.lookup_draft([4, 5, 6, 0, 5, 6], k=1, max_ngram=3) == [0]
    with pytest.raises(ValueError, match="k .* >= 1"):
        decoding.lookup_draft([1, 2], k=0)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_prompt_lookup_is_greedy_decoding(k):
    target = tiny_model(10, n_layer=2)
    prompt = torch.tensor([[3, 4, 5, 6, 3, 4, 5, 6, 3, 4, 7, 3, 4]])
    got, stats = decoding.prompt_lookup_generate(target, prompt, 25, k=k)
    assert torch.equal(got, decoding.generate(target, prompt, 25))
    assert stats.proposed > 0 and stats.target_calls <= 25


def test_prompt_lookup_accepts_a_copied_passage_on_smollm2(ours):
    # The tokens repeat: greedy continues the pattern, and the lookup draft predicts it.
    prompt = torch.tensor([[504, 3458, 282, 4649, 314, 504, 3458, 282, 4649, 314, 504, 3458]])
    got, stats = decoding.prompt_lookup_generate(ours, prompt, 12, k=4)
    assert torch.equal(got, decoding.generate(ours, prompt, 12))
    assert stats.target_calls < 12


def test_prompt_lookup_stops_at_eos():
    target = tiny_model(11, n_layer=1)
    prompt = torch.tensor([[1, 2, 3, 1, 2]])
    plain = decoding.generate(target, prompt, 15)
    eos = int(plain[0, 7])
    got, _ = decoding.prompt_lookup_generate(target, prompt, 15, k=3, eos_token_id=eos)
    assert got[0, -1] == eos and torch.equal(got[0], plain[0, : got.shape[1]])


def test_speculative_and_draft_errors():
    target, two = tiny_model(9), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="share a vocabulary"):
        decoding.speculative_generate(target, tiny_model(9, vocab=41), two, 3)
    with pytest.raises(ValueError, match="k .* >= 1"):
        decoding.speculative_generate(target, target, two, 3, k=0)
    with pytest.raises(ValueError, match=r"n_layers must be in \[1, 2\]"):
        decoding.truncated_draft(target, 3)
    with pytest.raises(ValueError, match="one prompt"):
        decoding.beam_search(target, torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="num_beams must be"):
        decoding.beam_search(target, torch.zeros(1, 2, dtype=torch.long), 3, num_beams=0)
    with pytest.raises(ValueError, match="llmlab.model.GPT"):
        decoding.generate("not a model", torch.zeros(1, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        decoding.generate(target, torch.zeros(1, 2, dtype=torch.long), 3,
                          attention_mask=torch.ones(1, 3))


# ----------------------------------------------------------------------------- contrastive search


def naive_contrastive(model, ids, steps, top_k, alpha):
    """The definition, recomputing everything for every candidate (no cache)."""
    for _ in range(steps):
        context = model.hidden_states(ids)[0]  # (T, d)
        probs = model.lm_head(context[-1]).softmax(-1)
        top_p, top_ids = probs.topk(top_k)
        scores = []
        for p, token in zip(top_p, top_ids, strict=True):
            h = model.hidden_states(torch.cat([ids, token.view(1, 1)], dim=1))[0, -1]
            penalty = torch.nn.functional.cosine_similarity(h[None], context, dim=-1).max()
            scores.append((1 - alpha) * p - alpha * penalty)
        ids = torch.cat([ids, top_ids[int(torch.stack(scores).argmax())].view(1, 1)], dim=1)
    return ids


@pytest.mark.parametrize("top_k, alpha", [(1, 0.5), (3, 0.6), (5, 0.9)])
def test_contrastive_search_follows_its_definition(top_k, alpha):
    model = tiny_model(10)
    prompt = torch.randint(0, 40, (1, 5))
    with torch.no_grad():
        expected = naive_contrastive(model, prompt, 12, top_k, alpha)
    assert torch.equal(decoding.contrastive_search(model, prompt, 12, top_k=top_k,
                                                   penalty_alpha=alpha), expected)


def test_contrastive_search_without_penalty_is_greedy():
    model = tiny_model(11)
    prompt = torch.randint(0, 40, (1, 5))
    assert torch.equal(decoding.contrastive_search(model, prompt, 15, penalty_alpha=0.0),
                       decoding.generate(model, prompt, 15))


# ----------------------------------------------------------------------------- constrained


PRINTABLE = CharTokenizer(first=32, size=95)  # ' ' .. '~'


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("greedy", [True, False])
def test_constrained_output_always_matches(seed, greedy):
    import json

    import regex

    model = tiny_model(seed, vocab=95)
    strings = [PRINTABLE.decode([i]) for i in range(95)]
    pattern = decoding.json_object_pattern({"name": "string", "age": "integer", "ok": "boolean"},
                                           max_string=8)
    config, g = decoding.SamplingConfig(greedy=greedy), torch.Generator().manual_seed(seed)
    out = decoding.constrained_generate(model, PRINTABLE, "hi", pattern, 80, config,
                                        strings=strings, generator=g)
    assert regex.fullmatch(pattern, out)
    assert set(json.loads(out)) == {"name", "age", "ok"}
    other = decoding.constrained_generate(model, PRINTABLE, "hi", r"(cat|dog)s? [0-9]{2}", 20,
                                          config, strings=strings)
    assert regex.fullmatch(r"(cat|dog)s? [0-9]{2}", other)


def test_constrained_json_from_smollm2(smollm2, ours):
    import json

    _, tokenizer = smollm2
    pattern = decoding.json_object_pattern({"name": "string", "age": "integer"})
    prompt = "<|im_start|>user\nDescribe Ada Lovelace as JSON.<|im_end|>\n<|im_start|>assistant\n"
    out = decoding.constrained_generate(ours, tokenizer, prompt, pattern, 40)
    assert set(json.loads(out)) == {"name", "age"}


def test_constrained_errors():
    model = tiny_model(12, vocab=95)
    strings = [PRINTABLE.decode([i]) for i in range(95)]
    with pytest.raises(RuntimeError, match="ran out before"):
        decoding.constrained_generate(model, PRINTABLE, "hi", "[a-z]{10}", 4, strings=strings)
    with pytest.raises(ValueError, match="not a valid regex"):
        decoding.constrained_generate(model, PRINTABLE, "hi", "(", 4, strings=strings)
    with pytest.raises(ValueError, match="one entry per token"):
        decoding.constrained_generate(model, PRINTABLE, "hi", "a", 4, strings=strings[:3])
    with pytest.raises(ValueError, match="type must be one of"):
        decoding.json_object_pattern({"x": "date"})
