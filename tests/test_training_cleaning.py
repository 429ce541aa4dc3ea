"""Corpus cleaning (llmlab.training.cleaning and .near_dedup), checked against
pandas/datasets, brute force and MinHash theory, on the real Shakespeare corpus and on the
seeded web crawl."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from llmlab.training.cleaning import (
    GOPHER_STOP_WORDS,
    QualityRules,
    WebCrawl,
    content_hash,
    exact_dedup,
    make_web_crawl,
    normalize,
    quality_filter,
    quality_reasons,
    split_paragraphs,
)
from llmlab.training.near_dedup import (
    candidate_probability,
    estimated_jaccard,
    jaccard,
    lsh_candidates,
    lsh_params,
    minhash_signatures,
    near_duplicates,
    shingle_hashes,
    shingles,
)


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    from llmlab import assets

    return split_paragraphs(assets.load("shakespeare"))


@pytest.fixture(scope="module")
def crawl(paragraphs) -> WebCrawl:
    return make_web_crawl(paragraphs, n_clean=400, seed=1)


# ----------------------------------------------------------------------------- exact


def test_normalize_ignores_case_spacing_and_punctuation():
    assert normalize("O Romeo,  Romeo!\nwherefore art thou Romeo?") == \
        "o romeo romeo wherefore art thou romeo"
    assert normalize("«Exit»") == normalize("[EXIT.]") == "exit"
    assert normalize("Exit") != normalize("Exeunt")
    assert content_hash("Act V.") == content_hash("ACT  V") != content_hash("Act IV")


def test_exact_dedup_matches_pandas_drop_duplicates(paragraphs):
    pd = pytest.importorskip("pandas")
    report = exact_dedup(paragraphs)
    frame = pd.DataFrame({"text": paragraphs})
    frame["norm"] = frame["text"].map(normalize)
    expected = frame.drop_duplicates(subset="norm", keep="first").index.tolist()
    assert report.kept == expected
    assert report.removed == sorted(set(range(len(paragraphs))) - set(expected))
    assert report.n_removed > 1000  # stage directions: "Exit.", "Exeunt." ...
    for group in report.groups:
        assert len(group) > 1 and group[0] in report.kept
        assert len({frame["norm"][i] for i in group}) == 1
    sizes = frame.groupby("norm").size()
    assert sorted(len(g) for g in report.groups) == sorted(sizes[sizes > 1].tolist())


def test_exact_dedup_matches_datasets_unique(paragraphs):
    datasets = pytest.importorskip("datasets")
    sample = paragraphs[:5000]
    dataset = datasets.Dataset.from_dict({"norm": [normalize(p) for p in sample]})
    assert len(exact_dedup(sample).kept) == len(dataset.unique("norm"))


# ----------------------------------------------------------------------------- shingles


def test_shingle_hashes_are_the_shingles_without_collisions(paragraphs):
    for text in paragraphs[1000:1400]:
        for n, unit in ((5, "char"), (3, "word"), (1, "word")):
            assert len(shingle_hashes(text, n, unit)) == len(shingles(text, n, unit))


def test_jaccard_of_hashes_equals_jaccard_of_strings(paragraphs):
    texts = [p for p in paragraphs if len(p.split()) > 15][:60]
    for a, b in itertools.combinations(texts[:25], 2):
        for n, unit in ((5, "char"), (2, "word")):
            exact = jaccard(shingles(a, n, unit), shingles(b, n, unit))
            assert jaccard(shingle_hashes(a, n, unit), shingle_hashes(b, n, unit)) == \
                pytest.approx(exact)


def _pairs_with_known_jaccard(rng: np.random.Generator, count: int):
    """Random set pairs spanning Jaccard 0..1 (shared part + private parts)."""
    for _ in range(count):
        shared, only_a, only_b = rng.integers(0, 200, size=3)
        values = rng.choice(2**31 - 1, size=shared + only_a + only_b + 1, replace=False)
        a = np.sort(values[:shared + only_a + 1])
        b = np.sort(np.concatenate([values[:shared], values[shared + only_a + 1:]]))
        yield a, b


def test_minhash_estimates_jaccard_within_the_theoretical_error():
    rng = np.random.default_rng(0)
    num_perm = 128
    pairs = list(_pairs_with_known_jaccard(rng, 400))
    sig = minhash_signatures([s for pair in pairs for s in pair], num_perm, seed=3)
    errors, sigmas = [], []
    for k, (a, b) in enumerate(pairs):
        true = jaccard(a, b)
        errors.append(estimated_jaccard(sig[2 * k], sig[2 * k + 1]) - true)
        sigmas.append(math.sqrt(true * (1 - true) / num_perm))
    errors, sigmas = np.array(errors), np.array(sigmas)
    # An estimate is a mean of num_perm Bernoulli(J) draws: 4 sigma covers it.
    assert np.mean(np.abs(errors) <= 4 * sigmas + 1e-12) >= 0.995
    assert abs(errors.mean()) < 0.01  # unbiased
    assert np.sqrt(np.mean(errors**2)) < 1.3 * np.sqrt(np.mean(sigmas**2))


def test_minhash_is_seeded_and_exact_at_the_extremes():
    a, b = np.arange(50), np.arange(1000, 1050)
    sig = minhash_signatures([a, a.copy(), b, np.zeros(0, dtype=np.int64)], 64, seed=7)
    assert np.array_equal(sig, minhash_signatures([a, a, b, np.zeros(0, np.int64)], 64, 7))
    assert not np.array_equal(sig, minhash_signatures([a, a, b, np.zeros(0, np.int64)], 64, 8))
    assert estimated_jaccard(sig[0], sig[1]) == 1.0
    assert estimated_jaccard(sig[0], sig[2]) < 0.1
    assert (sig[3] == 2**31 - 1).all()


# ----------------------------------------------------------------------------- LSH


def test_lsh_candidate_rate_follows_the_s_curve():
    rng = np.random.default_rng(1)
    bands, rows = 16, 4
    for similarity in (0.3, 0.5, 0.7):
        shared = round(200 * similarity / (1 + similarity))  # |A|=|B|=100, J = s/(200-s)
        hits, trials = 0, 300
        for trial in range(trials):
            values = rng.choice(2**31 - 1, size=200 - shared, replace=False)
            a = np.sort(values[:100])
            b = np.sort(np.concatenate([values[:shared], values[100:]]))
            sig = minhash_signatures([a, b], bands * rows, seed=trial)
            hits += (0, 1) in lsh_candidates(sig, bands, rows)
        expected = candidate_probability(jaccard(a, b), bands, rows)
        spread = 4 * math.sqrt(expected * (1 - expected) / trials) + 0.02
        assert abs(hits / trials - expected) < spread, (similarity, hits / trials, expected)


def test_lsh_params_picks_the_steepest_curve_that_keeps_recall():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = lsh_params(threshold, 128, recall=0.99)
        assert bands * rows <= 128
        assert candidate_probability(threshold, bands, rows) >= 0.99
        assert candidate_probability(threshold, 128 // (rows + 1), rows + 1) < 0.99


def test_near_duplicates_match_brute_force(crawl):
    docs = crawl.docs[:300]
    sets = [shingle_hashes(d, 5, "char") for d in docs]
    brute = {(i, j) for i, j in itertools.combinations(range(len(docs)), 2)
             if jaccard(sets[i], sets[j]) >= 0.7}
    found = near_duplicates(docs, threshold=0.7, n=5, unit="char", seed=0)
    confirmed = {(i, j) for i, j, _ in found.pairs}
    assert confirmed <= brute and all(s >= 0.7 for *_, s in found.pairs)
    assert len(brute) > 20
    assert len(confirmed) >= 0.95 * len(brute)  # LSH recall on pairs above the threshold
    assert len(found.candidates) < 0.01 * len(docs) ** 2  # far fewer than all pairs
    members = [i for cluster in found.clusters for i in cluster]
    assert len(members) == len(set(members))
    assert found.removable() == sorted(i for c in found.clusters for i in c[1:])


def test_near_duplicates_on_shakespeare_find_the_shared_poems(paragraphs):
    long = [p for p in paragraphs if len(p.split()) >= 20]
    found = near_duplicates(long, threshold=0.5, n=5, unit="word")
    texts = [(long[i], long[j]) for i, j, _ in found.pairs]
    # The Passionate Pilgrim reprints sonnets from Love's Labour's Lost.
    assert any("heavenly rhetoric of thine eye" in a and "heavenly rhetoric" in b
               for a, b in texts)


# ----------------------------------------------------------------------------- quality


@pytest.mark.parametrize(("doc", "rule"), [
    ("Exit.", "too_few_words"),
    ("Supercalifragilistic antidisestablishmentarianism incomprehensibilities "
     "uncharacteristically counterrevolutionaries", "mean_word_length"),
    ("the 12 34 56 78 90 and 11 22", "non_alpha_words"),
    ("the ★★★ best ★★★ deal ★★★ with $$$ and ###", "symbols"),
    ("Quick brown foxes jump over lazy dogs daily", "stop_words"),
    ("Cheap flights hotels deals today only", "stop_words"),
    ("and so to bed\nand so to bed\nand so to bed\nthe end", "repeated_lines"),
    ("cheap pills the cheap pills and cheap pills with cheap pills", "repeated_ngrams"),
    ("The play begins at eight.\nWe use cookies to improve the experience.", "boilerplate"),
])
def test_each_rule_fires_on_its_defect(doc, rule):
    assert rule in quality_reasons(doc)


def test_real_speeches_pass_and_counts_add_up(paragraphs):
    speeches = [p for p in paragraphs if len(p.split()) >= 20][:2000]
    report = quality_filter(speeches)
    assert len(report.removed) < 0.03 * len(speeches)
    assert report.counts == Counter(r for rs in report.reasons for r in rs)
    assert sorted(report.kept + report.removed) == list(range(len(speeches)))
    assert all(report.keep[i] == (not report.reasons[i]) for i in range(len(speeches)))
    # Gopher's stop-word rule (2 of 8 modern function words) misfires on Early Modern
    # English speeches much more often than the default, longer list.
    strict = quality_filter(speeches, QualityRules(stop_words=GOPHER_STOP_WORDS))
    assert strict.counts["stop_words"] > 3 * report.counts["stop_words"]


# ----------------------------------------------------------------------------- the crawl


def test_web_crawl_is_seeded_and_labelled(paragraphs, crawl):
    again = make_web_crawl(paragraphs, n_clean=400, seed=1)
    assert again.docs == crawl.docs and again.labels == crawl.labels
    assert make_web_crawl(paragraphs, n_clean=400, seed=2).docs != crawl.docs
    counts = Counter(crawl.labels)
    assert counts["clean"] == 400 and counts["exact_copy"] == counts["near_copy"] == 40
    for i, (label, source) in enumerate(zip(crawl.labels, crawl.sources, strict=True)):
        if label == "exact_copy":
            assert normalize(crawl.docs[i]) == normalize(crawl.docs[source])
        elif label == "near_copy":
            assert crawl.labels[source] == "clean" and crawl.docs[i] != crawl.docs[source]


def test_cleaning_the_crawl_has_high_precision_and_recall(crawl):
    redundant, junk = crawl.redundant(), crawl.junk()
    removed = set(exact_dedup(crawl.docs).removed)
    near = near_duplicates(crawl.docs, threshold=0.7)
    removed |= set(near.removable())
    hit = len(removed & redundant)
    assert hit / len(removed) > 0.95 and hit / len(redundant) > 0.9, (hit, len(removed))
    dropped = set(quality_filter(crawl.docs).removed)
    caught = len(dropped & junk)
    assert caught / len(junk) > 0.95 and caught / len(dropped) > 0.75


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_fail_early_and_clearly(paragraphs):
    with pytest.raises(TypeError, match="sequence of strings"):
        exact_dedup("one string")
    with pytest.raises(TypeError, match=r"docs\[1\] must be a str"):
        quality_filter(["fine", 3])
    with pytest.raises(TypeError, match="text must be a str"):
        normalize(None)
    with pytest.raises(ValueError, match="n must be a positive int"):
        shingles("abc", n=0)
    with pytest.raises(ValueError, match="unit must be 'word' or 'char'"):
        shingle_hashes("abc", unit="token")
    with pytest.raises(TypeError, match="two sets or two numpy arrays"):
        jaccard({1}, np.array([1]))
    with pytest.raises(TypeError, match="shingle_hashes"):
        minhash_signatures([{1, 2}])
    with pytest.raises(ValueError, match="num_perm"):
        minhash_signatures([np.arange(3)], num_perm=0)
    with pytest.raises(ValueError, match="same shape"):
        estimated_jaccard(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match="bands \\* rows"):
        lsh_candidates(np.zeros((3, 8)), bands=3, rows=3)
    with pytest.raises(ValueError, match="threshold"):
        near_duplicates(["a"], threshold=1.5)
    with pytest.raises(ValueError, match="both bands and rows"):
        near_duplicates(["a"], bands=4)
    with pytest.raises(ValueError, match="recall"):
        lsh_params(0.8, recall=1.0)
    with pytest.raises(ValueError, match="distinct paragraphs of at least 20 words"):
        make_web_crawl(paragraphs[:10], n_clean=50)


# ----------------------------------------------------------------------------- PII, language ID


def test_scrub_pii_finds_every_injected_item_and_nothing_in_shakespeare(paragraphs):
    from llmlab.training.cleaning import add_contact_details, scrub_pii

    clean = [p for p in paragraphs if len(p.split()) >= 20][:3000]
    assert sum((scrub_pii(p)[1] for p in clean), Counter()) == Counter()  # no false alarms
    docs, added = add_contact_details(clean, rate=0.2, seed=1)
    for doc, expected in zip(docs, added, strict=True):
        scrubbed, found = scrub_pii(doc)
        assert found == expected, doc[-120:]
        assert "@" not in scrubbed.split("For tickets")[-1]
    assert sum(sum(a.values()) > 0 for a in added) == round(0.2 * len(clean))


@pytest.mark.parametrize("text, kinds", [
    ("reach me at first.last+tag@mail.example.co.uk today", {"email": 1}),
    ("ping 10.0.0.255 and 256.1.1.1", {"ip": 1}),  # 256 is not an octet
    ("+1 555 123 4567, (020) 7946-0958", {"phone": 2}),
    ("In 1599, 3.14159 and Act 2.3.1 are not personal data", {}),
])
def test_scrub_pii_rules(text, kinds):
    from llmlab.training.cleaning import scrub_pii

    assert scrub_pii(text)[1] == Counter(kinds)


def test_identify_language_on_shakespeare_and_foreign_documents(paragraphs):
    from llmlab.training.cleaning import foreign_documents, identify_language

    speeches = [p for p in paragraphs if len(p.split()) >= 20][:2000]
    english = [identify_language(p) for p in speeches]
    assert english.count("en") / len(english) > 0.97
    docs, langs = foreign_documents(10, seed=3)
    assert [identify_language(d) for d in docs] == langs
    assert identify_language("") == "unknown"


def test_minhash_params_are_the_functions_minhash_signatures_uses():
    from llmlab.training.near_dedup import MERSENNE, minhash_params

    sets = [np.array([3, 99, 2**31 - 5]), np.arange(40)]
    a, b = minhash_params(16, seed=7)
    by_hand = np.stack([((a[:, None] * s[None, :] + b[:, None]) % MERSENNE).min(axis=1)
                        for s in sets])
    assert np.array_equal(by_hand, minhash_signatures(sets, num_perm=16, seed=7))
