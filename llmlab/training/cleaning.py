"""Cleaning a pretraining corpus: normalisation, exact and near deduplication (MinHash +
LSH), and rule-based quality filters in the spirit of Gopher and C4 (chapter 04).

Why bother: duplicated text is memorised rather than generalised from and wastes compute;
boilerplate and spam teach the model to write boilerplate and spam. Large pipelines
(C4, Gopher/MassiveText, RefinedWeb, FineWeb) all do these three steps, at scale.

    >>> docs = ["To be, or not to be.", "to be or NOT to be", "Click here: all our cookies!"]
    >>> exact_dedup(docs).kept
    [0, 2]
    >>> quality_filter(docs, QualityRules(min_words=3)).reasons[2]
    ['boilerplate']
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "normalize", "content_hash", "DedupReport", "exact_dedup",
    "shingles", "shingle_hashes", "jaccard", "minhash_signatures", "estimated_jaccard",
    "lsh_params", "candidate_probability", "lsh_candidates", "NearDuplicates",
    "near_duplicates", "STOP_WORDS", "GOPHER_STOP_WORDS", "QualityRules", "quality_reasons",
    "FilterReport", "quality_filter",
    "split_paragraphs", "WebCrawl", "make_web_crawl", "JUNK",
]

MERSENNE = (1 << 31) - 1  # a prime: (a*x + b) mod p is a proper random hash for x < p
_WORD = re.compile(r"\w+(?:'\w+)*")
_NOT_WORD = re.compile(r"[^\w\s]|_")  # punctuation and symbols, in any script


def _check_docs(docs: Sequence[str], name: str = "docs") -> None:
    if isinstance(docs, str) or not isinstance(docs, Sequence):
        raise TypeError(f"{name} must be a sequence of strings (a list); got "
                        f"{type(docs).__name__}")
    for i, doc in enumerate(docs):
        if not isinstance(doc, str):
            raise TypeError(f"{name}[{i}] must be a str; got {type(doc).__name__}")


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")


# ----------------------------------------------------------------------------- exact


def normalize(text: str) -> str:
    """The text as duplicate detection should see it: Unicode NFKC, lowercase, punctuation
    dropped, runs of whitespace collapsed to one space.

    Copies on the web differ in exactly these ways (a re-wrapped line, a curly quote, a
    title in capitals) while saying the same thing; hashing the raw bytes would miss them.

    >>> normalize("  To be, or NOT\\n to be:  that is the question!  ")
    'to be or not to be that is the question'
    >>> normalize("’Tis ﬁne") == normalize("'tis fine")   # curly quote, ligature
    True
    """
    _check_text(text)
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NOT_WORD.sub(" ", text).split())


def content_hash(text: str) -> str:
    """Hex SHA-256 of the normalised text: equal for texts that differ only in case,
    spacing or punctuation.

    >>> content_hash("Exit.") == content_hash("[Exit]")
    True
    >>> len(content_hash("anything"))
    64
    """
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()


@dataclass
class DedupReport:
    """What exact deduplication did: ``kept`` and ``removed`` document indices (sorted),
    and ``groups``: each set of duplicates (size >= 2), first occurrence first."""

    kept: list[int]
    removed: list[int]
    groups: list[list[int]]

    @property
    def n_removed(self) -> int:
        return len(self.removed)


def exact_dedup(docs: Sequence[str]) -> DedupReport:
    """Keep the first document of every group with the same ``content_hash``.

    >>> report = exact_dedup(["Exit.", "Exeunt.", "[Exit]", "exit"])
    >>> report.kept, report.removed, report.groups
    ([0, 1], [2, 3], [[0, 2, 3]])
    """
    _check_docs(docs)
    first: dict[str, int] = {}
    members: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        key = content_hash(doc)
        first.setdefault(key, i)
        members.setdefault(key, []).append(i)
    kept = sorted(first.values())
    groups = sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])
    removed = sorted(i for g in groups for i in g[1:])
    return DedupReport(kept, removed, groups)


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
    _check_text(text)
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
    _check_text(text)
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
    rng = np.random.default_rng(seed)
    a = rng.integers(1, MERSENNE, size=num_perm, dtype=np.int64)[:, None]
    b = rng.integers(0, MERSENNE, size=num_perm, dtype=np.int64)[:, None]
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
    _check_docs(docs)
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


# ----------------------------------------------------------------------------- quality


BOILERPLATE = (
    r"lorem ipsum", r"click here", r"\bcookies?\b", r"privacy policy", r"terms of (use|service)",
    r"javascript", r"all rights reserved", r"subscribe to", r"sign up for", r"log ?in to",
    r"\baccept\b.*\bcontinue\b",
)
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# Gopher asks for 2 of its 8 words in documents of 50+ words. Paragraphs are shorter, and
# older English leans on other function words ("thou", "thy", "is", "my"): a longer list.
STOP_WORDS = GOPHER_STOP_WORDS | frozenset(
    ("a", "an", "i", "is", "in", "it", "you", "my", "not", "for", "but", "his", "he", "as",
     "so", "me", "we", "our", "your", "this", "thou", "thy", "thee", "what", "will",
     "shall", "all", "by", "from", "on", "are", "was"))


@dataclass(frozen=True)
class QualityRules:
    """Thresholds of the quality rules (Gopher's document rules, C4's line rules), scaled
    for paragraph-sized documents. Each field documents the rule it sets."""

    min_words: int = 5  # too_few_words: fewer words than this
    max_words: int = 100_000  # too_many_words
    min_mean_word_length: float = 3.0  # mean_word_length: outside [min, max] characters
    max_mean_word_length: float = 10.0
    max_non_alpha_words: float = 0.2  # non_alpha_words: fraction of words without a letter
    max_symbol_fraction: float = 0.1  # symbols: fraction of non-space characters that are
    # neither letters, digits nor ordinary punctuation (#, $, %, *, @, |, emoji, ...)
    min_stop_words: int = 2  # stop_words: fewer distinct function words -> not prose
    stop_words: frozenset[str] = STOP_WORDS  # GOPHER_STOP_WORDS for Gopher's rule
    max_duplicate_lines: float = 0.3  # repeated_lines: fraction of lines that repeat another
    max_top_bigram_fraction: float = 0.2  # repeated_ngrams: characters in the commonest
    # word bigram over all word characters (keyword stuffing), when it occurs 3+ times
    boilerplate: tuple[str, ...] = field(default=BOILERPLATE)  # boilerplate: any line matches


_SPACE = re.compile(r"\s")
_SYMBOL = re.compile(r"[^\w\s.,;:!?'\"()\[\]&-]|_")  # not a letter, digit or ordinary punctuation


@functools.lru_cache(maxsize=16)
def _any_of(patterns: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
RULE_NAMES = ("too_few_words", "too_many_words", "mean_word_length", "non_alpha_words",
              "symbols", "stop_words", "repeated_lines", "repeated_ngrams", "boilerplate")


def quality_reasons(doc: str, rules: QualityRules | None = None) -> list[str]:
    """Names of the quality rules ``doc`` breaks (see ``QualityRules``); ``[]`` if none.

    >>> quality_reasons("The rest is silence; and that is all there is to say of it.")
    []
    >>> quality_reasons("$$$ BUY NOW ### $$$ cheap cheap ### $$$")
    ['non_alpha_words', 'symbols', 'stop_words']
    >>> quality_reasons("cheap pills cheap pills cheap pills best cheap pills for the win")
    ['repeated_ngrams']
    """
    _check_text(doc)
    rules = rules or QualityRules()
    words = doc.split()
    reasons = []
    if len(words) < rules.min_words:
        reasons.append("too_few_words")
    if len(words) > rules.max_words:
        reasons.append("too_many_words")
    if words:
        mean_length = sum(len(w) for w in words) / len(words)
        if not rules.min_mean_word_length <= mean_length <= rules.max_mean_word_length:
            reasons.append("mean_word_length")
        if sum(not any(c.isalpha() for c in w) for w in words) / len(words) \
                > rules.max_non_alpha_words:
            reasons.append("non_alpha_words")
    visible = len(doc) - len(_SPACE.findall(doc))
    if visible and len(_SYMBOL.findall(doc)) / visible > rules.max_symbol_fraction:
        reasons.append("symbols")
    lowered = [w.lower() for w in _WORD.findall(doc)]
    if len(rules.stop_words.intersection(lowered)) < rules.min_stop_words:
        reasons.append("stop_words")
    lines = [line.strip() for line in doc.splitlines() if line.strip()]
    if len(lines) > 1:
        repeats = len(lines) - len(set(lines))
        if repeats / len(lines) > rules.max_duplicate_lines:
            reasons.append("repeated_lines")
    if len(lowered) >= 4:
        bigrams = Counter(zip(lowered, lowered[1:], strict=False))
        (top, count), = bigrams.most_common(1)
        covered = count * (len(top[0]) + len(top[1]))
        if count >= 3 and covered / sum(len(w) for w in lowered) > rules.max_top_bigram_fraction:
            reasons.append("repeated_ngrams")
    if _any_of(rules.boilerplate).search(doc):  # no pattern spans lines: one search
        reasons.append("boilerplate")
    return reasons


@dataclass
class FilterReport:
    """Per-document decisions of ``quality_filter``: ``keep[i]``, ``reasons[i]`` (the
    rules document ``i`` broke), and ``counts``: documents breaking each rule (a document
    may break several)."""

    keep: list[bool]
    reasons: list[list[str]]
    counts: Counter = field(default_factory=Counter)

    @property
    def kept(self) -> list[int]:
        return [i for i, k in enumerate(self.keep) if k]

    @property
    def removed(self) -> list[int]:
        return [i for i, k in enumerate(self.keep) if not k]


def quality_filter(docs: Sequence[str], rules: QualityRules | None = None) -> FilterReport:
    """Apply ``quality_reasons`` to every document; keep those that break no rule.

    >>> report = quality_filter(["A fine speech, and that is the end of it.", "#### $$$$"])
    >>> report.keep, report.counts["symbols"]
    ([True, False], 1)
    """
    _check_docs(docs)
    reasons = [quality_reasons(doc, rules) for doc in docs]
    counts = Counter(r for rs in reasons for r in rs)
    return FilterReport([not rs for rs in reasons], reasons, counts)


# ----------------------------------------------------------------------------- corpora


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, stripped (in a play: one speech each).

    >>> split_paragraphs("ROMEO.\\nHe jests.\\n\\n\\n[Exit.]\\n")
    ['ROMEO.\\nHe jests.', '[Exit.]']
    """
    _check_text(text)
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


SPAM = ("cheap", "pills", "casino", "bonus", "free", "winner", "crypto", "deal", "viagra",
        "loans", "best", "price", "buy", "now", "online", "discount")
BANNERS = (
    "We use cookies to improve your experience. By continuing you accept our cookie policy.",
    "Click here to subscribe to our newsletter!",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    "Copyright 2026 Globe Theatre Media. All rights reserved. Privacy Policy | Terms of Use",
    "Please enable JavaScript in your browser to view this page.",
    "Sign up for our free trial today and log in to read more plays!",
)


JUNK = ("boilerplate", "spam", "symbols")


@dataclass
class WebCrawl:
    """A corpus with known defects: ``docs``, their ``labels`` ("clean", "exact_copy",
    "near_copy", "boilerplate", "spam", "symbols") and ``sources`` (for copies, the index
    of the document copied; otherwise -1)."""

    docs: list[str]
    labels: list[str]
    sources: list[int]

    def redundant(self) -> set[int]:
        """The documents a perfect deduplicator removes: every member of a family (an
        original with its exact and near copies; identical junk texts) but the first.

        >>> WebCrawl(["a b", "x", "A  B", "x"], ["clean", "spam", "exact_copy", "spam"],
        ...          [-1, -1, 0, -1]).redundant()
        {2, 3}
        """
        first: dict[object, int] = {}
        out = set()
        for i, (doc, source) in enumerate(zip(self.docs, self.sources, strict=True)):
            family = source if source >= 0 else ("text", normalize(doc)) \
                if self.labels[i] in JUNK else i
            if family in first or (isinstance(family, int) and family < i):
                out.add(i)
            first.setdefault(family, i)
        return out

    def junk(self) -> set[int]:
        """The documents the quality filters should remove."""
        return {i for i, label in enumerate(self.labels) if label in JUNK}


def _edit_words(text: str, n_edits: int, rng: np.random.Generator) -> str:
    words = text.split(" ")
    for _ in range(n_edits):
        i = int(rng.integers(len(words)))
        action = rng.integers(3)
        if action == 0 and len(words) > 1:
            del words[i]
        elif action == 1 and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words.insert(i, ["indeed", "verily", "good", "sir", "now"][int(rng.integers(5))])
    return " ".join(words)


def make_web_crawl(paragraphs: Sequence[str], n_clean: int = 2000, seed: int = 0,
                   copy_rate: float = 0.1, near_rate: float = 0.1,
                   junk_rate: float = 0.1) -> WebCrawl:
    """A seeded "web crawl": ``n_clean`` distinct paragraphs (of at least 20 words) plus,
    in proportion to them, exact copies (re-cased and re-spaced, so only normalisation
    reveals them), near copies (2-3 words deleted, swapped or inserted), and junk:
    cookie banners and other boilerplate, keyword-stuffed spam and symbol-heavy lines.
    Everything is shuffled; the labels say what each document is.

    >>> crawl = make_web_crawl(["to be or not to be that is the question " * 3] * 50,
    ...                        n_clean=10, seed=0)
    Traceback (most recent call last):
    ...
    ValueError: need 10 distinct paragraphs of at least 20 words; the input has 1
    >>> crawl = make_web_crawl([f"speech {i} " + "and so to bed " * 5 for i in range(30)],
    ...                        n_clean=20, seed=0)
    >>> len(crawl.docs), Counter(crawl.labels)["exact_copy"]
    (26, 2)
    """
    _check_docs(paragraphs, "paragraphs")
    rng = np.random.default_rng(seed)
    pool = list(dict.fromkeys(p for p in paragraphs if len(p.split()) >= 20))
    if len(pool) < n_clean:
        raise ValueError(f"need {n_clean} distinct paragraphs of at least 20 words; the input "
                         f"has {len(pool)}")
    chosen = [pool[i] for i in rng.choice(len(pool), n_clean, replace=False)]
    items = [(p, "clean", i) for i, p in enumerate(chosen)]
    for _ in range(round(copy_rate * n_clean)):
        i = int(rng.integers(n_clean))
        copy = chosen[i].upper() if rng.random() < 0.5 else "  " + chosen[i].replace(" ", "  ")
        items.append((copy, "exact_copy", i))
    for _ in range(round(near_rate * n_clean)):
        i = int(rng.integers(n_clean))
        items.append((_edit_words(chosen[i], int(rng.integers(2, 4)), rng), "near_copy", i))
    for k in range(round(junk_rate * n_clean)):
        kind = JUNK[k % 3]
        if kind == "boilerplate":
            text = "\n".join(BANNERS[j] for j in rng.choice(len(BANNERS), 2, replace=False))
        elif kind == "spam":
            # Keyword stuffing: one phrase again and again, padded with function words.
            phrase = " ".join(SPAM[j] for j in rng.choice(len(SPAM), 2, replace=False))
            filler = [SPAM[int(j)] for j in rng.integers(len(SPAM), size=8)] + \
                ["the", "and", "with", "to", "of"]
            text = " ".join(phrase if rng.random() < 0.4 else filler[int(rng.integers(13))]
                            for _ in range(int(rng.integers(15, 30))))
        else:
            text = " ".join("".join(rng.choice(list("#$%*@|~^<>=+0123456789abc"), 6))
                            for _ in range(int(rng.integers(8, 20))))
        items.append((text, kind, -1))
    order = rng.permutation(len(items))
    position = {int(old): new for new, old in enumerate(order)}
    docs, labels, sources = [], [], []
    for old in order:
        text, label, source = items[old]
        docs.append(text)
        labels.append(label)
        # A copy points at its original's new position (originals are the first n_clean).
        sources.append(position[source] if label in ("exact_copy", "near_copy") else -1)
    return WebCrawl(docs, labels, sources)
