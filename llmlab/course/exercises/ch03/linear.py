"""Chapter 03 exercise 7: causal linear attention as a prefix sum
(``causal_linear_attention``), checked against the quadratic masked form and llmlab.attention's
``causal_linear_attention``."""

from __future__ import annotations

import torch

from llmlab import attention
from llmlab.course.checks import call_learner as _call
from llmlab.course.checks import exercise, require_callable
from llmlab.course.exercises.ch03._common import close, first_hint, noise

# --------------------------------------------------------------------------------------------
# Reference: the learner's function, implemented with llmlab.attention


def reference_causal_linear_attention(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """``out_i = phi_q_i . (sum_{j<=i} phi_k_j v_j^T) / phi_q_i . (sum_{j<=i} phi_k_j)``.

    >>> phi = torch.ones(3, 1)                     # equal features: a running mean of v
    >>> reference_causal_linear_attention(phi, phi, torch.tensor([[3.0], [1.0], [2.0]]))
    tensor([[3.],
            [2.],
            [2.]])
    """
    return attention.causal_linear_attention(phi_q, phi_k, v)


def quadratic_causal_linear_attention(
    phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """The same thing the N x N way: weights ``phi_q phi_k^T``, masked, normalised per row.

    >>> phi = torch.ones(2, 1)
    >>> quadratic_causal_linear_attention(phi, phi, torch.tensor([[4.0], [2.0]]))
    tensor([[4.],
            [3.]])
    """
    weights = (phi_q @ phi_k.transpose(-2, -1)).tril()
    return (weights / weights.sum(-1, keepdim=True)) @ v


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure the check fails them


def _linear_not_causal(phi_q, phi_k, v):  # one sum over all keys: reads the future
    kv = phi_k.transpose(-2, -1) @ v
    return (phi_q @ kv) / (phi_q @ phi_k.sum(-2)[..., None])


def _linear_exclusive_prefix(phi_q, phi_k, v):  # keys j < i: a token cannot read itself
    state = torch.cumsum(phi_k[..., :, None] * v[..., None, :], dim=-3)
    z = torch.cumsum(phi_k, dim=-2)
    state = torch.cat([torch.zeros_like(state[..., :1, :, :]), state[..., :-1, :, :]], dim=-3)
    z = torch.cat([torch.zeros_like(z[..., :1, :]), z[..., :-1, :]], dim=-2)
    return (phi_q[..., None, :] @ state).squeeze(-2) / (phi_q * z).sum(-1, keepdim=True)


def _linear_unnormalised(phi_q, phi_k, v):  # forgets the denominator
    state = torch.cumsum(phi_k[..., :, None] * v[..., None, :], dim=-3)
    return (phi_q[..., None, :] @ state).squeeze(-2)


def _linear_total_normaliser(phi_q, phi_k, v):  # divides by the sum over ALL keys
    state = torch.cumsum(phi_k[..., :, None] * v[..., None, :], dim=-3)
    return (phi_q[..., None, :] @ state).squeeze(-2) / (phi_q @ phi_k.sum(-2)[..., None])


_MISTAKES = [
    (_linear_not_causal, "This reads the future: with the causal mask, position i may only "
     "sum over keys j <= i. Use torch.cumsum over the positions instead of one sum."),
    (_linear_exclusive_prefix, "Each position may read itself: the prefix sums run over "
     "j <= i (an inclusive cumsum), not j < i."),
    (_linear_unnormalised, "Divide by the normaliser phi_q_i . z_i with z_i = sum_{j<=i} "
     "phi_k_j, so the weights of each query sum to 1."),
    (_linear_total_normaliser, "The normaliser is a prefix sum too: z_i = sum over j <= i of "
     "phi_k_j, not the sum over all keys."),
]


def _positive(seed: int, *shape: int) -> torch.Tensor:
    return noise(seed, *shape).exp() / 2  # positive, like any feature map of linear attention


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [
        ("the running mean: phi = 1 everywhere, N=3", torch.ones(3, 1), torch.ones(3, 1),
         torch.tensor([[3.0], [1.0], [2.0]])),
        ("N=6, m=4 features, values of width 3", _positive(1, 6, 4), _positive(2, 6, 4),
         noise(3, 6, 3)),
        ("batch and heads (2, 3), N=5, m=8, Ev=2", _positive(4, 2, 3, 5, 8),
         _positive(5, 2, 3, 5, 8), noise(6, 2, 3, 5, 2)),
        ("a single position (N=1)", _positive(7, 1, 4), _positive(8, 1, 4), noise(9, 1, 2)),
        ("one feature (m=1), N=7", _positive(10, 7, 1), _positive(11, 7, 1), noise(12, 7, 4)),
    ]


@exercise("ch03.causal_linear_attention", title="causal linear attention as a prefix sum",
          reference=reference_causal_linear_attention,
          wrong_answers=[_linear_not_causal, _linear_exclusive_prefix, _linear_unnormalised,
                         _linear_total_normaliser])
def check_causal_linear_attention(answer) -> None:
    require_callable(answer, "causal_linear_attention")
    for what, phi_q, phi_k, v in _cases():
        call = f"causal_linear_attention(...) for {what}"
        got = _call(answer, call, phi_q.clone(), phi_k.clone(), v.clone())
        expected = quadratic_causal_linear_attention(phi_q, phi_k, v)
        hint = first_hint(got, (phi_q, phi_k, v), _MISTAKES,
                          "out_i = phi_q_i . S_i / (phi_q_i . z_i), with S_i = cumsum of "
                          "phi_k_j v_j^T and z_i = cumsum of phi_k_j over j <= i.", atol=1e-4)
        close(got, expected, call, atol=1e-4, hint=hint)
