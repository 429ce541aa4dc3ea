"""Cleaning a pretraining corpus: normalisation, exact deduplication, and rule-based quality
filters in the spirit of Gopher and C4, with a seeded web-crawl mix to score them on
(chapter 04). Near-duplicate detection (shingles, MinHash, LSH) is
:mod:`llmlab.training.near_dedup`.

Why bother: duplicated text is memorised rather than generalised from and wastes compute;
boilerplate and spam teach the model to write boilerplate and spam. Large pipelines
(C4, Gopher/MassiveText, RefinedWeb, FineWeb) all do these three steps (exact and near
deduplication, quality filters), at scale.

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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "normalize", "content_hash", "DedupReport", "exact_dedup",
    "STOP_WORDS", "GOPHER_STOP_WORDS", "QualityRules", "quality_reasons",
    "FilterReport", "quality_filter",
    "split_paragraphs", "WebCrawl", "make_web_crawl", "JUNK",
    "PII_RULES", "scrub_pii", "add_contact_details",
    "LANGUAGE_STOP_WORDS", "language_scores", "identify_language", "FOREIGN_SENTENCES",
    "foreign_documents",
]

_WORD = re.compile(r"\w+(?:'\w+)*")
_NOT_WORD = re.compile(r"[^\w\s]|_")  # punctuation and symbols, in any script


def check_documents(docs: Sequence[str], name: str = "docs") -> None:
    if isinstance(docs, str) or not isinstance(docs, Sequence):
        raise TypeError(f"{name} must be a sequence of strings (a list); got "
                        f"{type(docs).__name__}")
    for i, doc in enumerate(docs):
        if not isinstance(doc, str):
            raise TypeError(f"{name}[{i}] must be a str; got {type(doc).__name__}")


def check_text(text: str) -> None:
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
    check_text(text)
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
    check_documents(docs)
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
    check_text(doc)
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
    check_documents(docs)
    reasons = [quality_reasons(doc, rules) for doc in docs]
    counts = Counter(r for rs in reasons for r in rs)
    return FilterReport([not rs for rs in reasons], reasons, counts)


# ----------------------------------------------------------------------------- corpora


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, stripped (in a play: one speech each).

    >>> split_paragraphs("ROMEO.\\nHe jests.\\n\\n\\n[Exit.]\\n")
    ['ROMEO.\\nHe jests.', '[Exit.]']
    """
    check_text(text)
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
    check_documents(paragraphs, "paragraphs")
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


# ----------------------------------------------------------------------------- PII scrubbing

# Order matters: an IP address would otherwise look like a phone number to the phone rule,
# and the local part of an email may hold digits. Each rule replaces its matches with a tag.
PII_RULES: dict[str, re.Pattern] = {
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}", re.IGNORECASE),
    "ip": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "phone": re.compile(r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
                        r"\d{3,4}[ .-]?\d{3,4}(?!\w|\.\d)"),
}


def scrub_pii(text: str) -> tuple[str, Counter]:
    """Replace email addresses, IPv4 addresses and phone numbers by ``<EMAIL>``, ``<IP>`` and
    ``<PHONE>`` (the regex rules of ``PII_RULES``, applied in that order); return the
    scrubbed text and how many of each were replaced.

    Regexes are what large pipelines run on trillions of tokens (BigScience's ROOTS and
    StarCoder's data scrub emails, IPs and keys this way); they miss names and addresses,
    which need a trained tagger.

    >>> scrub_pii("Mail kate.m@example.org or call +44 20 7946 0958 from 192.168.0.12.")
    ('Mail <EMAIL> or call <PHONE> from <IP>.', Counter({'email': 1, 'ip': 1, 'phone': 1}))
    >>> scrub_pii("Call (555) 123-4567 or 555.123.4567.")[0]
    'Call <PHONE> or <PHONE>.'
    >>> scrub_pii("Act 3, scene 2: 1599 lines in 1.5 hours.")[1]
    Counter()
    """
    check_text(text)
    counts: Counter = Counter()
    for name, pattern in PII_RULES.items():
        text, n = pattern.subn(f"<{name.upper()}>", text)
        if n:
            counts[name] += n
    return text, counts


_FIRST = ("anne", "will", "kate", "tom", "joan", "hal", "olivia", "rosalind")
_DOMAINS = ("example.com", "example.org", "globe-theatre.co.uk", "mail.example.net")


def add_contact_details(docs: Sequence[str], rate: float = 0.1,
                        seed: int = 0) -> tuple[list[str], list[Counter]]:
    """Copies of ``docs`` where a fraction ``rate`` gets one sentence of fake personal data
    appended (an email, a phone number in one of several formats, an IP address, or
    two of them); also return, per document, how many of each kind were added, so a
    scrubber's recall can be measured. Every address uses reserved example domains and
    documentation IP ranges.

    >>> docs, added = add_contact_details(["a speech"] * 4, rate=0.5, seed=1)
    >>> sum(sum(c.values()) > 0 for c in added)
    2
    """
    check_documents(docs)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1]; got {rate!r}")
    rng = np.random.default_rng(seed)
    out, added = list(docs), [Counter() for _ in docs]
    for i in rng.choice(len(docs), round(rate * len(docs)), replace=False):
        name = f"{_FIRST[rng.integers(len(_FIRST))]}{'._'[rng.integers(2)]}{rng.integers(10, 99)}"
        email = f"{name}@{_DOMAINS[rng.integers(len(_DOMAINS))]}"
        digits = rng.integers(0, 10, size=10)
        phone = ("+44 20 {}{}{}{} {}{}{}{}", "(555) {}{}{}-{}{}{}{}", "555.{}{}{}.{}{}{}{}",
                 "+1 555 {}{}{} {}{}{}{}")[rng.integers(4)]
        phone = phone.format(*digits[:8])
        ip = f"{(192, 198, 203)[rng.integers(3)]}.{rng.integers(0, 256)}.{rng.integers(0, 256)}" \
             f".{rng.integers(1, 255)}"
        kinds = [("email", f"write to {email}"), ("phone", f"call {phone}"),
                 ("ip", f"my server is {ip}")]
        chosen = [kinds[k] for k in sorted(rng.choice(3, int(rng.integers(1, 3)), replace=False))]
        out[i] = f"{docs[i]} For tickets {' or '.join(text for _, text in chosen)}."
        added[i].update(kind for kind, _ in chosen)
    return out, added


# ----------------------------------------------------------------------------- language ID

# The commonest function words of each language: a text's language is the one whose
# function words make up the largest share of its words (Grefenstette 1995). A share too
# small for any language means "not prose" (code, lists, symbol soup).
LANGUAGE_STOP_WORDS: dict[str, frozenset[str]] = {
    "en": STOP_WORDS,
    "fr": frozenset(("le", "la", "les", "de", "des", "du", "et", "est", "un", "une", "que",
                     "qui", "dans", "pour", "pas", "ne", "sur", "au", "il", "elle", "nous",
                     "vous", "je", "ce", "en", "avec", "mais", "son", "sa", "ses")),
    "de": frozenset(("der", "die", "das", "und", "ist", "nicht", "ein", "eine", "zu", "den",
                     "mit", "sich", "des", "auf", "für", "im", "dem", "ich", "du", "er", "sie",
                     "es", "wir", "ihr", "mein", "dein", "aber", "wie", "auch", "von")),
    "es": frozenset(("el", "la", "los", "las", "de", "del", "y", "que", "en", "un", "una",
                     "es", "por", "con", "no", "para", "se", "su", "sus", "lo", "al", "como",
                     "pero", "mi", "tu", "yo", "más", "este", "esta", "muy")),
}


def language_scores(text: str) -> dict[str, float]:
    """For each language of ``LANGUAGE_STOP_WORDS``, the fraction of ``text``'s words that
    are its function words.

    >>> language_scores("the cat and the dog")["en"]
    0.6
    """
    check_text(text)
    words = _WORD.findall(text.lower())
    if not words:
        return dict.fromkeys(LANGUAGE_STOP_WORDS, 0.0)
    return {lang: sum(w in stop for w in words) / len(words)
            for lang, stop in LANGUAGE_STOP_WORDS.items()}


def identify_language(text: str, min_score: float = 0.15) -> str:
    """The language whose function words are the largest share of ``text``'s words, or
    ``"unknown"`` when no language reaches ``min_score``.

    >>> identify_language("Le roi est mort, vive le roi et la reine")
    'fr'
    >>> identify_language("Der König ist tot, und die Königin auch")
    'de'
    >>> identify_language("#$% 0x1f @@ 42 ~~~")
    'unknown'
    """
    scores = language_scores(text)
    best = max(scores, key=scores.get)
    return best if scores[best] >= min_score else "unknown"


FOREIGN_SENTENCES: dict[str, tuple[str, ...]] = {
    "fr": ("Le théâtre est plein ce soir et les acteurs sont prêts.",
           "Nous avons acheté des billets pour la pièce de samedi.",
           "Elle dit que le roi ne reviendra pas avant la fin de la guerre.",
           "Il pleut sur la ville et les rues sont vides.",
           "Je pense que cette traduction est meilleure que la première."),
    "de": ("Das Theater ist heute Abend voll und die Schauspieler sind bereit.",
           "Wir haben die Karten für das Stück am Samstag gekauft.",
           "Sie sagt, dass der König nicht vor dem Ende des Krieges zurückkommt.",
           "Es regnet in der Stadt und die Straßen sind leer.",
           "Ich glaube, dass diese Übersetzung besser ist als die erste."),
    "es": ("El teatro está lleno esta noche y los actores están listos.",
           "Hemos comprado las entradas para la obra del sábado.",
           "Ella dice que el rey no volverá antes del fin de la guerra.",
           "Llueve en la ciudad y las calles están vacías.",
           "Creo que esta traducción es mejor que la primera."),
}


def foreign_documents(n_per_language: int = 20, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short seeded documents in French, German and Spanish (3 to 5 sentences of
    ``FOREIGN_SENTENCES`` each) and their language codes, to mix into an English crawl.

    >>> docs, langs = foreign_documents(2, seed=0)
    >>> len(docs), sorted(set(langs))
    (6, ['de', 'es', 'fr'])
    """
    rng = np.random.default_rng(seed)
    docs, langs = [], []
    for lang, sentences in FOREIGN_SENTENCES.items():
        for _ in range(n_per_language):
            picked = rng.choice(len(sentences), int(rng.integers(3, 6)), replace=False)
            docs.append(" ".join(sentences[j] for j in picked))
            langs.append(lang)
    return docs, langs
