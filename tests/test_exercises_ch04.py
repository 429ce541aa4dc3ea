"""Chapter 04's training-step exercise: the reference agrees with PyTorch's own pieces, and
the check names the cause of each classic mistake (tests/test_exercises.py only asks that
every mistake fails)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from llmlab.course import checks
from llmlab.course.exercises.ch04 import step as ch04  # the training-step exercise
from llmlab.model import GPT, ModelConfig


class LrStep:
    """The lab's optimizer interface, ``step(lr)``, around an optimizer with a fixed rate.

    The comparisons use SGD: Adam divides by sqrt(v), which magnifies rounding differences
    in gradients near 0 (llmlab's AdamW is compared with torch's in test_training.py).
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self, lr):
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)


def test_reference_training_step_matches_torch_cross_entropy_and_clip_grad_norm():
    torch.manual_seed(0)
    ours = GPT(ModelConfig(vocab_size=23, context_length=16, n_layer=2, n_head=2, d_model=32))
    theirs = copy.deepcopy(ours)
    ours_opt, torch_opt = LrStep(sgd(ours)), sgd(theirs)
    clipped_steps = 0
    for step, lr in enumerate([0.3, 1.0, 0.5]):
        tokens = torch.randint(23, (4, 17), generator=torch.Generator().manual_seed(step))
        x, y = tokens[:, :-1], tokens[:, 1:]
        loss, norm = ch04.reference_training_step(ours, ours_opt, x, y, lr, max_norm=0.5)

        torch_opt.zero_grad(set_to_none=True)
        torch_loss = F.cross_entropy(theirs(x).flatten(0, 1), y.flatten())
        torch_loss.backward()
        torch_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        torch_opt.step()

        assert isinstance(loss, float) and isinstance(norm, float)
        assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
        assert norm == pytest.approx(torch_norm.item(), rel=1e-5)
        clipped_steps += norm > 0.5
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert clipped_steps, "no step was clipped: the comparison would not cover clipping"


def test_reference_training_step_rejects_mismatched_batches():
    model = GPT(ModelConfig(vocab_size=11, context_length=8, n_layer=1, n_head=1, d_model=8))
    with pytest.raises(ValueError, match="inputs and targets of one shape"):
        ch04.reference_training_step(model, LrStep(sgd(model)), torch.zeros(2, 8, dtype=torch.long),
                                     torch.zeros(2, 7, dtype=torch.long), 1e-3)


@pytest.mark.parametrize("mistake, cause", [
    (ch04._step_without_zero_grad, "left over from an earlier backward"),
    (ch04._step_zeroes_after_backward, "zeroed between loss.backward() and optimizer.step"),
    (ch04._step_clips_after_update, "clip_grad_norm ran after optimizer.step"),
    (ch04._step_without_clipping, "they were not clipped"),
    (ch04._step_updates_before_backward, "call loss.backward() before optimizer.step"),
    (ch04._step_returns_loss_tensor, "still attached to the autograd graph"),
    (ch04._step_returns_loss_after_update, "not one computed again after the update"),
    (ch04._step_in_eval_mode, "your step switched the model to eval mode"),
    (ch04._step_without_train_mode, "the model came in eval mode"),
    (ch04._step_shifts_targets_again, "shifted a second time"),
    (ch04._step_targets_are_inputs, "compares the logits with the inputs"),
    (ch04._step_averages_over_ignored, "-100 (padding) counted in the mean"),
])
def test_training_step_check_names_the_cause(mistake, cause):
    result = checks.run_check("ch04.training_step", mistake)
    assert result.status == "failed"
    assert cause in result.message, result.message


def test_training_step_check_leaves_the_global_generator_alone():
    before = torch.random.get_rng_state()
    assert checks.run_check("ch04.training_step", ch04.reference_training_step).status == "passed"
    assert torch.equal(torch.random.get_rng_state(), before)


def test_training_step_check_accepts_optimizer_zero_grad_and_torch_pieces():
    def torch_style(model, optimizer, inputs, targets, lr, max_norm=1.0):
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step(lr)
        return loss.item(), norm.item()

    result = checks.run_check("ch04.training_step", torch_style)
    assert result.status == "passed", result.message


def test_smoothed_cross_entropy_matches_torch_with_gradients():
    from llmlab.training.experiments import smoothed_cross_entropy

    logits = torch.randn(7, 11, generator=torch.Generator().manual_seed(0), requires_grad=True)
    targets = torch.randint(11, (7,), generator=torch.Generator().manual_seed(1))
    for smoothing in (0.0, 0.1, 0.5):
        ours = smoothed_cross_entropy(logits, targets, smoothing)
        theirs = F.cross_entropy(logits, targets, label_smoothing=smoothing)
        assert torch.allclose(ours, theirs, atol=1e-6)
        g1, = torch.autograd.grad(ours, logits)
        g2, = torch.autograd.grad(theirs, logits)
        assert torch.allclose(g1, g2, atol=1e-6)


def test_lr_experiment_is_deterministic_and_has_a_valley():
    from llmlab.course.exercises.ch04 import lr_experiment
    from llmlab.course.exercises.ch04.lr_experiment import TARGET

    best = lr_experiment(1e-2)
    assert best.val_loss == lr_experiment(1e-2).val_loss  # the check can rerun it
    assert best.val_loss < TARGET
    assert lr_experiment(1e-4).val_loss > TARGET and lr_experiment(0.5).val_loss > TARGET
