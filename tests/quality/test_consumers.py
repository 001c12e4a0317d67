"""Consumers (exporter.quality.consumers): a real export of the tiny model loaded by sentence-transformers, optimum,
fastembed, transformers.js (Node, installed here with npm) and the torch-free runtime, each judged with the
variant's gate; pooling a consumer cannot reproduce fails with a line that says so; `verify --consumers`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from exporter import kinds
from exporter.errors import UsageError
from exporter.quality import consumers
from exporter.source import st_modules
from tests import hub_fixtures as hf
from tests.cli_runner import invoke
from tests.consumer_fixtures import FP32, ONNX, WORDS, short_texts

pytestmark = pytest.mark.usefixtures("node_env")


def _reference(model_dir: Path, texts: list[str]):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu").encode(texts, convert_to_numpy=True)


def _rows(art: Path, model_dir: Path, texts: list[str], names: list[str], variant: dict = ONNX) -> dict[str, dict]:
    probe = kinds.get("sentence-transformer").probe(texts)
    rows = consumers.check_variant(
        art, variant, "sentence-transformer", names, texts, _reference(model_dir, texts), probe, FP32
    )
    return {r["consumer"]: r for r in rows}


def test_verify_consumers_all_gives_one_passing_row_per_consumer_and_variant(consumer_artifact, tiny_model_dir):
    hf.seed_tiny(tiny_model_dir)
    res = invoke("verify", str(consumer_artifact), "--consumers", "all", "--json")
    assert res.code == 0, res.out + res.err
    report = json.loads(res.out)
    got = {v["name"]: [(r["consumer"], r["status"]) for r in v["parity"]["consumers"]] for v in report["variants"]}
    assert got == {
        "onnx": [
            (c, "passed") for c in ("sentence-transformers", "optimum", "fastembed", "transformers.js", "runtime")
        ],
        "openvino": [(c, "passed") for c in ("sentence-transformers", "optimum", "runtime")],
    }
    for variant in report["variants"]:
        for row in variant["parity"]["consumers"]:  # the same metrics and gate as the variant's own row
            assert row["cosine_min"] >= 0.9999 and row["threshold"] == variant["parity"]["threshold"], row


def test_export_records_a_row_per_consumer_in_the_manifest(consumer_artifact):
    from exporter import manifest as mf

    manifest = mf.load(consumer_artifact)  # validated against the JSON Schema
    rows = {v["id"]: {r["consumer"]: r for r in v["parity"]["consumers"]} for v in manifest["variants"]}
    assert list(rows["onnx"]) == ["sentence-transformers", "optimum", "fastembed", "transformers.js", "runtime"]
    assert list(rows["openvino"]) == ["sentence-transformers", "optimum", "runtime"]
    for variant in manifest["variants"]:
        assert variant["status"] == "passed" and variant["parity"]["passed"] is True
        for row in variant["parity"]["consumers"]:
            assert row["status"] == "passed" and row["cosine_min"] >= 0.9999, row
            assert row["threshold"] == variant["parity"]["threshold"]


def test_verify_prints_a_row_per_consumer_and_variant(consumer_artifact, tiny_model_dir):
    hf.seed_tiny(tiny_model_dir)
    res = invoke("verify", str(consumer_artifact), "--variants", "onnx", "--consumers", "fastembed,transformers.js")
    assert res.code == 0, res.out + res.err
    lines = [line.split() for line in res.out.splitlines() if " x " in line]
    assert [(w[0], w[1], w[3]) for w in lines] == [("ok", "onnx", "fastembed"), ("ok", "onnx", "transformers.js")]


def test_unknown_consumer_is_bad_input(consumer_artifact):
    res = invoke("verify", str(consumer_artifact), "--consumers", "tei")
    assert res.code == 2 and "unknown consumer(s) tei" in res.err
    with pytest.raises(UsageError):
        consumers.parse_names("fastembed,nope")


def test_consumer_that_cannot_pool_like_the_model_fails_saying_so(tmp_path_factory):
    """A max-pooled model: fastembed and transformers.js pool the token output themselves (mean/cls/...),
    so they fail with the reason; the loaders that keep the model's pooling pass."""
    from tests.builders.test_onnx import exported_tiny

    src, art, _ = exported_tiny(tmp_path_factory, "max", True)
    rows = _rows(art, src, short_texts(), ["optimum", "fastembed", "transformers.js", "runtime"])
    assert rows["fastembed"]["status"] == "failed"
    assert "fastembed can only pool with mean/cls/lasttoken; this model pools with max" in rows["fastembed"]["message"]
    assert rows["transformers.js"]["status"] == "failed" and "pools with max" in rows["transformers.js"]["message"]
    assert rows["optimum"]["status"] == rows["runtime"]["status"] == "passed"


def test_cls_model_is_pooled_by_cls_in_every_consumer(tmp_path_factory):
    from tests.builders.test_onnx import exported_tiny

    src, art, _ = exported_tiny(tmp_path_factory, "cls", False)
    rows = _rows(art, src, short_texts(), ["optimum", "fastembed", "transformers.js", "runtime"])
    assert {n: r["status"] for n, r in rows.items()} == dict.fromkeys(rows, "passed"), rows


def test_transformers_js_truncation_ends_with_the_final_sep_through_the_graph(tmp_path_factory, tmp_path):
    """A real divergence, fixed in the graph: on texts over max_seq_length transformers.js 4.3.1 cuts the ids
    after adding special tokens ([SEP] is cut off); the exported graph puts [SEP] back at each row's last
    attended position (exporter.builders.final_token), so its vectors match sentence-transformers'. The same
    graph without that step (tokens as transformers.js feeds them) would differ."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from exporter.builders import final_token
    from tests.builders.test_onnx import exported_tiny

    src, art, info = exported_tiny(tmp_path_factory, "mean", True)
    long_texts = [" ".join(WORDS[i:] + WORDS[:i]) * 3 for i in range(12)]
    rows = _rows(art, src, long_texts, ["fastembed", "transformers.js"])
    assert rows["fastembed"]["status"] == "passed", rows["fastembed"]
    assert rows["transformers.js"]["status"] == "passed", rows["transformers.js"]
    tok = Tokenizer.from_file(str(art / "tokenizer.json"))
    sep = tok.token_to_id("[SEP]")
    assert info["final_special_token"] == sep == final_token.final_special_token_id(art / "tokenizer.json")
    tok.no_truncation()
    ids = np.asarray([tok.encode(long_texts[0]).ids[:32]], dtype=np.int64)  # cut after [SEP], as transformers.js
    assert ids[0, -1] != sep
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    fixed = ids.copy()
    fixed[0, -1] = sep
    session = ort.InferenceSession(str(art / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["sentence_embedding"], feeds)[0]
    want = session.run(["sentence_embedding"], {**feeds, "input_ids": fixed})[0]
    np.testing.assert_array_equal(got, want)


def test_consumers_table_is_complete():
    assert [c.name for c in consumers.CONSUMERS] == [
        "sentence-transformers",
        "optimum",
        "fastembed",
        "transformers.js",
        "runtime",
    ]
    reranker = {"load": {"backend": "onnx"}}
    assert [c.name for c in consumers.CONSUMERS if c.applies(reranker, "cross-encoder")] == ["sentence-transformers"]
    facts_free = [c for c in consumers.CONSUMERS if c.pools is None]
    assert {c.name for c in facts_free} == {"sentence-transformers", "runtime"}
    assert consumers.NODE_SCRIPT.is_file()
    assert np.isfinite(FP32.cosine_min)
    assert st_modules.POOLING_MODES  # the optimum row covers every pooling mode the models may name
    assert set(consumers.BY_NAME["optimum"].pools) == set(st_modules.POOLING_MODES)


def test_a_consumer_truncating_elsewhere_fails_with_the_reason_and_the_layout_fixes_it(tmp_path_factory, tmp_path):
    """The real default's case in small: tokenizer_config.json says 48 tokens, the model 32 (as MiniLM says
    512 and 256). fastembed truncates at 48, so long texts differ; its layout truncates at 32."""
    from exporter.ship import layout_files
    from tests.builders.test_onnx import exported_tiny

    _, art0, _ = exported_tiny(tmp_path_factory, "mean", True)
    art = tmp_path / "art"
    shutil.copytree(art0, art)
    for name, key, value in (
        ("sentence_bert_config.json", "max_seq_length", 32),
        ("tokenizer_config.json", "model_max_length", 48),
    ):
        config = json.loads((art / name).read_text())
        (art / name).write_text(json.dumps({**config, key: value}))
    texts = [" ".join(WORDS[i:] + WORDS[:i]) * 2 for i in range(12)]  # ~40 tokens each
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(art), backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"}).encode(
        texts
    )
    row = _rows_with(art, texts, reference, "fastembed")
    assert row["status"] == "failed"
    assert (
        "fastembed truncates at tokenizer_config.json's model_max_length (48), the model at max_seq_length 32"
        in row["message"]
    )

    manifest = {
        "shared_files": [
            {"path": p.relative_to(art).as_posix()} for p in art.rglob("*") if p.is_file() and "onnx" not in p.parts
        ],
        "model": {"max_seq_length": 32},
    }
    variant = {**ONNX, "files": [{"path": "onnx/model.onnx"}]}
    files = layout_files._truncating_at_max_seq_length(art, manifest, variant, tmp_path)
    out = tmp_path / "fastembed"
    for rel, src in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        content = layout_files._content(src)  # a rewritten file is a Made (bytes, and the file it came from)
        (out / rel).write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    assert _rows_with(out, texts, reference, "fastembed")["status"] == "passed"


def _rows_with(art: Path, texts: list[str], reference, name: str) -> dict:
    probe = kinds.get("sentence-transformer").probe(texts)
    (row,) = consumers.check_variant(art, ONNX, "sentence-transformer", [name], texts, reference, probe, FP32)
    return row


def test_a_dense_chain_fails_the_consumers_that_pool_the_token_output_themselves(tmp_path):
    """Transformer -> Pooling(cls) -> Dense -> Normalize: fastembed, transformers.js and optimum see only
    last_hidden_state and would drop the Dense layer; the graph's sentence_embedding (runtime) keeps it."""
    from exporter.builders.export_onnx import export_base
    from tests.builders.test_onnx import stage_artifact
    from tests.tiny_models import build_tiny_embedder

    src = build_tiny_embedder(tmp_path / "src", pooling="cls", dense=((24, True, "tanh"),))
    art = stage_artifact(src, tmp_path / "art")
    export_base(src, art)
    texts = short_texts(12)
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(src), device="cpu").encode(texts)
    probe = kinds.get("sentence-transformer").probe(texts)
    names = ["optimum", "fastembed", "transformers.js", "runtime"]
    rows = consumers.check_variant(art, ONNX, "sentence-transformer", names, texts, reference, probe, FP32)
    rows = {r["consumer"]: r for r in rows}
    for name in ("optimum", "fastembed", "transformers.js"):
        assert rows[name]["status"] == "failed", rows[name]
        assert "(Transformer -> Pooling -> Dense -> Normalize) do more than pooling" in rows[name]["message"]
    assert rows["runtime"]["status"] == "passed" and rows["runtime"]["cosine_min"] >= 0.9999
