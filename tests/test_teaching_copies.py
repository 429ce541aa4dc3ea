"""Each teaching copy agrees with its home.

A chapter or an exercise may keep a few lines of its own for a concept the library already
implements (a reference that shows the formula, a loop with a learner's function plugged
in); its docstring names the home, and a test here holds the two to the same numbers.
(``llmlab.training.objectives.cross_entropy`` against ``F.cross_entropy`` and
``llmlab.model.lm_loss`` lives in test_training.py.)
"""

from __future__ import annotations

import pytest
import torch

from llmlab import attention, decoding
from llmlab.course.exercises import ch03, ch05


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("q_block, k_block", [(2, 3), (4, 4), (16, 5)])
def test_ch03_tile_loop_is_the_home_tiled_attention(causal, q_block, k_block):
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 3, 11, 4, generator=g), torch.randn(2, 3, 11, 4, generator=g), \
        torch.randn(2, 3, 11, 5, generator=g)
    copy = ch03.tiled_with_update(ch03.reference_online_softmax_update, q, k, v, q_block, k_block,
                                  causal)
    home = attention.tiled_attention(q, k, v, k_block, is_causal=causal,
                                     query_block_size=q_block)
    torch.testing.assert_close(copy, home)


def test_ch05_references_are_the_home_functions():
    g = torch.Generator().manual_seed(2)
    beam_scores, log_probs = torch.randn(3, generator=g), torch.randn(3, 9, generator=g)
    for got, home in zip(ch05.reference_beam_step(beam_scores, log_probs, 5),
                         decoding.beam_step(beam_scores, log_probs, 5), strict=True):
        assert torch.equal(got, home)
