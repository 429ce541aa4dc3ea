"""Near-duplicate detection for a pretraining corpus (chapter 04): shingles, MinHash
signatures that estimate the Jaccard similarity of two shingle sets, and LSH banding that
proposes candidate pairs without comparing all n² of them; ``near_duplicates`` runs the
whole pipeline and confirms each candidate with the exact Jaccard.

Exact deduplication, normalisation and the quality filters are
:mod:`llmlab.training.cleaning`; both see text through its ``normalize``.

    >>> docs = ["the quick brown fox jumps over the lazy dog",
    ...         "the quick brown fox jumped over the lazy dog",
    ...         "an entirely different sentence about cats"]
    >>> near_duplicates(docs, threshold=0.6).removable()
    [1]
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmlab.training.cleaning import check_documents, check_text, normalize

__all__ = [
    "shingles", "shingle_hashes", "jaccard", "minhash_params", "minhash_signatures",
    "estimated_jaccard",
    "lsh_params", "candidate_probability", "lsh_candidates", "NearDuplicates",
    "near_duplicates",
]

MERSENNE = (1 << 31) - 1  # a prime: (a*x + b) mod p is a proper random hash for x < p


# ----------------------------------------------------------------------------- shingles


def _check_shingle_args(n: int, unit: str) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char'; got {unit!r}")


def _units(text: str, unit: str) -> list[str]:
    text = normalize(text)
    return text.split() if unit == "word" else list(text)


def shingles(text: str, n: int = 5, unit: str = "char") -> set[str]:
    """The set of ``n``-grams of words or characters of the normalised text (a text shorter
    than ``n`` units is one shingle). Similar texts share most of their shingles.

    >>> sorted(shingles("The cat sat", n=2, unit="word"))
    ['cat sat', 'the cat']
    >>> sorted(shingles("Abcd", n=3))
    ['abc', 'bcd']
    """
    check_text(text)
    _check_shingle_args(n, unit)
    units = _units(text, unit)
    sep = " " if unit == "word" else ""
    if len(units) <= n:
        return {sep.join(units)} if units else set()
    return {sep.join(units[i:i + n]) for i in range(len(units) - n + 1)}


def shingle_hashes(text: str, n: int = 5, unit: str = "char") -> np.ndarray:
    """The distinct shingles of ``shingles(text, n, unit)`` as 31-bit integers, sorted.

    Computed with numpy (a polynomial rolling hash over CRC-32 codes of the units), not
    one Python string per shingle: the whole corpus hashes in a second or two.
    Deterministic across runs, unlike Python's salted ``hash``.

    >>> h = shingle_hashes("to be or not to be", n=2, unit="word")
    >>> len(h), len(shingles("to be or not to be", n=2, unit="word"))   # 'to be' twice
    (4, 4)
    >>> bool((shingle_hashes("To be OR not, to be!", n=2, unit="word") == h).all())
    True
    """
    check_text(text)
    _check_shingle_args(n, unit)
    units = _units(text, unit)
    if not units:
        return np.zeros(0, dtype=np.int64)
    if unit == "char":  # code points, straight from the bytes: no Python loop
        codes = np.frombuffer("".join(units).encode("utf-32-le"), dtype=np.uint32)
        codes = codes.astype(np.int64)
    else:
        codes = np.array([zlib.crc32(u.encode("utf-8")) % MERSENNE for u in units],
                         dtype=np.int64)
    if len(codes) < n:
        n = len(codes)
    h = np.zeros(len(codes) - n + 1, dtype=np.int64)
    for k in range(n):  # h < 2**31 and the base < 2**20: no int64 overflow
        h = (h * 1_000_003 + codes[k:len(codes) - n + 1 + k]) % MERSENNE
    return np.unique(h)


def jaccard(a: set | np.ndarray, b: set | np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two shingle sets (Python sets or arrays of distinct values);
    1.0 for two empty sets.

    >>> jaccard({"a", "b", "c"}, {"b", "c", "d"})
    0.5
    >>> jaccard(np.array([1, 2]), np.array([2, 3, 4]))
    0.25
    """
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        both = len(np.intersect1d(a, b, assume_unique=True))
        union = len(a) + len(b) - both
    elif isinstance(a, set | frozenset) and isinstance(b, set | frozenset):
        both, union = len(a & b), len(a | b)
    else:
        raise TypeError(f"jaccard needs two sets or two numpy arrays; got {type(a).__name__} "
                        f"and {type(b).__name__}")
    return 1.0 if union == 0 else both / union


# ----------------------------------------------------------------------------- MinHash + LSH


def minhash_params(num_perm: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_perm`` random hash functions ``h_k(x) = (a[k] x + b[k]) mod p`` that
    ``minhash_signatures(..., num_perm, seed)`` uses, as int64 arrays ``(a, b)``:
    ``1 <= a < p`` and ``0 <= b < p``, with ``p = 2**31 - 1`` (``MERSENNE``).

    >>> a, b = minhash_params(4, seed=0)
    >>> a.shape, a.dtype, bool((a >= 1).all() and (a < MERSENNE).all())
    ((4,), dtype('int64'), True)
    """
    if not isinstance(num_perm, int) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive int; got {num_perm!r}")
    rng = np.random.default_rng(seed)
    a = rng.integers(1, MERSENNE, size=num_perm, dtype=np.int64)
    b = rng.integers(0, MERSENNE, size=num_perm, dtype=np.int64)
    return a, b


def minhash_signatures(shingle_sets: Sequence[np.ndarray], num_perm: int = 128,
                       seed: int = 0) -> np.ndarray:
    """MinHash signatures, shape ``(len(shingle_sets), num_perm)``.

    Each of ``num_perm`` random hash functions ``h(x) = (a x + b) mod p`` acts like a
    random permutation of all shingles; a document keeps the smallest value over its
    shingles. Two documents get the same minimum with probability equal to their Jaccard
    similarity, so the fraction of equal entries estimates it, with standard error
    ``sqrt(J (1 - J) / num_perm)``. An empty set gets the value ``p`` everywhere.

    >>> a, b = np.arange(0, 100), np.arange(50, 150)          # Jaccard 50/150 = 1/3
    >>> sig = minhash_signatures([a, b], num_perm=256, seed=0)
    >>> sig.shape, abs(estimated_jaccard(sig[0], sig[1]) - 1 / 3) < 0.1
    ((2, 256), True)
    """
    if not isinstance(num_perm, int) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive int; got {num_perm!r}")
    for i, s in enumerate(shingle_sets):
        if not isinstance(s, np.ndarray) or s.ndim != 1:
            raise TypeError(f"shingle_sets[{i}] must be a 1-D numpy array of shingle hashes "
                            f"(see shingle_hashes); got {type(s).__name__}")
    a, b = minhash_params(num_perm, seed)
    a, b = a[:, None], b[:, None]
    out = np.full((len(shingle_sets), num_perm), MERSENNE, dtype=np.int64)
    lengths = np.array([len(s) for s in shingle_sets])
    nonempty = np.flatnonzero(lengths)
    if len(nonempty) == 0:
        return out
    # All documents at once, in slices of the concatenation: a few large numpy calls
    # instead of one small call per document.
    values = np.concatenate([shingle_sets[i] for i in nonempty]).astype(np.int64) % MERSENNE
    starts = np.concatenate([[0], np.cumsum(lengths[nonempty])[:-1]])
    chunk = max(1, (1 << 22) // num_perm)
    first_doc = 0
    while first_doc < len(nonempty):
        last_doc = int(np.searchsorted(starts, starts[first_doc] + chunk, side="left"))
        last_doc = max(last_doc, first_doc + 1)
        lo = starts[first_doc]
        hi = starts[last_doc] if last_doc < len(nonempty) else len(values)
        permuted = (a * values[lo:hi][None, :] + b) % MERSENNE  # a*x < 2**62: fits int64
        minima = np.minimum.reduceat(permuted, starts[first_doc:last_doc] - lo, axis=1)
        out[nonempty[first_doc:last_doc]] = minima.T
        first_doc = last_doc
    return out


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of equal MinHash values: the MinHash estimate of the Jaccard similarity.

    >>> estimated_jaccard(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0]))
    0.5
    """
    if sig_a.shape != sig_b.shape:
        raise ValueError(f"signatures must have the same shape; got {sig_a.shape} and "
                         f"{sig_b.shape}")
    return float(np.mean(sig_a == sig_b))


def candidate_probability(similarity: float | np.ndarray, bands: int,
                          rows: int) -> float | np.ndarray:
    """Probability that LSH with ``bands`` bands of ``rows`` rows makes two documents of
    Jaccard ``similarity`` a candidate pair: ``1 - (1 - s**rows)**bands`` (the S-curve).

    >>> round(candidate_probability(0.8, bands=20, rows=5), 4)
    0.9996
    >>> round(candidate_probability(0.3, bands=20, rows=5), 3)
    0.047
    """
    probability = 1 - (1 - np.asarray(similarity, dtype=float) ** rows) ** bands
    return float(probability) if probability.ndim == 0 else probability


def lsh_params(threshold: float, num_perm: int = 128, recall: float = 0.99) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm``: the most rows per band (fewest
    chance candidates) whose S-curve still catches a pair of Jaccard ``threshold`` with
    probability at least ``recall``.

    >>> lsh_params(0.8, num_perm=128)
    (21, 6)
    >>> lsh_params(0.5, num_perm=128)
    (42, 3)
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold!r}")
    if not 0.0 < recall < 1.0:
        raise ValueError(f"recall must be in (0, 1); got {recall!r}")
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) >= recall:
            best = (bands, rows)
    return best


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, whose signatures agree on all ``rows`` values of at
    least one of ``bands`` bands: the only pairs worth comparing exactly, found without
    comparing all n² pairs.

    >>> sig = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [7, 7, 7, 7]])
    >>> sorted(lsh_candidates(sig, bands=2, rows=2))
    [(0, 1)]
    """
    if signatures.ndim != 2:
        raise ValueError(f"signatures must be 2-D (documents, num_perm); got shape "
                         f"{signatures.shape}")
    if bands < 1 or rows < 1 or bands * rows > signatures.shape[1]:
        raise ValueError(f"bands * rows = {bands} * {rows} must be between 1 and num_perm = "
                         f"{signatures.shape[1]}")
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        block = np.ascontiguousarray(signatures[:, band * rows:(band + 1) * rows])
        buckets: dict[bytes, list[int]] = {}
        for i, key in enumerate(block):
            buckets.setdefault(key.tobytes(), []).append(i)
        for members in buckets.values():
            if len(members) > 1:
                pairs.update((p, q) for k, p in enumerate(members) for q in members[k + 1:])
    return pairs


@dataclass
class NearDuplicates:
    """Result of ``near_duplicates``: ``candidates`` (pairs LSH proposed), ``pairs``
    (``(i, j, jaccard)`` confirmed at or above the threshold) and ``clusters`` (connected
    groups of confirmed pairs, each sorted, ordered by first member)."""

    candidates: set[tuple[int, int]]
    pairs: list[tuple[int, int, float]]
    clusters: list[list[int]]

    def removable(self) -> list[int]:
        """Indices to drop to keep one document (the first) per cluster."""
        return sorted(i for cluster in self.clusters for i in cluster[1:])


def _clusters(n: int, pairs: Sequence[tuple[int, int, float]]) -> list[list[int]]:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[max(root(i), root(j))] = min(root(i), root(j))
    groups: dict[int, list[int]] = {}
    for i in sorted({k for p in pairs for k in p[:2]}):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def near_duplicates(docs: Sequence[str], threshold: float = 0.7, n: int = 5,
                    unit: str = "char", num_perm: int = 128, seed: int = 0,
                    bands: int | None = None, rows: int | None = None) -> NearDuplicates:
    """Near-duplicate clusters: shingle, MinHash, LSH for candidates, then the exact
    Jaccard of each candidate pair (so no reported pair is below ``threshold``).

    >>> docs = ["the quick brown fox jumps over the lazy dog",
    ...         "the quick brown fox jumped over the lazy dog",
    ...         "an entirely different sentence about cats"]
    >>> near_duplicates(docs, threshold=0.6).clusters
    [[0, 1]]
    """
    check_documents(docs)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold!r}")
    if (bands is None) != (rows is None):
        raise ValueError("give both bands and rows, or neither (then lsh_params picks them)")
    if bands is None or rows is None:
        bands, rows = lsh_params(threshold, num_perm)
    sets = [shingle_hashes(doc, n, unit) for doc in docs]
    signatures = minhash_signatures(sets, num_perm, seed)
    nonempty = {i for i, s in enumerate(sets) if len(s)}
    candidates = {p for p in lsh_candidates(signatures, bands, rows)
                  if p[0] in nonempty and p[1] in nonempty}
    pairs = []
    for i, j in sorted(candidates):
        similarity = jaccard(sets[i], sets[j])
        if similarity >= threshold:
            pairs.append((i, j, similarity))
    return NearDuplicates(candidates, pairs, _clusters(len(docs), pairs))
