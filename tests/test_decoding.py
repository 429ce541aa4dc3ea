"""llmlab.decoding's logit processors give what transformers' LogitsProcessors give on the
same logits, and reject bad settings with a clear message."""

from __future__ import annotations

import pytest
import torch
from transformers.generation import logits_process as hf

from llmlab import decoding

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
