"""Chapter 04 exercise: a MinHash signature written from scratch (``minhash_signature``),
checked value for value against ``llmlab.training.near_dedup.minhash_signatures`` and by
the Jaccard estimate it gives."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmlab.course.checks import CheckFailed, exercise, require_callable
from llmlab.course.checks import call_learner as _call
from llmlab.training import near_dedup

P = near_dedup.MERSENNE

# --------------------------------------------------------------------------------------------
# Reference


def reference_minhash_signature(shingles: np.ndarray, a: np.ndarray,
                                b: np.ndarray) -> np.ndarray:
    """The MinHash signature of one shingle set: for each hash function
    ``h_k(x) = (a[k] * x + b[k]) mod p`` (``p = 2**31 - 1``), the smallest ``h_k`` over the
    set's shingles; ``p`` everywhere for an empty set. Shape ``(len(a),)``, int64.

    >>> a, b = near_dedup.minhash_params(3, seed=0)
    >>> s = np.array([5, 17, 2024])
    >>> bool((reference_minhash_signature(s, a, b)
    ...       == near_dedup.minhash_signatures([s], num_perm=3, seed=0)[0]).all())
    True
    """
    if len(shingles) == 0:
        return np.full(len(a), P, dtype=np.int64)
    x = np.asarray(shingles, dtype=np.int64) % P
    return ((a[:, None] * x[None, :] + b[:, None]) % P).min(axis=1)


# --------------------------------------------------------------------------------------------
# Plausible mistakes


def _minhash_max(shingles, a, b):  # the largest hash: also a valid sketch, not this one
    if len(shingles) == 0:
        return np.full(len(a), P, dtype=np.int64)
    x = np.asarray(shingles, dtype=np.int64)
    return ((a[:, None] * x[None, :] + b[:, None]) % P).max(axis=1)


def _minhash_no_modulo(shingles, a, b):  # a*x + b without "mod p": not a permutation
    if len(shingles) == 0:
        return np.full(len(a), P, dtype=np.int64)
    x = np.asarray(shingles, dtype=np.int64)
    return (a[:, None] * x[None, :] + b[:, None]).min(axis=1)


def _minhash_one_hash(shingles, a, b):  # one hash function copied k times
    if len(shingles) == 0:
        return np.full(len(a), P, dtype=np.int64)
    x = np.asarray(shingles, dtype=np.int64)
    return np.full(len(a), ((a[0] * x + b[0]) % P).min(), dtype=np.int64)


def _minhash_argmin(shingles, a, b):  # which shingle is smallest, not its hash value
    if len(shingles) == 0:
        return np.full(len(a), P, dtype=np.int64)
    x = np.asarray(shingles, dtype=np.int64)
    return ((a[:, None] * x[None, :] + b[:, None]) % P).argmin(axis=1)


def _minhash_float(shingles, a, b):  # float64 cannot hold a*x (up to 2**62) exactly
    if len(shingles) == 0:
        return np.full(len(a), P, dtype=np.int64)
    x = np.asarray(shingles, dtype=np.float64)
    return np.fmod(a[:, None] * x[None, :] + b[:, None], P).min(axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# The check


def _signature(answer: Any, call: str, shingles: np.ndarray, a: np.ndarray,
               b: np.ndarray) -> np.ndarray:
    got = _call(answer, call, shingles.copy(), a.copy(), b.copy())
    got = np.asarray(got)
    if got.shape != (len(a),):
        raise CheckFailed(f"{call}: returned shape {got.shape}, expected ({len(a)},): one "
                          "value per hash function")
    if not np.issubdtype(got.dtype, np.integer):
        raise CheckFailed(f"{call}: returned dtype {got.dtype}, expected integers (int64): "
                          "float64 cannot hold a * x exactly (up to 2**62)")
    return got.astype(np.int64)


def _cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(4)
    return [
        ("one shingle [12345]", np.array([12345])),
        ("the word 5-grams of a line of Hamlet",
         near_dedup.shingle_hashes("To be, or not to be, that is the question: whether 'tis "
                                   "nobler in the mind to suffer", n=5, unit="word")),
        ("300 shingles, some close to 2**31", np.unique(np.concatenate(
            [rng.integers(0, P, 290), P - 1 - np.arange(10)]))),
        ("an empty set", np.array([], dtype=np.int64)),
    ]


@exercise("ch04.minhash_signature", title="MinHash signatures from scratch",
          reference=reference_minhash_signature,
          wrong_answers=[_minhash_max, _minhash_no_modulo, _minhash_one_hash, _minhash_argmin,
                         _minhash_float])
def check_minhash_signature(answer) -> None:
    require_callable(answer, "minhash_signature")
    a, b = near_dedup.minhash_params(64, seed=3)
    for what, shingles in _cases():
        call = f"minhash_signature for {what}, 64 hash functions"
        got = _signature(answer, call, shingles, a, b)
        expected = near_dedup.minhash_signatures([shingles], num_perm=64, seed=3)[0]
        if np.array_equal(got, expected):
            continue
        if len(shingles) == 0:
            raise CheckFailed(f"{call}: got {got[:3].tolist()}..., expected p = 2**31 - 1 = {P} "
                              "everywhere: an empty set has no minimum, and p is larger than "
                              "any hash, so it never matches a real document by chance.")
        hashes = (a[:, None] * shingles.astype(np.int64)[None, :] + b[:, None]) % P
        if np.array_equal(got, hashes.max(axis=1)):
            hint = "you kept the LARGEST hash of each function; MinHash keeps the smallest."
        elif np.array_equal(got, hashes.argmin(axis=1)):
            hint = ("you returned which shingle has the smallest hash (argmin); return the "
                    "hash value itself (min).")
        elif len(set(got.tolist())) == 1 < len(set(expected.tolist())):
            hint = ("every entry is the same: use all 64 hash functions, h_k(x) = (a[k] * x + "
                    "b[k]) mod p, one per entry.")
        elif (got >= P).any():
            hint = (f"some values are >= p = {P}: take (a * x + b) mod p before the minimum, "
                    "so each hash function acts like a random permutation of 0..p-1.")
        elif got.dtype.kind == "i" and np.abs(got - expected).max() < 2**12:
            hint = ("the values are off by a little: float64 rounds a * x (up to 2**62); "
                    "compute in int64.")
        else:
            hint = ("compute h_k(x) = (a[k] * x + b[k]) % p in int64 for every shingle x "
                    "and keep the minimum over x, for each k.")
        bad = int(np.flatnonzero(got != expected)[0])
        raise CheckFailed(f"{call}: entry {bad} is {got[bad]}, expected {expected[bad]}; "
                          f"{hint}")

    # The point of the signature: the fraction of equal entries estimates the Jaccard.
    a, b = near_dedup.minhash_params(256, seed=5)
    first, second = np.arange(0, 300, dtype=np.int64), np.arange(150, 450, dtype=np.int64)
    exact = near_dedup.jaccard(first, second)  # 150 / 450 = 1/3
    sigs = [_signature(answer, f"minhash_signature of {name}, 256 hash functions", s, a, b)
            for name, s in (("range(0, 300)", first), ("range(150, 450)", second))]
    estimate = float(np.mean(sigs[0] == sigs[1]))
    error = (exact * (1 - exact) / 256) ** 0.5
    if abs(estimate - exact) > 4 * error:
        raise CheckFailed(f"two sets of Jaccard {exact:.3f}: your signatures agree on "
                          f"{estimate:.3f} of 256 entries, more than 4 standard errors "
                          f"({error:.3f}) away.")
