"""Chapter 05 exercise 6: writing new keys and values into a pre-allocated KV cache
(``kv_cache_update``), checked against llmlab.attention's ``KVCache.update`` and, inside a
real model, against recomputing the whole sequence."""

from __future__ import annotations

import torch

from llmlab.attention import KVCache
from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.course.exercises.ch05._common import same, tiny_model

# --------------------------------------------------------------------------------------------
# Reference: the learner's function, implemented with llmlab.attention


def reference_kv_cache_update(
    cache_k: torch.Tensor, cache_v: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
    length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``k_new, v_new (B, H, T, D)`` into the buffers ``(B, H, max_len, D)`` at
    positions ``length .. length + T - 1``; return the filled part, positions ``0 .. length
    + T - 1``. This is ``llmlab.attention.KVCache.update`` for one layer.

    >>> cache_k, cache_v = torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2)
    >>> k, v = reference_kv_cache_update(cache_k, cache_v, torch.ones(1, 1, 1, 2),
    ...                                  torch.ones(1, 1, 1, 2), length=2)
    >>> k.shape, cache_k[0, 0, :, 0].tolist()
    (torch.Size([1, 1, 3, 2]), [0.0, 0.0, 1.0, 0.0])
    """
    cache = KVCache([cache_k], [cache_v])
    cache.length = length
    return cache.update(0, k_new, v_new)


# --------------------------------------------------------------------------------------------
# Plausible mistakes, used by the tests to make sure the check fails them


def _cache_concatenates(cache_k, cache_v, k_new, v_new, length):  # never writes the buffers
    return (torch.cat([cache_k[:, :, :length], k_new], dim=2),
            torch.cat([cache_v[:, :, :length], v_new], dim=2))


def _cache_ignores_length(cache_k, cache_v, k_new, v_new, length):  # writes at position 0
    T = k_new.shape[2]
    cache_k[:, :, :T] = k_new
    cache_v[:, :, :T] = v_new
    return cache_k[:, :, :length + T], cache_v[:, :, :length + T]


def _cache_whole_buffer(cache_k, cache_v, k_new, v_new, length):  # empty slots included
    T = k_new.shape[2]
    cache_k[:, :, length:length + T] = k_new
    cache_v[:, :, length:length + T] = v_new
    return cache_k, cache_v


def _cache_returns_old_only(cache_k, cache_v, k_new, v_new, length):  # [:length]: new ones lost
    T = k_new.shape[2]
    cache_k[:, :, length:length + T] = k_new
    cache_v[:, :, length:length + T] = v_new
    return cache_k[:, :, :length], cache_v[:, :, :length]


# --------------------------------------------------------------------------------------------
# 6. The KV cache update


class _LearnerCache(KVCache):
    """llmlab's KVCache with its update replaced by the learner's function."""

    def __init__(self, keys, values, update_fn) -> None:
        super().__init__(keys, values)
        self.update_fn = update_fn

    def update(self, layer, k, v):
        return self.update_fn(self.keys[layer], self.values[layer], k, v, self.length)


_KV_WRITES: list[tuple[str, int]] = [  # (what, positions written), in order, into 8 slots
    ("the prompt (3 positions) into an empty cache", 3),
    ("one generated token after 3 stored positions", 1),
    ("one more token after 4", 1),
    ("3 positions at once after 5, filling the cache to its last slot", 3),
]


@exercise("ch05.kv_cache_update", title="the KV cache update",
          reference=reference_kv_cache_update,
          wrong_answers=[_cache_concatenates, _cache_ignores_length, _cache_whole_buffer,
                         _cache_returns_old_only])
def check_kv_cache_update(answer) -> None:
    require_callable(answer, "kv_cache_update")
    B, H, max_len, D = 2, 3, 8, 4
    g = torch.Generator().manual_seed(8)
    mine_k, mine_v = torch.zeros(B, H, max_len, D), torch.zeros(B, H, max_len, D)
    ref_k, ref_v = torch.zeros(B, H, max_len, D), torch.zeros(B, H, max_len, D)
    length = 0
    hints = {
        _cache_concatenates: "The buffers were never written: store the new keys and values "
        "IN the buffers (cache_k[:, :, length:length + T] = k_new), so the next call finds them.",
        _cache_ignores_length: "The new positions go after the `length` stored ones: slice "
        "[length:length + T] on dimension 2, not [:T].",
        _cache_whole_buffer: "Return only the filled part, positions 0 .. length + T - 1: the "
        "empty slots would be attended to as if they were tokens.",
        _cache_returns_old_only: "Return everything stored INCLUDING the new positions: "
        "[:, :, :length + T].",
    }
    for what, T in _KV_WRITES:
        k_new, v_new = torch.randn(B, H, T, D, generator=g), torch.randn(B, H, T, D, generator=g)
        call = f"kv_cache_update(cache_k, cache_v, k_new, v_new, length={length}) for {what}"
        before_k, before_v = mine_k.clone(), mine_v.clone()
        got = _call(answer, call, mine_k, mine_v, k_new.clone(), v_new.clone(), length)
        expected = reference_kv_cache_update(ref_k, ref_v, k_new, v_new, length)
        hint = ("Write k_new into cache_k[:, :, length:length + T] (same for v), then return "
                "cache_k[:, :, :length + T] and cache_v[:, :, :length + T].")
        for wrong, why in hints.items():
            try:
                if all(same(a, b) for a, b in zip(got, wrong(before_k.clone(), before_v.clone(),
                                                              k_new, v_new, length), strict=True)):
                    hint = why
                    break
            except Exception:
                continue
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise CheckFailed(f"{call} returned {type(got).__name__}; expected a tuple (keys, "
                              f"values). {hint}")
        for name, mine, theirs in (("keys", got[0], expected[0]), ("values", got[1], expected[1])):
            if not isinstance(mine, torch.Tensor) or mine.shape != theirs.shape:
                shape = tuple(mine.shape) if isinstance(mine, torch.Tensor) else type(mine).__name__
                raise CheckFailed(f"{call}: the returned {name} have shape {shape}, expected "
                                  f"{tuple(theirs.shape)} (positions 0..{length + T - 1}). {hint}")
            if not torch.allclose(mine, theirs):
                pos = int((mine - theirs).abs().amax(dim=(0, 1, 3)).argmax())
                raise CheckFailed(f"{call}: the returned {name} at position {pos} differ from "
                                  f"what was stored there. {hint}")
        if not torch.equal(mine_k, ref_k) or not torch.equal(mine_v, ref_v):
            raise CheckFailed(f"{call}: after the call the buffers do not hold the new "
                              f"positions {length}..{length + T - 1} (or other slots changed). "
                              f"{hint}")
        length += T
    _check_cached_equals_uncached(answer)


def _check_cached_equals_uncached(answer) -> None:
    """With the learner's update inside a real model, feeding tokens one at a time through the
    cache must give the logits of recomputing the whole sequence."""
    model = tiny_model()
    ids = torch.tensor([[3, 14, 15, 9, 2, 6, 5, 35, 8], [27, 1, 8, 28, 18, 28, 4, 5, 9]])
    template = KVCache.allocate(model.config, ids.shape[0], ids.shape[1])
    cache = _LearnerCache(template.keys, template.values, answer)
    with torch.no_grad():
        full = model(ids)
        pieces = [(0, 5), (5, 6), (6, 7), (7, 9)]  # a prompt of 5, then 1, 1 and 2 tokens
        for start, end in pieces:
            what = (f"a 2-layer model using your kv_cache_update, fed tokens {start}..{end - 1} "
                    f"after {start} cached ones")
            got = _call(lambda s=start, e=end: model(ids[:, s:e], cache=cache), what)
            if not torch.allclose(got, full[:, start:end], atol=1e-4):
                diff = (got - full[:, start:end]).abs().max().item()
                raise CheckFailed(f"{what}: the logits differ from recomputing the whole "
                                  f"sequence without a cache (max difference {diff:.3g}).")
