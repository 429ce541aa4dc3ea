"""Chapter 01's exercise references against their homes, and the open-ended experiment's
band against depths the check does not try (tests/test_exercises.py runs every check on
its reference, its stub and its wrong answers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmlab.course.exercises import ch01


def test_swiglu_reference_is_the_formula():
    g = torch.Generator().manual_seed(0)
    x, w_gate, w_up = (torch.randn(3, 8, generator=g), torch.randn(20, 8, generator=g),
                       torch.randn(20, 8, generator=g))
    w_down = torch.randn(8, 20, generator=g)
    formula = (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T
    torch.testing.assert_close(ch01.reference_swiglu(x, w_gate, w_up, w_down), formula)


def test_rms_norm_reference_is_zero_on_a_zero_vector():
    assert torch.equal(ch01.reference_rms_norm(torch.zeros(2, 8), torch.ones(8)),
                       torch.zeros(2, 8))


@pytest.mark.parametrize("n_layer", [12, 24])
def test_gpt2_rule_stays_in_the_band_at_other_depths(n_layer):
    low, high = ch01.STREAM_GROWTH_BAND
    growth = ch01.stream_growth(ch01.reference_residual_proj_std(n_layer), n_layer)
    assert low <= growth <= high
