"""Chapter 03 exercise 8, an open-ended experiment: choose a sliding window (and a few global
tokens) that keeps fewer than :data:`MAX_KEPT` of the causal score entries while the output
stays within :data:`MAX_ERROR` of full attention on a fixed input. The check recomputes both
numbers from the learner's choice with llmlab.attention's ``sliding_window_mask``."""

from __future__ import annotations

import functools

import torch

from llmlab import attention
from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call

MAX_ERROR = 0.02  # relative error |windowed - full| / |full| (Frobenius norms)
MAX_KEPT = 0.40  # share of the T (T + 1) / 2 causal score entries that are computed
T, N_HEADS, HEAD_DIM = 256, 4, 32


@functools.cache
def experiment_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed input ``q, k, v (1, 4, 256, 32)`` and the float ``bias (1, 4, 256, 256)``.

    Random queries, keys and values, plus what makes real attention local: ALiBi biases
    (slopes 1/2 .. 1/16, so each head prefers nearby keys) and a bonus of 5 on key 0,
    the *attention sink* that trained models develop on their first token.

    >>> q, k, v, bias = experiment_inputs()
    >>> q.shape, bias.shape
    (torch.Size([1, 4, 256, 32]), torch.Size([1, 4, 256, 256]))
    """
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, N_HEADS, T, HEAD_DIM, generator=gen) for _ in range(3))
    bias = attention.alibi_bias(8, T)[None, :N_HEADS].clone()  # the 4 steepest of 8 heads
    bias[..., 0] += 5.0  # the sink
    return q, k, v, bias


def measure_window(window: int, n_global: int = 0) -> dict[str, float]:
    """Relative output error against full causal attention, and the share of causal score
    entries kept, for ``sliding_window_mask(T, window, n_global=n_global)``.

    >>> full = measure_window(T)                      # a window as long as the input
    >>> full["error"] < 1e-6, full["kept"]
    (True, 1.0)
    """
    q, k, v, bias = experiment_inputs()
    causal = attention.causal_mask(T)
    exact = attention.scaled_dot_product_attention(q, k, v, bias + attention.as_additive_mask(
        causal))
    mask = attention.sliding_window_mask(T, window, n_global=n_global)
    out = attention.scaled_dot_product_attention(q, k, v, bias + attention.as_additive_mask(
        mask))
    return {"error": float((out - exact).norm() / exact.norm()),
            "kept": float(mask.sum()) / float(causal.sum())}


def reference_choose_window() -> tuple[int, int]:
    """One choice that meets both limits: a window of 48 keys and one global token.

    >>> result = measure_window(*reference_choose_window())
    >>> result["error"] < MAX_ERROR and result["kept"] < MAX_KEPT
    True
    """
    return 48, 1


# --------------------------------------------------------------------------------------------
# Plausible answers that miss, used by the tests to make sure the check fails them


def _window_without_sink() -> tuple[int, int]:  # just long enough without globals: too big
    return 64, 0


def _window_too_small() -> tuple[int, int]:  # cheap, but the error is too large
    return 32, 1


def _full_attention() -> tuple[int, int]:  # exact, and no saving at all
    return T, 0


def _window_as_float() -> tuple[float, int]:
    return 48.5, 1


@exercise("ch03.choose_window", title="a sliding window that is cheap and accurate",
          reference=reference_choose_window,
          wrong_answers=[_window_without_sink, _window_too_small, _full_attention,
                         _window_as_float])
def check_choose_window(answer) -> None:
    require_callable(answer, "choose_window")
    choice = _call(answer, "choose_window()")
    if not (isinstance(choice, tuple) and len(choice) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in choice)):
        raise CheckFailed(f"choose_window() returned {choice!r}; expected a tuple of two ints "
                          "(window, n_global), e.g. (100, 0).")
    window, n_global = choice
    if not 1 <= window <= T or not 0 <= n_global <= T:
        raise CheckFailed(f"choose_window() returned window={window}, n_global={n_global}; "
                          f"expected 1 <= window <= {T} and 0 <= n_global <= {T}.")
    result = measure_window(window, n_global)
    measured = (f"window={window}, n_global={n_global}: relative error {result['error']:.4f}, "
                f"{result['kept']:.1%} of the causal scores kept")
    if result["error"] >= MAX_ERROR and result["kept"] >= MAX_KEPT:
        raise CheckFailed(f"{measured}: both over the limits (error < {MAX_ERROR}, kept < "
                          f"{MAX_KEPT:.0%}). Global tokens are cheap: try n_global=1.")
    if result["error"] >= MAX_ERROR:
        raise CheckFailed(f"{measured}: the error must be below {MAX_ERROR}. Widen the window, "
                          "or keep the first key visible (n_global) if most of the error comes "
                          "from the sink it would otherwise drop.")
    if result["kept"] >= MAX_KEPT:
        raise CheckFailed(f"{measured}: accurate, but it must keep fewer than {MAX_KEPT:.0%} of "
                          "the scores. A narrower window plus a global token or two may do "
                          "both.")
