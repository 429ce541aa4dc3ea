"""llmlab.training, each piece cross-checked against the library doing the same job:
torch's cross-entropy, AdamW, schedulers and clipping, transformers' MLM collator; then the
loop itself: bit-for-bit resume, and data parallelism equal to one process."""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmlab import decoding
from llmlab.model import GPT, ModelConfig, lm_loss
from llmlab.tokenization import CharTokenizer
from llmlab.training import (
    AdamW,
    TrainConfig,
    Trainer,
    WarmupCosine,
    WindowSampler,
    accumulate_gradients,
    apply_overrides,
    autocast,
    clip_grad_norm,
    cross_entropy,
    enable_activation_checkpointing,
    load_config,
    load_trained,
    mask_tokens,
    read_tokens,
    run_data_parallel,
    span_corruption,
    split_tokens,
    token_dtype,
    undo_span_corruption,
    write_tokens,
)
from llmlab.training.config import TOKENIZERS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(tmp_path, **changes) -> TrainConfig:
    config = load_config(CONFIGS / "tiny_test.yaml", [f"out_dir={tmp_path / 'run'}"])
    return dataclasses.replace(config, **changes)


def tiny_model(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig.gpt2_style(vocab_size=50, context_length=16, n_layer=2, n_head=2,
                                      d_model=32, **changes))


# ----------------------------------------------------------------------------- data


def test_token_files_round_trip_through_a_memory_map(tmp_path):
    ids = np.random.default_rng(0).integers(0, 50257, size=1000)
    path = write_tokens(ids, tmp_path / "gpt2.bin", vocab_size=50257)
    back = read_tokens(path, vocab_size=50257)
    assert isinstance(back, np.memmap) and back.dtype == np.uint16
    assert path.stat().st_size == 2 * len(ids) and np.array_equal(back, ids)
    big = write_tokens([0, 100_000], tmp_path / "cl100k.bin", vocab_size=100_277)
    assert read_tokens(big, 100_277).tolist() == [0, 100_000]
    assert token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32
    with pytest.raises(ValueError, match=r"ids must lie in \[0, vocab_size=10\)"):
        write_tokens([3, 10], tmp_path / "bad.bin", vocab_size=10)
    with pytest.raises(FileNotFoundError, match="encode_file"):
        read_tokens(tmp_path / "missing.bin", 10)


def test_char_tokenizer_round_trips_shakespeare():
    from llmlab import assets

    text = assets.load("shakespeare")[:50_000]
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(set(text)) and list(tok.chars) == sorted(set(text))


def test_split_is_contiguous_and_rejects_bad_fractions():
    train_ids, val_ids = split_tokens(np.arange(100), 0.1)
    assert train_ids.tolist() == list(range(90)) and val_ids.tolist() == list(range(90, 100))
    with pytest.raises(ValueError, match="val_fraction"):
        split_tokens(np.arange(10), 1.0)


def test_window_sampler_is_seeded_shifted_and_resumable():
    ids = np.arange(1000, dtype=np.uint16)
    a, b = WindowSampler(ids, 4, 8, seed=3), WindowSampler(ids, 4, 8, seed=3)
    x, y = a.sample()
    assert torch.equal(x, b.sample()[0]) and torch.equal(y, x + 1)
    assert x.shape == (4, 8) and not torch.equal(x, a.sample()[0])  # the stream moves on
    state = a.state_dict()
    expected = a.sample()[0]
    c = WindowSampler(ids, 4, 8, seed=99)
    c.load_state_dict(state)
    assert torch.equal(c.sample()[0], expected)


def test_ranks_split_the_batch_one_process_would_draw():
    ids = np.arange(500, dtype=np.uint16)
    whole = WindowSampler(ids, 6, 5, seed=1).sample()[0]
    parts = [WindowSampler(ids, 6, 5, seed=1, rank=r, world_size=2).sample()[0] for r in (0, 1)]
    assert torch.equal(torch.cat(parts), whole)
    with pytest.raises(ValueError, match="batch_size=5 must split evenly over world_size=2"):
        WindowSampler(ids, 5, 5, world_size=2)


# ----------------------------------------------------------------------------- objectives


def test_cross_entropy_matches_torch_values_and_gradients_with_ignore_index():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 37, generator=g) * 30).requires_grad_()  # large: exp overflows
    targets = torch.randint(37, (64,), generator=g)
    targets[::5] = -100
    ours = cross_entropy(logits, targets)
    ours.backward()
    ours_grad, logits.grad = logits.grad.clone(), None
    theirs = F.cross_entropy(logits, targets, ignore_index=-100)
    theirs.backward()
    assert torch.isfinite(ours) and torch.allclose(ours, theirs, rtol=1e-6, atol=1e-5)
    assert torch.allclose(ours_grad, logits.grad, atol=1e-6)
    assert torch.isnan(cross_entropy(logits, torch.full((64,), -100)))  # as torch: 0 / 0


def test_cross_entropy_is_a_teaching_copy_of_the_models_loss_and_checks_shapes():
    logits, targets = torch.randn(2, 5, 11), torch.randint(11, (2, 5))
    targets[0, 1] = -100
    ours = cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert torch.allclose(ours, lm_loss(logits, targets), atol=1e-6)
    with pytest.raises(ValueError, match=r"got logits \(2, 5, 11\) and targets \(2, 4\)"):
        lm_loss(logits, targets[:, :4])
    with pytest.raises(ValueError, match=r"targets must be in \[0, vocab=11\)"):
        cross_entropy(logits[0], torch.tensor([0, 1, 2, 3, 11]))


def _bert_tokenizer(n_words: int = 200):
    from transformers import BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(n_words)]
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(words)})


def _mlm_rates(ids, inputs, labels, mask_id):
    chosen = labels != -100
    n = chosen.sum().item()
    return {"chosen": n / ids.numel(),
            "masked": (inputs[chosen] == mask_id).sum().item() / n,
            "unchanged": (inputs[chosen] == ids[chosen]).sum().item() / n}


def test_masked_lm_rates_are_15_percent_80_10_10_like_transformers_collator():
    from transformers import DataCollatorForLanguageModeling

    tokenizer = _bert_tokenizer()
    assert len(tokenizer) == 205
    vocab, mask_id = len(tokenizer), tokenizer.mask_token_id
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (256, 128), generator=g)
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    inputs, labels = mask_tokens(ids, vocab, mask_id, g, special_ids=[2, 3])
    ours = _mlm_rates(ids, inputs, labels, mask_id)
    assert not (labels[special] != -100).any()  # [CLS] and [SEP] are never chosen
    assert abs(ours["chosen"] - 0.15 * 126 / 128) < 0.005
    assert abs(ours["masked"] - 0.8) < 0.015
    assert abs(ours["unchanged"] - (0.1 + 0.1 / vocab)) < 0.015  # a random token may repeat
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    their_inputs, their_labels = collator.torch_mask_tokens(ids.clone(), special.long())
    theirs = _mlm_rates(ids, their_inputs, their_labels, mask_id)
    for key in ours:
        assert abs(ours[key] - theirs[key]) < 0.02, (key, ours, theirs)


def test_span_corruption_is_invertible_and_hides_15_percent_in_spans_of_3():
    rng = np.random.default_rng(0)
    sentinels = list(range(1000, 1020))
    noise, spans = 0, 0
    for length in [10, 37, 64, 100, 128] * 20:
        ids = rng.integers(0, 500, size=length).tolist()
        inputs, targets = span_corruption(ids, sentinels, rng)
        assert undo_span_corruption(inputs, targets, sentinels) == ids
        n_spans = sum(t in sentinels for t in inputs)
        assert targets[0] == sentinels[0] and targets[-1] == sentinels[n_spans]
        noise += len(targets) - n_spans - 1
        spans += n_spans
        if length == 100:
            assert len(targets) - n_spans - 1 == 15
    total = sum([10, 37, 64, 100, 128]) * 20
    assert abs(noise / total - 0.15) < 0.01
    assert abs(noise / spans - 3.0) < 0.5
    with pytest.raises(ValueError, match="sentinel ids must not occur"):
        span_corruption([1, 2, 1000], sentinels, rng)


# ----------------------------------------------------------------------------- optimisation


def test_adamw_matches_torch_step_by_step_with_weight_decay_groups():
    """Both optimizers get the same gradients (those of our model's real loss) at every
    step, so any difference comes from the update rule, not from chaotic training."""
    ours_model, torch_model = tiny_model(), tiny_model()

    def groups(model):
        return [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]

    ours = AdamW(groups(ours_model), lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    theirs = torch.optim.AdamW(groups(torch_model), lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
                               amsgrad=False)
    schedule = WarmupCosine(3e-3, 3e-4, warmup_steps=10, total_steps=100)
    g = torch.Generator().manual_seed(0)
    for step in range(100):
        for opt in (ours, theirs):
            for group in opt.param_groups:
                group["lr"] = schedule(step)
        ours.zero_grad()
        x = torch.randint(50, (4, 16), generator=g)
        lm_loss(ours_model(x[:, :-1]), x[:, 1:]).backward()
        for a, b in zip(ours_model.parameters(), torch_model.parameters(), strict=True):
            b.grad = a.grad.clone()
        ours.step()
        theirs.step()
        worst = max((a - b).abs().max().item() for a, b in
                    zip(ours_model.parameters(), torch_model.parameters(), strict=True))
        assert worst < 1e-6, (step, worst)
    moved = (ours_model.tok_emb.weight - tiny_model().tok_emb.weight).abs().max()
    assert moved > 0.03  # 100 steps really moved the weights (lr 3e-3 a step at most)


def test_adamw_decays_weights_without_gradient_signal():
    w = nn.Parameter(torch.ones(3))
    opt = AdamW([w], lr=0.1, weight_decay=0.5)
    w.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((3,), 0.95))  # decoupled: p *= 1 - lr * wd
    with pytest.raises(ValueError, match=r"betas must be in \[0, 1\)"):
        AdamW([w], betas=(0.9, 1.0))


def test_warmup_cosine_equals_torch_schedulers():
    max_lr, min_lr, warmup, total = 1e-3, 1e-4, 10, 60
    schedule = WarmupCosine(max_lr, min_lr, warmup, total)
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=max_lr)
    sequential = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (warmup + 1), total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr),
    ], milestones=[warmup])
    opt_lambda = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=max_lr)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(opt_lambda, schedule.factor)
    for step in range(total + 1):
        assert math.isclose(schedule(step), opt.param_groups[0]["lr"], rel_tol=1e-9), step
        assert math.isclose(schedule(step), opt_lambda.param_groups[0]["lr"], rel_tol=1e-12)
        opt.step(), opt_lambda.step()
        sequential.step(), lambda_lr.step()
    assert schedule(warmup) == max_lr and schedule(total) == min_lr == schedule(total + 50)
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        WarmupCosine(1.0, 0.1, 10, 10)


@pytest.mark.parametrize("max_norm", [0.05, 1e3])
def test_clip_grad_norm_matches_torch(max_norm):
    ours_model, torch_model = tiny_model(), tiny_model()
    x = torch.randint(50, (2, 9))
    for m in (ours_model, torch_model):
        lm_loss(m(x[:, :-1]), x[:, 1:]).backward()
    ours = clip_grad_norm(ours_model.parameters(), max_norm)
    theirs = torch.nn.utils.clip_grad_norm_(torch_model.parameters(), max_norm)
    assert torch.allclose(ours, theirs, rtol=1e-6)
    for a, b in zip(ours_model.parameters(), torch_model.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-8)
    after = torch.cat([p.grad.flatten() for p in ours_model.parameters()]).norm()
    assert after <= max_norm * (1 + 1e-5)


def test_gradient_accumulation_equals_the_big_batch():
    big, small = tiny_model(), tiny_model()
    data = torch.randint(50, (8, 13))
    x, y = data[:, :-1], data[:, 1:]
    lm_loss(big(x), y).backward()
    micro = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]
    mean_loss = accumulate_gradients(small, micro, lm_loss, n_micro=4)
    assert math.isclose(mean_loss, lm_loss(big(x), y).item(), rel_tol=1e-5)
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-7)
    with pytest.raises(ValueError, match="expected 4 micro-batches; got 2"):
        accumulate_gradients(small, micro[:2], lm_loss, n_micro=4)


def test_activation_checkpointing_recomputes_blocks_and_keeps_gradients():
    plain = tiny_model(dropout=0.1)
    checkpointed = enable_activation_checkpointing(copy.deepcopy(plain))
    calls = []
    checkpointed.blocks[0].attn.register_forward_hook(lambda *args: calls.append(1))
    data = torch.randint(50, (4, 13))
    losses = []
    for model in (plain, checkpointed):
        torch.manual_seed(5)  # the same dropout masks, also when the forward is replayed
        loss = lm_loss(model(data[:, :-1]), data[:, 1:])
        loss.backward()
        losses.append(loss)
    assert torch.equal(losses[0], losses[1])
    assert len(calls) == 2  # forward, then again during backward
    assert list(plain.state_dict()) == list(checkpointed.state_dict())
    for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_bf16_autocast_on_cpu_and_fp16_only_on_cuda():
    model = tiny_model()
    x = torch.randint(50, (2, 9))
    with autocast("bf16", "cpu"):
        logits = model(x[:, :-1])
        loss = lm_loss(logits, x[:, 1:])
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert abs(loss.item() - lm_loss(model(x[:, :-1]), x[:, 1:]).item()) < 0.05
    loss.backward()
    assert model.tok_emb.weight.grad.dtype == torch.float32  # the weights stay float32
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        autocast("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast("int8", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 + GradScaler needs CUDA")
def test_fp16_with_grad_scaler_trains_on_cuda(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, precision="fp16", device="cuda"))
    trainer.fit()
    assert trainer.scaler is not None and math.isfinite(trainer.history[-1]["loss"])
    assert trainer.history[-1]["loss"] < trainer.history[0]["loss"]


# ----------------------------------------------------------------------------- configs


def test_every_config_in_configs_loads():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert {"shakespeare_char.yaml", "shakespeare_bpe.yaml", "tiny_test.yaml"} <= set(names)
    for name in names:
        config = load_config(CONFIGS / name)
        assert config.tokenizer in TOKENIZERS and config.model_config(256).vocab_size == 256


def test_config_errors_name_the_key_and_suggest(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'lerning_rate'|did you mean"):
        TrainConfig.from_dict({"lerning_rate": 1e-3})
    with pytest.raises(ValueError, match=r"unknown config key 'model.n_layers' "
                                         r"\(did you mean 'model.n_layer'\?\)"):
        TrainConfig.from_dict({"model": {"n_layers": 2}})
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        TrainConfig.from_dict({"batch_size": 0})
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig.from_dict({"precision": "fp8"})
    with pytest.raises(ValueError, match="overrides look like key=value"):
        apply_overrides({}, ["max_steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(bad)
    config = load_config(CONFIGS / "tiny_test.yaml", ["lr=3e-4", "model.n_layer=1"])
    assert config.lr == 3e-4 and config.model["n_layer"] == 1


# ----------------------------------------------------------------------------- the loop


def test_training_lowers_the_loss_and_logs_metrics(tmp_path):
    config = tiny_config(tmp_path, max_steps=30, tensorboard=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(config)
        trainer.fit()
    first, last = trainer.evaluations[0], trainer.evaluations[-1]
    assert [e["step"] for e in trainer.evaluations] == [10, 20, 30]
    assert last["val_loss"] < first["val_loss"] - 0.2
    assert math.isclose(last["val_ppl"], math.exp(last["val_loss"]))
    assert trainer.history[0]["loss"] > trainer.history[-1]["loss"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 30 // config.log_interval + 3
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert any("pip install tensorboard" in str(w.message) for w in caught)
    else:
        assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    model, tokenizer = load_trained(tmp_path / "run" / "checkpoint.pt")
    sampled = decoding.generate(model, torch.zeros(1, 1, dtype=torch.long), 20,
                                decoding.SamplingConfig(), use_cache=False)
    text = tokenizer.decode(sampled[0].tolist())
    assert len(text) == 21 and isinstance(tokenizer, CharTokenizer)


def test_bf16_and_activation_checkpointing_train_in_the_loop(tmp_path):
    config = tiny_config(tmp_path, max_steps=12, warmup_steps=2, eval_interval=12,
                         precision="bf16", activation_checkpointing=True)
    trainer = Trainer(config)
    trainer.fit()
    assert all(math.isfinite(r["loss"]) for r in trainer.history)
    assert trainer.history[-1]["loss"] < trainer.history[0]["loss"]
    assert trainer.model.blocks[0]._llmlab_checkpointed
    assert trainer.model.tok_emb.weight.dtype == torch.float32


def test_resume_continues_bit_for_bit(tmp_path):
    config = tiny_config(tmp_path, max_steps=8, eval_interval=3, warmup_steps=2,
                         grad_accum_steps=2, model={"n_layer": 2, "n_head": 2, "d_model": 32,
                                                    "dropout": 0.1})
    straight = Trainer(dataclasses.replace(config, out_dir=str(tmp_path / "straight")))
    straight.fit()
    rng_after = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
    first = Trainer(config)
    first.fit(steps=4)
    random.random(), np.random.rand(), torch.rand(3)  # whatever ran in between
    resumed = Trainer(dataclasses.replace(config, resume=True))
    assert resumed.step == 4
    resumed.fit()
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    assert resumed.evaluations == straight.evaluations
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), rng_after[0])  # dropout drew the same numbers
    assert np.array_equal(np.random.get_state()[1], rng_after[1])
    assert random.getstate() == rng_after[2]
    fresh = Trainer(dataclasses.replace(config, resume=False))  # no resume: starts over
    assert fresh.step == 0


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    Trainer(tiny_config(tmp_path, max_steps=5, warmup_steps=1)).fit()
    other = tiny_config(tmp_path, resume=True, model={"n_layer": 1, "d_model": 32, "n_head": 2})
    with pytest.raises(ValueError, match="was written for another model"):
        Trainer(other)


def _final_weights(path):
    return torch.load(path, weights_only=False)["model"]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_equal_one_process_with_the_same_global_batch(tmp_path, mode):
    config = tiny_config(tmp_path, max_steps=5, warmup_steps=1, eval_interval=5,
                         eval_batches=1)
    single = Trainer(dataclasses.replace(config, out_dir=str(tmp_path / "single")))
    single.fit()
    checkpoint = run_data_parallel(dataclasses.replace(config, distributed=mode), world_size=2)
    weights = _final_weights(checkpoint)
    expected = single.model.state_dict()
    assert weights.keys() == expected.keys()
    worst = max((weights[k] - expected[k]).abs().max().item() for k in expected)
    assert worst < 1e-6, worst
    assert (expected["tok_emb.weight"] - tiny_model().tok_emb.weight[:1]).abs().max() > 0
    losses = [r["loss"] for r in torch.load(checkpoint, weights_only=False)["history"]]
    assert np.allclose(losses, [r["loss"] for r in single.history], atol=1e-5)
