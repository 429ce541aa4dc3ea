"""The production path (llmlab.training.hf, llmlab.training.mlm) against llmlab's own:
the same GPT in transformers, the same batches through transformers' Trainer and the same
losses step by step; a tiny BertForMaskedLM whose loss counts masked positions only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmlab.model import GPT, ModelConfig, count_parameters
from llmlab.tokenization import CharTokenizer
from llmlab.training import (
    TrainConfig,
    Trainer,
    WarmupCosine,
    WindowSampler,
    mask_tokens,
    split_tokens,
)
from llmlab.training.hf import (
    gpt2_config,
    logged_losses,
    make_trainer,
    token_blocks,
    training_arguments,
    window_dataset,
)
from llmlab.training.mlm import (
    evaluate_fill_in,
    masked_lm_loss,
    tiny_bert_config,
    train_masked_lm,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shakespeare():
    import llmlab.assets

    text = llmlab.assets.load("shakespeare")[:200_000]
    tokenizer = CharTokenizer.from_text(text)
    train_ids, val_ids = split_tokens(np.array(tokenizer.encode(text), dtype=np.uint16))
    return tokenizer, train_ids, val_ids


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("changes", [{}, {"tie_embeddings": False, "d_ff": 48}])
def test_gpt2_config_is_the_same_architecture(changes):
    from transformers import GPT2LMHeadModel

    ours = ModelConfig.gpt2_style(vocab_size=50, context_length=16, n_layer=2, n_head=2,
                                  d_model=32, **changes)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(gpt2_config(ours)).eval()
    assert count_parameters(hf) == count_parameters(ours)
    assert ModelConfig.from_hf(hf.config) == ours
    idx = torch.randint(50, (2, 16))
    with torch.no_grad():
        assert torch.allclose(GPT.from_hf_gpt2(hf)(idx), hf(idx).logits, atol=1e-5)


def test_gpt2_config_names_what_gpt2_cannot_express():
    with pytest.raises(ValueError, match="position='rotary'.*norm='rmsnorm'.*mlp='swiglu'"):
        gpt2_config(ModelConfig.llama_style(vocab_size=50, n_layer=1, n_head=2, d_model=32))
    with pytest.raises(ValueError, match="n_kv_head=1"):
        gpt2_config(ModelConfig.gpt2_style(n_layer=1, n_head=2, n_kv_head=1, d_model=32))
    with pytest.raises(ValueError, match="expected an llmlab ModelConfig; got dict"):
        gpt2_config({"n_layer": 2})


# ----------------------------------------------------------------------------- data


def test_token_blocks_are_consecutive_with_labels_equal_to_inputs():
    blocks = token_blocks(np.arange(103, dtype=np.uint16), block_size=10)
    assert len(blocks) == 10  # the last 3 tokens do not fill a block
    for i, row in enumerate(blocks):
        assert row["input_ids"] == list(range(10 * i, 10 * i + 10)) == row["labels"]
    with pytest.raises(ValueError, match="do not fill one block"):
        token_blocks(np.arange(5), block_size=10)
    with pytest.raises(ValueError, match="1-D array of integer"):
        token_blocks(np.zeros((2, 5), dtype=np.int64), block_size=2)
    with pytest.raises(ValueError, match="block_size must be an int >= 2"):
        token_blocks(np.arange(5), block_size=1)


def test_window_dataset_holds_the_batches_the_sampler_draws():
    ids = np.random.default_rng(0).integers(0, 60, size=500).astype(np.uint16)
    rows = window_dataset(WindowSampler(ids, batch_size=4, block_size=8, seed=3), n_batches=5)
    sampler = WindowSampler(ids, batch_size=4, block_size=8, seed=3)
    for batch in range(5):
        x, y = sampler.sample()
        got = torch.tensor(rows[batch * 4:(batch + 1) * 4]["input_ids"])
        assert torch.equal(got[:, :-1], x) and torch.equal(got[:, 1:], y)


# ----------------------------------------------------------------------------- trainer


def test_training_arguments_carry_the_config(tmp_path):
    config = TrainConfig(batch_size=8, grad_accum_steps=2, max_steps=50, lr=3e-3, min_lr=3e-4,
                         warmup_steps=5, weight_decay=0.05, beta2=0.95, eps=1e-7,
                         grad_clip=None, seed=7, device="cpu", tensorboard=False,
                         out_dir=str(tmp_path))
    args = training_arguments(config, logging_steps=1)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps,
            args.max_steps, args.learning_rate, args.warmup_steps) == (8, 2, 50, 3e-3, 5)
    assert args.lr_scheduler_kwargs == {"min_lr": 3e-4}
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay) == (
        0.9, 0.95, 1e-7, 0.05)
    assert args.max_grad_norm == 0.0 and args.seed == 7 and args.use_cpu
    assert args.report_to == [] or args.report_to == "none" or args.report_to == ["none"]
    assert args.logging_steps == 1 and not args.push_to_hub
    with pytest.raises(ValueError, match="TrainConfig"):
        training_arguments({"lr": 1e-3})
    with pytest.raises(ValueError, match="not a TrainingArguments field"):
        training_arguments(config, learning_rat=1e-3)


def test_transformers_cosine_with_min_lr_is_warmup_cosine_but_for_the_warm_up():
    from transformers import get_scheduler

    warmup, total = 4, 20
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    scheduler = get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=warmup,
                              num_training_steps=total, scheduler_specific_kwargs={"min_lr": 1e-3})
    curve = WarmupCosine(1e-2, 1e-3, warmup, total)
    theirs = []
    for _ in range(total):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert np.allclose(theirs[warmup:], [curve(s) for s in range(warmup, total)])
    # Warm-up: transformers starts from 0 (lr * s / W); llmlab from lr / (W + 1).
    assert np.allclose(theirs[:warmup], [1e-2 * s / warmup for s in range(warmup)])
    assert theirs[0] == 0.0 < curve(0)


def _both_ways(shakespeare, tmp_path, schedule):
    """The same weights and batches through llmlab's Trainer and transformers' Trainer."""
    from transformers import GPT2LMHeadModel

    tokenizer, train_ids, val_ids = shakespeare
    # weight_decay 0.1 and clipping at 1.0 both act (the first steps' norms exceed 1).
    config = TrainConfig(
        model={"style": "gpt2", "n_layer": 2, "n_head": 2, "d_model": 32,
               "context_length": 33},  # a window of 32 + 1 tokens goes through HF's model
        batch_size=8, block_size=32, max_steps=15, warmup_steps=3, lr=1e-2, min_lr=1e-3,
        weight_decay=0.1, grad_clip=1.0, eval_interval=15, eval_batches=1, log_interval=1,
        tensorboard=False, progress=False, seed=0, device="cpu",
        out_dir=str(tmp_path / "llmlab"))
    ours = Trainer(config, train_ids=train_ids, val_ids=val_ids, tokenizer=tokenizer)
    torch.manual_seed(0)
    hf_model = GPT2LMHeadModel(gpt2_config(ours.model_config))
    ours.model.load_state_dict(GPT.from_hf_gpt2(hf_model).state_dict())
    ours.fit()
    # The windows llmlab's sampler drew (same seed), read in order by transformers.
    batches = window_dataset(WindowSampler(train_ids, 8, 32, seed=config.seed), 15)
    theirs = make_trainer(hf_model, dataclasses.replace(config, out_dir=str(tmp_path / "hf")),
                          batches, schedule=schedule, train_sampling_strategy="sequential",
                          logging_steps=1)
    theirs.train()
    return ours, theirs


def test_llmlab_and_transformers_trainers_log_the_same_losses(shakespeare, tmp_path):
    # Weight decay: transformers decays every weight but biases and LayerNorm parameters,
    # llmlab every matrix (embeddings included): for GPT-2 the same set. Its AdamW is
    # torch's ("adamw_torch"), clipping is torch's clip_grad_norm_, the loss is summed and
    # divided by the number of predicted tokens (see hf._declare_causal_loss).
    ours, theirs = _both_ways(shakespeare, tmp_path, schedule="llmlab")
    llmlab_losses = np.array([row["loss"] for row in ours.history])
    hf_losses = np.array(logged_losses(theirs))
    assert len(hf_losses) == len(llmlab_losses) == 15
    assert llmlab_losses[-1] < llmlab_losses[0] - 0.5  # it learns: the check is not vacuous
    np.testing.assert_allclose(hf_losses, llmlab_losses, rtol=1e-4)
    hf_norms = [row["grad_norm"] for row in theirs.state.log_history if "grad_norm" in row]
    np.testing.assert_allclose(hf_norms, [row["grad_norm"] for row in ours.history], rtol=1e-4)
    final = GPT.from_hf_gpt2(theirs.model).state_dict()
    for name, tensor in ours.model.state_dict().items():
        torch.testing.assert_close(final[name], tensor, rtol=1e-3, atol=1e-4)


def test_transformers_own_warm_up_gives_other_losses(shakespeare, tmp_path):
    # The cross-check can fail: transformers' schedule takes its first step at lr 0.
    ours, theirs = _both_ways(shakespeare, tmp_path, schedule="transformers")
    llmlab_losses = np.array([row["loss"] for row in ours.history])
    hf_losses = np.array(logged_losses(theirs))
    assert np.isclose(hf_losses[0], llmlab_losses[0], rtol=1e-5)  # before any update
    assert not np.allclose(hf_losses[1:], llmlab_losses[1:], rtol=1e-3)


def test_make_trainer_rejects_data_the_model_cannot_take(tmp_path):
    from transformers import GPT2LMHeadModel

    config = TrainConfig(model={"style": "gpt2", "n_layer": 1, "n_head": 2, "d_model": 16},
                         block_size=8, max_steps=2, warmup_steps=0, out_dir=str(tmp_path),
                         tensorboard=False)
    model = GPT2LMHeadModel(gpt2_config(config.model_config(vocab_size=20)))
    too_long = window_dataset(WindowSampler(np.arange(100) % 20, 2, 8), 1)  # 9 > 8 positions
    with pytest.raises(ValueError, match="rows of 9 tokens but the model has only 8 positions"):
        make_trainer(model, config, too_long)
    with pytest.raises(ValueError, match="columns 'input_ids' and 'labels'"):
        make_trainer(model, config, too_long.remove_columns("labels"))
    with pytest.raises(ValueError, match="schedule must be"):
        make_trainer(model, config, token_blocks(np.arange(40) % 20, 8), schedule="cosine")


# ----------------------------------------------------------------------------- masked LM


def test_masked_lm_loss_counts_only_the_masked_positions(shakespeare):
    from transformers import BertForMaskedLM

    tokenizer, train_ids, _ = shakespeare
    mask_id = tokenizer.vocab_size
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config(mask_id + 1, block_size=16)).eval()
    windows, _ = WindowSampler(train_ids, batch_size=4, block_size=16, seed=0).sample()
    inputs, labels = mask_tokens(windows, vocab_size=mask_id + 1, mask_id=mask_id,
                                 generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(input_ids=inputs, labels=labels)
    chosen = labels != -100
    assert 0 < chosen.sum() < chosen.numel()
    by_hand = F.cross_entropy(out.logits[chosen], windows[chosen])  # chosen positions only
    torch.testing.assert_close(out.loss, by_hand)
    torch.testing.assert_close(masked_lm_loss(out.logits, labels), by_hand)
    every_position = F.cross_entropy(out.logits.flatten(0, 1), windows.flatten())
    assert not torch.isclose(out.loss, every_position, rtol=1e-3)


def test_a_short_masked_lm_run_beats_the_unigram_baseline(shakespeare):
    from transformers import BertForMaskedLM

    tokenizer, train_ids, val_ids = shakespeare
    mask_id = tokenizer.vocab_size
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config(mask_id + 1, block_size=8))
    before = evaluate_fill_in(model, train_ids, val_ids, mask_id, block_size=8, n_blocks=500)
    losses = train_masked_lm(model, train_ids, mask_id, steps=250, batch_size=64,
                             block_size=8, lr=3e-3, min_lr=3e-4, progress=False)
    after = evaluate_fill_in(model, train_ids, val_ids, mask_id, block_size=8, n_blocks=500)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.5
    assert before.accuracy < before.unigram_accuracy < after.accuracy, (before, after)
    assert after.n_masked > 400


def test_mlm_helpers_reject_bad_input(shakespeare):
    from transformers import BertForMaskedLM

    _, train_ids, _ = shakespeare
    model = BertForMaskedLM(tiny_bert_config(30, block_size=8))
    with pytest.raises(ValueError, match=r"mask_id must be an id of the model's vocabulary"):
        train_masked_lm(model, train_ids, mask_id=30, steps=30)
    with pytest.raises(ValueError, match="exceeds the model's 8 positions"):
        train_masked_lm(model, train_ids, mask_id=29, steps=30, block_size=16)
    with pytest.raises(ValueError, match="divisible"):
        tiny_bert_config(30, d_model=30, n_head=4)
