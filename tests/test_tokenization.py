"""Tests for llmlab.tokenization: byte-level BPE from scratch, checked against the
naive trainer, GPT-2's tokenizer in transformers, and Hugging Face tokenizers; and every
tokenizer's saved state."""

from __future__ import annotations

import doctest
import itertools
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmlab.tokenization as tokenization
from llmlab.tokenization import (
    CharTokenizer,
    Tokenizer,
    bpe,
    byte_level,
    bytes_to_unicode,
    chars,
    count_pretokens,
    count_pretokens_in_file,
    find_chunk_boundaries,
    from_state,
    get_pair_counts,
    initial_vocab,
    learn_merges,
    learn_merges_naive,
    merge_pair,
    pretokenize,
    pretokens,
    split_on_special_tokens,
    tiktoken_ranks,
    to_hf_tokenizer,
    train_bpe,
    train_bpe_naive,
    wordpiece_training,
    wordpieces,
)

EOT = "<|endoftext|>"

WORDS = (  # noqa: SIM905
    "the of and to a in is that it was for on are with as his they be at one have this from "
    "or had by word but what some we can out other were all there when up use your how said "
    "an each she which do their time if will way about many then them write would like so "
    "these her long make thing see him two has look more day could go come did number sound "
    "no most people my over know water than call first who may down side been now find any "
    "new work part take get place made live where after back little only round man year came"
).split()

# Strings the GPT-2 comparison runs on: prose, code, other scripts, emoji, whitespace.
GPT2_CASES = [
    "",
    "Hello world",
    " Hello world",
    "The quick brown fox jumps over the lazy dog. It was the best of times!",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { s += a[i]; }  // C-style",
    "Größere Bäume wachsen über Flüsse; Straße, Maß, Öl und Ärger.",
    "机器学习是人工智能的一个分支。我们今天学习分词。",
    "emoji 😀🎉 family 👩‍👩‍👧‍👦 rainbow flag 🏳️‍🌈 thumbs 👍🏽 keycap 1️⃣",
    "a   b    c\t\td\n\n\ne  ",
    "trailing spaces   ",
    "trailing newlines\n\n",
    "   leading spaces",
    "\t\ttabs\t",
    "windows\r\nline\r\nendings\r\n",
    "Numbers: 3.14159, 1,000,000 and 2024-11-23 or 0x1F; 12345678901234567890",
    "I'll they've we're can't she'd it's HE'S you'D o'clock ''quoted''",
    "before<|endoftext|>after",
    "end of doc.<|endoftext|><|endoftext|>\n\nnext doc",
    "<|endoftext|>",
    "mixed: naïve café — “quotes” … ½ ∑ αβγ Привет мир עברית العربية",
    "\u00a0non-breaking\u00a0spaces\u2003em space\u3000ideographic",
]


def pseudo_word(rng: random.Random) -> str:
    """A made-up word of 1-4 syllables, so the text has many distinct pre-tokens."""
    onsets = ["", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "st", "th"]
    vowels = ["a", "e", "i", "o", "u", "ea", "ou", "ai"]
    codas = ["", "", "n", "r", "s", "t", "ng", "ck"]
    syllables = rng.randint(1, 4)
    return "".join(
        rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables)
    )


def english_text(n_chars: int, seed: int = 0) -> str:
    """Seeded pseudo-English: sentences of common and made-up words, punctuation, numbers."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        words = [
            rng.choice(WORDS) if rng.random() < 0.7 else pseudo_word(rng)
            for _ in range(rng.randint(4, 14))
        ]
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2000)))
        sentence = " ".join(words).capitalize() + rng.choice([". ", "! ", "? ", ".\n", ",\n\n"])
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)[:n_chars]


def write(tmp_path: Path, text: str, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    """Directory holding GPT-2's encoder.json and vocab.bpe."""
    from llmlab import assets

    return assets.path("gpt2-bpe")


@pytest.fixture(scope="session")
def gpt2(gpt2_dir: Path) -> Tokenizer:
    return Tokenizer.gpt2(gpt2_dir)


@pytest.fixture(scope="session")
def hf_gpt2(gpt2_dir: Path):
    from transformers import GPT2TokenizerFast

    # transformers 5 ignores vocab_file=/merges_file= (empty vocab, no error): pass the
    # paths as vocab=/merges=, and check the vocab really loaded.
    hf = GPT2TokenizerFast(vocab=str(gpt2_dir / "encoder.json"), merges=str(gpt2_dir / "vocab.bpe"))
    assert len(hf) == 50257
    return hf


SMALL_SPECIALS = [EOT, EOT + EOT, "<pad>"]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Tokenizer:
    """A tokenizer trained on a small English text with special tokens."""
    text = english_text(20_000, seed=1) + EOT + "Größe 😀 naïve " + EOT + english_text(5_000)
    path = write(tmp_path_factory.mktemp("small"), text)
    vocab, merges = train_bpe(path, 600, SMALL_SPECIALS)
    return Tokenizer(vocab, merges, SMALL_SPECIALS)


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


MODULES = [tokenization, pretokens, bpe, byte_level, tiktoken_ranks, wordpieces, chars,
           wordpiece_training]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5  # every module teaches with worked examples
    assert result.failed == 0


def test_modules_stay_small():
    for module in MODULES:
        lines = Path(module.__file__).read_text(encoding="utf-8").count("\n")
        assert lines <= 600, f"{module.__name__} has {lines} lines: split it"


def test_pretokenize_covers_text_and_drops_special_tokens():
    text = "Hi there,  it's 42!\n\n<|endoftext|>Next"
    pieces = pretokenize(text, [EOT])
    assert pieces == ["Hi", " there", ",", " ", " it", "'s", " 42", "!", "\n\n", "Next"]
    assert "".join(pieces) == text.replace(EOT, "")
    assert "".join(pretokenize(text)) == text  # without special tokens nothing is lost


def test_split_on_special_tokens_prefers_longest():
    text = f"a{EOT}{EOT}b{EOT}c"
    assert split_on_special_tokens(text, [EOT, EOT + EOT], keep=True) == [
        "a",
        EOT + EOT,
        "b",
        EOT,
        "c",
    ]
    assert split_on_special_tokens(text, [EOT]) == ["a", "b", "c"]
    assert split_on_special_tokens("abc", None) == ["abc"]


def test_pair_counts_and_merge_pair_edge_cases():
    assert get_pair_counts([]) == {}
    assert get_pair_counts([7]) == {}
    assert get_pair_counts([1, 1, 1]) == {(1, 1): 2}
    assert merge_pair([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_pair([], (1, 2), 9) == []
    assert merge_pair([2, 1], (1, 2), 9) == [2, 1]


def test_count_pretokens_weights():
    counts = count_pretokens(f"the the the{EOT}the", [EOT])
    assert counts == Counter({b" the": 2, b"the": 2})


def test_bytes_to_unicode_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ"


@given(st.lists(st.binary(max_size=6), min_size=2, max_size=10))
@settings(max_examples=200, deadline=None)
def test_descending_key_reverses_byte_order(pieces):
    by_key = sorted(pieces, key=bpe._descending)
    assert by_key == sorted(pieces, reverse=True)


# --------------------------------------------------------------------------------------
# Training: fast == naive, tie-breaking, special tokens, layout, errors
# --------------------------------------------------------------------------------------

TRAIN_CASES = {
    "english": (english_text(8_000, seed=3), [EOT]),
    "ties": ("ab ab cd cd ef ef ba ba xy yx", []),
    "prefix_ties": ("abab abab abc abc bcbc bcbc", []),
    "repeats": ("aaaaaaa aaaa aaa aa a bbbb bbbb " * 3, []),
    "specials": (f"low lower{EOT}newest<pad>newest{EOT}{EOT}widest" * 5, [EOT, "<pad>"]),
    "unicode": ("Größe größer 机器学习机器 😀😀 👩‍👩‍👧 " * 4, ["<s>"]),
}


@pytest.mark.parametrize("name", sorted(TRAIN_CASES))
def test_fast_trainer_equals_naive(tmp_path, name):
    text, specials = TRAIN_CASES[name]
    path = write(tmp_path, text)
    vocab_size = 256 + len(specials) + 120
    fast = train_bpe(path, vocab_size, specials)
    naive = train_bpe_naive(path, vocab_size, specials)
    assert fast == naive


@given(
    st.dictionaries(
        st.binary(min_size=1, max_size=8).map(lambda b: bytes(97 + x % 4 for x in b)),
        st.integers(1, 6),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=200, deadline=None)
def test_learn_merges_equals_naive_on_random_counts(word_counts):
    fast_vocab, naive_vocab = initial_vocab(), initial_vocab()
    fast = learn_merges(word_counts, fast_vocab, 30)
    naive = learn_merges_naive(word_counts, naive_vocab, 30)
    assert fast == naive
    assert fast_vocab == naive_vocab


def test_ties_go_to_the_lexicographically_greater_pair():
    vocab = initial_vocab()
    # (a,b), (b,a), (c,d) all occur twice: (c,d) is the greatest, then (b,a), then (a,b).
    merges = learn_merges({b"ab": 2, b"ba": 2, b"cd": 2}, vocab, 3)
    assert merges == [(b"c", b"d"), (b"b", b"a"), (b"a", b"b")]
    # After "bc" exists, ("a", "bc") and ("a", "b") tie at 2; b"bc" > b"b" wins.
    vocab = initial_vocab()
    merges = learn_merges({b"bc": 5, b"abc": 2, b"ab": 2}, vocab, 2)
    assert merges == [(b"b", b"c"), (b"a", b"bc")]


def test_merges_stay_inside_pretokens_and_never_cross_special_tokens(tmp_path):
    text = f"x{EOT}y " * 300 + "ab cd ab cd. " * 200
    path = write(tmp_path, text)
    vocab, merges = train_bpe(path, 256 + 1 + 50, [EOT])
    pretokens = {p.encode() for p in pretokenize(text, [EOT])}
    for left, right in merges:
        token = left + right
        assert not any(ch in token for ch in b"<|>"), token  # special token never seen
        assert any(token in p for p in pretokens), token  # within one pre-token
    assert (b"y", b" ") not in merges and (b"x", b"<") not in merges


def test_vocab_layout(tmp_path):
    specials = [EOT, "<pad>"]
    path = write(tmp_path, english_text(5_000, seed=4))
    vocab, merges = train_bpe(path, 400, specials)
    assert len(vocab) == 400 and len(merges) == 400 - 258
    assert [vocab[i] for i in range(256)] == [bytes([i]) for i in range(256)]
    assert vocab[256] == EOT.encode() and vocab[257] == b"<pad>"
    for k, (left, right) in enumerate(merges):
        assert vocab[258 + k] == left + right


def test_training_stops_when_no_pairs_are_left(tmp_path):
    vocab, merges = train_bpe(write(tmp_path, "ab ab"), 1000)
    assert merges == [(b"a", b"b"), (b" ", b"ab")]
    assert len(vocab) == 258


def test_training_on_130kb_with_500_merges(tmp_path):
    text = english_text(130_000, seed=5)
    path = write(tmp_path, text)
    vocab, merges = train_bpe(path, 256 + 1 + 500, [EOT])
    assert len(merges) == 500 and len(vocab) == 757
    assert (b" t", b"he") in merges or (b" th", b"e") in merges
    tok = Tokenizer(vocab, merges, [EOT])
    sample = text[:5_000]
    assert tok.decode(tok.encode(sample)) == sample
    assert len(tok.encode(sample)) < len(sample.encode()) / 2.5  # merges compress


def test_multiprocess_pretoken_counts_equal_single_process(tmp_path):
    docs = [english_text(3_000, seed=s) + ("Größe 😀\n" if s % 2 else "") for s in range(12)]
    text = EOT.join(docs) + EOT + EOT + "tail"
    path = write(tmp_path, text)
    specials = [EOT, EOT + EOT]
    one = count_pretokens_in_file(path, specials, num_processes=1)
    two = count_pretokens_in_file(path, specials, num_processes=2)
    assert one == two == count_pretokens(text, specials)
    assert train_bpe(path, 400, specials, num_processes=2) == train_bpe(
        path, 400, specials, num_processes=1
    )


def test_chunk_boundaries_sit_on_special_tokens(tmp_path):
    text = EOT.join(english_text(1_000, seed=s) for s in range(10))
    path = write(tmp_path, text)
    data = path.read_bytes()
    cuts = find_chunk_boundaries(path, 4, EOT.encode())
    assert cuts[0] == 0 and cuts[-1] == len(data) and cuts == sorted(set(cuts))
    assert all(data[c:].startswith(EOT.encode()) for c in cuts[1:-1])
    assert len(cuts) > 2


def test_unsafe_split_tokens_are_not_used():
    safe = pretokens._safe_split_token
    assert safe([EOT, EOT + EOT]) == EOT
    assert safe(["<a>", "x<a>y"]) == "x<a>y"  # a cut at "<a>" would break "x<a>y"
    assert safe(["aXa"]) is None  # overlaps itself
    assert safe(["ab<", "<|eot|>"]) == "ab<"  # "<|eot|>" is unsafe, "ab<" is fine


def test_training_errors(tmp_path):
    path = write(tmp_path, "some text")
    with pytest.raises(ValueError, match=r"at least 258 \(256 byte tokens \+ 2 special.*got 257"):
        train_bpe(path, 257, [EOT, "<pad>"])
    with pytest.raises(ValueError, match="at least 256.*got 10"):
        train_bpe_naive(path, 10)
    with pytest.raises(FileNotFoundError, match="training file not found: .*missing.txt"):
        train_bpe(tmp_path / "missing.txt", 300)
    with pytest.raises(ValueError, match="non-empty strings"):
        train_bpe(path, 300, [""])


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", GPT2_CASES)
def test_gpt2_ids_match_transformers(gpt2, hf_gpt2, text):
    ids = gpt2.encode(text)
    assert ids == hf_gpt2(text)["input_ids"]
    assert gpt2.decode(ids) == text


def test_gpt2_known_ids(gpt2):
    assert gpt2.vocab_size == 50257 and len(gpt2.merges) == 50000
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(EOT) == [50256]
    assert gpt2.decode([15496, 995, 50256]) == "Hello world" + EOT


def test_gpt2_default_location_is_the_asset():
    assert Tokenizer.gpt2().encode("Hello world") == [15496, 995]


def test_hf_tokenizer_from_our_files_matches(gpt2):
    hf = to_hf_tokenizer(gpt2.vocab, gpt2.merges, [EOT])
    for text in GPT2_CASES:
        assert hf.encode(text).ids == gpt2.encode(text), text


def test_hf_tokenizer_from_trained_vocab_matches(small):
    hf = to_hf_tokenizer(small.vocab, small.merges, small.special_tokens)
    texts = [*GPT2_CASES, english_text(3_000, seed=9), f"x{EOT}{EOT}y<pad>{EOT}z"]
    for text in texts:
        assert hf.encode(text).ids == small.encode(text), text
        assert hf.decode(small.encode(text), skip_special_tokens=False) == text


def test_overlapping_special_tokens_prefer_longest(small):
    single, double, pad = (small.special_ids[t] for t in SMALL_SPECIALS)
    assert small.encode(EOT + EOT) == [double]
    assert small.encode(EOT * 3) == [double, single]
    assert small.encode(f"a{EOT}b<pad>") == [ord("a"), single, ord("b"), pad]
    assert single not in small.encode("<|endoftext")


def test_special_token_missing_from_vocab_gets_a_new_id():
    tok = Tokenizer(initial_vocab(), [], ["<new>"])
    assert tok.special_ids == {"<new>": 256}
    assert tok.encode("a<new>") == [97, 256] and tok.decode([97, 256]) == "a<new>"


def test_decode_invalid_utf8_and_unknown_ids(gpt2):
    assert gpt2.decode([]) == ""
    assert gpt2.decode([gpt2.byte_ids[0xE4]]) == "\ufffd"  # lone lead byte of a 3-byte char
    assert gpt2.decode([gpt2.byte_ids[0xFF], 15496]) == "\ufffdHello"
    with pytest.raises(ValueError, match=r"ids \[50257, -1\] are not in the vocabulary"):
        gpt2.decode([15496, 50257, -1])


def test_decode_accepts_tensors(gpt2):
    torch = pytest.importorskip("torch")
    assert gpt2.decode(torch.tensor([15496, 995])) == "Hello world"


def test_tokenizer_input_errors(tmp_path):
    vocab = initial_vocab()
    del vocab[7]
    with pytest.raises(ValueError, match=r"all 256 single bytes; missing \[7\]"):
        Tokenizer(vocab, [])
    with pytest.raises(ValueError, match="merge 0 .* is not in the vocab"):
        Tokenizer(initial_vocab(), [(b"a", b"b")])
    bad = write(tmp_path, "#version: 0.2\na b\nc d e\n", "vocab.bpe")
    encoder = write(tmp_path, '{"a": 0}', "encoder.json")
    with pytest.raises(ValueError, match=r"vocab.bpe:3: expected two tokens"):
        Tokenizer.from_files(encoder, bad)
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        Tokenizer.from_files(tmp_path / "nope.json", bad)


TRICKY = ["a", "b", " ", "  ", "\n", "\t", "'", "s", "ll", "1", "é", "😀", "<", "|", "<|", "|>"]


def glued(extra: list[str], max_size: int = 30) -> st.SearchStrategy[str]:
    """Short strings glued from pieces that stress pre-tokens and special tokens."""
    return st.lists(st.sampled_from(TRICKY + extra), max_size=max_size).map("".join)


text_strategy = st.text(max_size=200) | glued([EOT, "endoftext", "<pad>"])


@given(text_strategy)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_roundtrip_gpt2(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text


@given(text_strategy)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_roundtrip_trained(small, text):
    assert small.decode(small.encode(text)) == text


@given(st.text(max_size=100))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gpt2_matches_transformers_on_arbitrary_text(gpt2, hf_gpt2, text):
    assert gpt2.encode(text) == hf_gpt2(text)["input_ids"]


# --------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------


def test_encode_iterable_on_a_file_read_line_by_line(gpt2, tmp_path):
    text = "".join(GPT2_CASES) + english_text(20_000, seed=6) + "  \n\n  end   \n"
    path = write(tmp_path, text)
    expected = gpt2.encode(text)
    for chunk_chars in (16, 1 << 16):
        with open(path, encoding="utf-8", newline="") as f:
            assert list(gpt2.encode_iterable(f, chunk_chars=chunk_chars)) == expected


def test_encode_iterable_is_lazy(gpt2):
    lines = itertools.cycle(["It's a line.  \n", "Another one<|endoftext|>\n"])  # endless
    first = list(itertools.islice(gpt2.encode_iterable(lines, chunk_chars=256), 500))
    assert len(first) == 500
    assert first[:5] == gpt2.encode("It's a line.")


@given(st.lists(glued([EOT, "endoftext", "<pad>", "<pa"], 8), max_size=12), st.integers(1, 40))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_encode_iterable_equals_encode_for_any_split(small, pieces, chunk_chars):
    text = "".join(pieces)
    assert list(small.encode_iterable(pieces, chunk_chars=chunk_chars)) == small.encode(text)


# --------------------------------------------------------------------------------------
# tiktoken-style encodings: ranks, recovered merges, other pre-tokenisation patterns
# --------------------------------------------------------------------------------------

PATTERNS = {"cl100k": tokenization.CL100K_PATTERN, "o200k": tokenization.O200K_PATTERN}

# Pieces where cl100k's and o200k's patterns differ from GPT-2's: case changes, upper-case
# contractions, \r\n, digit runs, slashes, combining marks, non-breaking spaces.
TIKTOKEN_TRICKY = TRICKY + ["A", "B", "\r", "\r\n", "123", "4567", "'S", "'LL", "/", "\u0301",
                            "\u00a0", "Hi", "x\n  \n", ".\n\n"]


def tiktoken_text(max_size: int = 40) -> st.SearchStrategy[str]:
    pieces = st.lists(st.sampled_from([*TIKTOKEN_TRICKY, EOT]), max_size=max_size).map("".join)
    return st.text(max_size=120) | pieces


@pytest.fixture(scope="module")
def small_ranks(tmp_path_factory) -> dict[bytes, int]:
    """Ranks (bytes -> id) of a BPE trained on text with capitals, digits, CRLF and marks."""
    text = english_text(30_000, seed=3).replace(". ", ". The ").replace("\n", "\r\n")
    text += " Café Zoë 12345 camelCaseWords HTTPServer I'LL don'T नमस्ते दुनिया " * 20
    vocab, _ = train_bpe(write(tmp_path_factory.mktemp("ranks"), text), 700)
    return {piece: token_id for token_id, piece in vocab.items()}


@pytest.fixture(scope="module", params=sorted(PATTERNS))
def small_pair(request, small_ranks):
    """(llmlab Tokenizer, tiktoken Encoding) on the same small ranks, pattern and specials."""
    tiktoken = pytest.importorskip("tiktoken")
    pattern = PATTERNS[request.param]
    specials = {EOT: len(small_ranks)}
    ours = Tokenizer.from_ranks(small_ranks, pattern, specials)
    theirs = tiktoken.Encoding(name=f"small-{request.param}", pat_str=pattern,
                               mergeable_ranks=small_ranks, special_tokens=specials)
    return ours, theirs


def test_recovered_merges_are_the_trained_merges(tmp_path):
    text = english_text(20_000, seed=4) + " Größe 😀 naïve 1234567 " * 10
    vocab, merges = train_bpe(write(tmp_path, text), 500)
    ranks = {piece: token_id for token_id, piece in vocab.items()}
    assert tokenization.merges_from_ranks(ranks) == merges


@given(tiktoken_text())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_ranks_tokenizer_matches_tiktoken(small_pair, text):
    ours, theirs = small_pair
    assert ours.encode(text) == theirs.encode(text, allowed_special="all")
    assert ours.decode(ours.encode(text)) == text


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pretokenize_with_a_pattern_matches_tiktoken_pieces(small_ranks, name):
    tiktoken = pytest.importorskip("tiktoken")
    encoding = tiktoken.Encoding(name=name, pat_str=PATTERNS[name],
                                 mergeable_ranks=small_ranks, special_tokens={})
    text = "".join(TIKTOKEN_TRICKY) + " HTTPServer's camelCase I'LL 1234567 a/b\r\n\r\n  x"
    # each pre-token is encoded on its own, so encoding pre-token by pre-token is the same
    per_piece = [i for piece in pretokenize(text, pattern=PATTERNS[name])
                 for i in encoding.encode_ordinary(piece)]
    assert per_piece == encoding.encode_ordinary(text)
    assert "".join(pretokenize(text, pattern=PATTERNS[name])) == text


def test_patterns_differ_where_documented():
    assert pretokenize("camelCase", pattern=tokenization.O200K_PATTERN) == ["camel", "Case"]
    assert pretokenize("camelCase", pattern=tokenization.CL100K_PATTERN) == ["camelCase"]
    assert pretokenize("12345") == ["12345"]
    assert pretokenize("12345", pattern=tokenization.CL100K_PATTERN) == ["123", "45"]


@given(st.lists(tiktoken_text(12), max_size=12), st.integers(1, 40))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_encode_iterable_with_tiktoken_patterns(small_pair, pieces, chunk_chars):
    ours, _ = small_pair
    streamed = list(ours.encode_iterable(pieces, chunk_chars=chunk_chars))
    assert streamed == ours.encode("".join(pieces))


def test_read_tiktoken_ranks_and_errors(tmp_path):
    good = tmp_path / "good.tiktoken"
    good.write_text("YQ== 0\nYg== 1\n\nYWI= 2\n")
    assert tokenization.read_tiktoken_ranks(good) == {b"a": 0, b"b": 1, b"ab": 2}
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("YQ== 0\nnot-base64! 1\n")
    with pytest.raises(ValueError, match=r"bad.tiktoken:2: expected '<base64> <rank>'"):
        tokenization.read_tiktoken_ranks(bad)
    with pytest.raises(FileNotFoundError, match="tiktoken rank file not found"):
        tokenization.read_tiktoken_ranks(tmp_path / "missing.tiktoken")


def test_ranks_and_pattern_errors():
    byte_ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match=r"all 256 single bytes; missing \[0\]"):
        tokenization.merges_from_ranks({bytes([b]): b for b in range(1, 256)})
    with pytest.raises(ValueError, match=r"token b'abc' \(rank 256\) cannot be built"):
        tokenization.merges_from_ranks({**byte_ranks, b"abc": 256})  # no "ab" or "bc" first
    with pytest.raises(ValueError, match=r"'<\|end\|>' has id 97, which the ranks already"):
        Tokenizer.from_ranks(byte_ranks, tokenization.CL100K_PATTERN, {"<|end|>": 97})
    with pytest.raises(ValueError, match="every token its own id"):
        Tokenizer.from_ranks({**byte_ranks, b"ab": 97}, tokenization.CL100K_PATTERN)
    with pytest.raises(ValueError, match="not a valid regex"):
        Tokenizer(initial_vocab(), [], pattern="(unclosed")
    with pytest.raises(ValueError, match="matches the empty string"):
        Tokenizer(initial_vocab(), [], pattern=r"\s*")
    with pytest.raises(ValueError, match="non-empty regex string"):
        pretokenize("x", pattern="")


# --------------------------------------------------------------------------------------
# Saved state: every tokenizer round-trips through JSON with the same ids
# --------------------------------------------------------------------------------------

STATE_TEXTS = [*GPT2_CASES, f"x{EOT}{EOT}y<pad>{EOT}z", "Größe 😀 naïve"]


def through_json(state: dict) -> dict:
    return json.loads(json.dumps(state))


def test_trained_tokenizer_state_round_trips(small):
    state = small.to_state()
    assert state["kind"] == "bpe" and state["special_tokens"] == SMALL_SPECIALS
    for rebuilt in (Tokenizer.from_state(through_json(state)), from_state(through_json(state))):
        assert isinstance(rebuilt, Tokenizer)
        assert rebuilt.vocab == small.vocab and rebuilt.merges == small.merges
        assert rebuilt.special_tokens == small.special_tokens
        assert rebuilt.pattern == small.pattern
        for text in STATE_TEXTS:
            assert rebuilt.encode(text) == small.encode(text), text
        assert rebuilt.to_state() == state


def test_state_keeps_a_custom_pattern_and_special_ids(small_ranks):
    ours = Tokenizer.from_ranks(small_ranks, tokenization.O200K_PATTERN, {EOT: 1000})
    rebuilt = from_state(through_json(ours.to_state()))
    assert rebuilt.pattern == tokenization.O200K_PATTERN and rebuilt.special_ids == {EOT: 1000}
    text = "".join(TIKTOKEN_TRICKY) + EOT + " HTTPServer camelCase 1234567"
    assert rebuilt.encode(text) == ours.encode(text)


def test_gpt2_state_is_its_name(gpt2):
    # The trainer hashes this exact JSON into its token files' names: it must not change.
    assert json.dumps(gpt2.to_state()) == '{"kind": "gpt2"}'
    rebuilt = from_state({"kind": "gpt2"})
    assert isinstance(rebuilt, Tokenizer) and rebuilt.name == "gpt2"
    for text in GPT2_CASES:
        assert rebuilt.encode(text) == gpt2.encode(text), text
    # Tables that are not GPT-2's own file save themselves in full.
    copy = Tokenizer(gpt2.vocab, gpt2.merges, gpt2.special_tokens)
    assert copy.to_state()["kind"] == "bpe"


def test_char_tokenizer_state_round_trips():
    tok = CharTokenizer.from_text("To be, or not to be: that is the question.\n")
    assert json.dumps(tok.to_state()) == json.dumps({"kind": "char", "chars": tok.chars})
    for rebuilt in (CharTokenizer.from_state(through_json(tok.to_state())),
                    from_state(through_json(tok.to_state()))):
        assert isinstance(rebuilt, CharTokenizer) and rebuilt.chars == tok.chars
        assert rebuilt.encode("not to be") == tok.encode("not to be")


@pytest.mark.parametrize(("state", "message"), [
    ({"kind": "sentencepiece"}, r"unknown tokenizer state kind 'sentencepiece'; known kinds: "
                                r"bpe, char, gpt2, tiktoken"),
    ({"chars": "ab"}, r"unknown tokenizer state kind None"),
    ("gpt2", r"unknown tokenizer state a str"),
    ({"kind": "char"}, r"kind 'char' lacks 'chars'"),
    ({"kind": "char", "chars": "aa"}, r"distinct characters"),
    ({"kind": "bpe", "vocab": {}}, r"kind 'bpe' lacks \['merges', 'special_tokens', 'pattern'\]"),
    ({"kind": "bpe", "vocab": {"0": "not base64!"}, "merges": [], "special_tokens": [],
      "pattern": tokenization.GPT2_PATTERN}, r"vocab\['0'\] should be base64 text"),
    ({"kind": "bpe", "vocab": [], "merges": [], "special_tokens": [],
      "pattern": tokenization.GPT2_PATTERN}, r"vocab should map ids \(digit strings\)"),
    ({"kind": "bpe", "vocab": {}, "merges": [["YQ=="]], "special_tokens": [],
      "pattern": tokenization.GPT2_PATTERN}, r"merges should be a list of \[base64, base64\]"),
    ({"kind": "tiktoken", "encoding": "p50k_base"}, r"encoding 'p50k_base'; known encodings: "
                                                    r"\['cl100k_base', 'o200k_base'\]"),
])
def test_from_state_errors(state, message):
    with pytest.raises(ValueError, match=message):
        from_state(state)


def test_each_class_reads_only_its_own_kinds():
    with pytest.raises(ValueError, match=r"Tokenizer.from_state reads the kinds .* got 'char'"):
        Tokenizer.from_state({"kind": "char", "chars": "ab"})
    with pytest.raises(ValueError, match=r"CharTokenizer.from_state reads .* got kind 'gpt2'"):
        CharTokenizer.from_state({"kind": "gpt2"})
    with pytest.raises(ValueError, match=r"name must be one of the published tokenizers"):
        Tokenizer(initial_vocab(), [], name="my-bpe")
    assert set(tiktoken_ranks.ENCODINGS) <= set(byte_level.PUBLISHED)


@pytest.mark.parametrize("name", ["cl100k-base", "o200k-base"])
def test_tiktoken_asset_loads_and_its_state_is_its_name(name):
    from llmlab import assets

    ours = assets.load(name)
    encoding = name.replace("-", "_")
    assert ours.name == encoding and ours.to_state() == {"kind": "tiktoken", "encoding": encoding}
    rebuilt = from_state(through_json(ours.to_state()))
    texts = ["hello world", "def f(x):\n    return x  # HTTPServer camelCase 12345",
             f"Größere Bäume 😀 नमस्ते{EOT}next"]
    for text in texts:
        assert rebuilt.encode(text) == ours.encode(text), text
    if name == "cl100k-base":  # tiktoken's README: "hello world" is [15339, 1917]
        assert ours.encode("hello world") == [15339, 1917]
    tiktoken = pytest.importorskip("tiktoken")
    theirs = assets.load(name, tiktoken=True)
    assert isinstance(theirs, tiktoken.Encoding)
    for text in texts:
        assert ours.encode(text) == theirs.encode(text, allowed_special="all"), text


# --------------------------------------------------------------------------------------
# WordPiece (BERT) with MiniLM's real vocabulary, against BertTokenizerFast
# --------------------------------------------------------------------------------------

WORDPIECE_CASES = [
    "Héllo, World! 你好 don't",
    "ΟΔΟΣ Straße naïve café Ünïcödé",
    "Tokenization is unbelievably useful; tokenizers aren't.",
    "x\x1c\x85\u2028y\u00a0z\u200b\tw\r\n",
    "$100+<tag>|~`^ 3.14159 e-mail@example.com",
    "supercalifragilisticexpialidocious " + "a" * 120,
    "नमस्ते दुनिया 안녕하세요 مرحبا 機器學習",
    "emoji 😀🎉 👩‍👩‍👧",
]


@pytest.fixture(scope="module")
def minilm_wordpiece():
    """(MiniLM's vocab as token -> id, BertTokenizerFast from MiniLM's tokenizer.json)."""
    from transformers import BertTokenizerFast

    from llmlab import assets

    folder = assets.path("all-minilm-l6-v2")
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return ({token: i for i, token in enumerate(lines)},
            BertTokenizerFast(tokenizer_file=str(folder / "tokenizer.json")))


def wordpiece_ids(text: str, vocab: dict[str, int]) -> list[int]:
    words = tokenization.bert_pretokenize(text)
    pieces = [piece for word in words for piece in tokenization.wordpiece(word, vocab)]
    return [vocab["[CLS]"], *(vocab[p] for p in pieces), vocab["[SEP]"]]


@pytest.mark.parametrize("text", WORDPIECE_CASES)
def test_wordpiece_matches_bert_tokenizer_fast(minilm_wordpiece, text):
    vocab, hf = minilm_wordpiece
    assert wordpiece_ids(text, vocab) == hf(text)["input_ids"]


# Latin, Greek, Cyrillic, Hebrew and CJK: scripts whose character classes Python and the
# Rust tables agree on (recent Unicode additions elsewhere may be classified differently).
bert_text = st.text(st.characters(max_codepoint=0x5FF, blacklist_categories=("Cs",),
                                  blacklist_characters="\x00[")
                    | st.sampled_from("你好機器學習😀"), max_size=60)


@given(bert_text)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_wordpiece_matches_bert_on_arbitrary_text(minilm_wordpiece, text):
    vocab, hf = minilm_wordpiece
    assert wordpiece_ids(text, vocab) == hf(text)["input_ids"]


def test_wordpiece_unknown_words_and_long_words():
    vocab = {"un", "##do", "##able", "do"}
    assert tokenization.wordpiece("undoable", vocab) == ["un", "##do", "##able"]
    assert tokenization.wordpiece("undox", vocab) == ["[UNK]"]  # no piece for "x": all lost
    assert tokenization.wordpiece("do" * 60, vocab | {"##do"}, max_chars=100) == ["[UNK]"]
    assert tokenization.bert_pretokenize("ΟΔΟΣ", lowercase=False) == ["ΟΔΟΣ"]


# --------------------------------------------------------------------------------------
# WordPiece training
# --------------------------------------------------------------------------------------


def _wordpiece_merges_with_fractions(word_counts, n_merges):
    """The same algorithm, scored with exact fractions: float ties must be real ties."""
    from fractions import Fraction

    words = Counter()
    for word, count in word_counts.items():
        words[tuple(tokenization.wordpiece_split(word))] += count
    merges = []
    for _ in range(n_merges):
        pieces, pairs = Counter(), Counter()
        for word, count in words.items():
            for piece in word:
                pieces[piece] += count
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (Fraction(pairs[p], pieces[p[0]] * pieces[p[1]]), p))
        merged = best[0] + best[1].removeprefix("##")
        merges.append(best)
        new_words = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += count
        words = new_words
    return merges


@given(st.dictionaries(st.text("abcab", min_size=1, max_size=6), st.integers(1, 9),
                       max_size=8), st.integers(0, 12))
@settings(max_examples=200, deadline=None)
def test_wordpiece_merges_equal_exact_fraction_scores(word_counts, n_merges):
    assert tokenization.learn_wordpiece_merges(word_counts, n_merges) == \
        _wordpiece_merges_with_fractions(word_counts, n_merges)


def test_wordpiece_prefers_likelihood_to_frequency():
    # a+b occurs 3 times, but a, b also occur apart; a+a (once) scores higher.
    merges = tokenization.learn_wordpiece_merges({"aab": 1, "ab": 3}, 2)
    assert merges == [("a", "##a"), ("aa", "##b")]
    assert tokenization.learn_wordpiece_merges({"ab": 2}, 5) == [("a", "##b")]  # stops early


def test_trained_wordpiece_vocab_covers_its_words():
    words = Counter(tokenization.bert_pretokenize("To be, or not to be: that is the question. "
                                                  "Whether 'tis nobler in the mind to suffer"))
    vocab = tokenization.train_wordpiece(words, 60)
    assert len(vocab) <= 60 and "[UNK]" in vocab
    for word in words:
        assert "[UNK]" not in tokenization.wordpiece(word, vocab)
    assert tokenization.wordpiece("zebra", vocab) == ["[UNK]"]  # z is not in the alphabet


def test_wordpiece_training_errors():
    with pytest.raises(ValueError, match="n_merges"):
        tokenization.learn_wordpiece_merges({"ab": 1}, -1)
    with pytest.raises(ValueError, match="positive int counts"):
        tokenization.learn_wordpiece_merges({"ab": 0}, 1)
    with pytest.raises(ValueError, match="alphabet"):
        tokenization.train_wordpiece({"abc": 1}, 3)


def test_hf_wordpiece_trainer_merges_by_frequency():
    """What the chapter says: tokenizers' WordPieceTrainer ranks pairs as BPE does."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    words = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}
    rust = RustTokenizer(models.WordPiece(unk_token="[UNK]"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    # its alphabet: the 7 characters bare, and the 4 seen inside words with "##": 11 pieces
    trainer = trainers.WordPieceTrainer(vocab_size=11 + 2, show_progress=False)
    rust.train_from_iterator([w for w, n in words.items() for _ in range(n)], trainer)
    learned = {piece for piece in rust.get_vocab() if len(piece.removeprefix("##")) > 1}
    assert learned == {"##ug", "##un"}  # the two most frequent pairs: BPE's first merges
    assert tokenization.learn_wordpiece_merges(words, 1) == [("##g", "##s")]
