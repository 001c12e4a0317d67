"""`exporter package --layout`: each layout built from a real export of the tiny model and checked with the
consumer that loads it (runtime, sentence-transformers, fastembed, transformers.js) or with its own schema
(Triton's model_config protobuf from tritonclient; TEI's file contract through onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter import consumers, kinds, layouts, st_modules
from tests.cli_runner import invoke
from tests.consumer_fixtures import FP32, ONNX, short_texts

pytestmark = pytest.mark.usefixtures("node_env")


def _layout(art: Path, tmp_path: Path, layout: str, variant: str = "onnx") -> Path:
    out = tmp_path / layout
    res = invoke("package", str(art), "--variant", variant, "--layout", layout, "--out", str(out))
    assert res.code == 0, res.out + res.err
    assert f"{layout} layout of {variant}" in res.out and "start: " in res.out
    narrowed = json.loads((out / "manifest.json").read_text())
    assert [v["id"] for v in narrowed["variants"]] == [variant]
    return out


def _reference(art: Path, texts: list[str]):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(art), backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"}).encode(texts)


def _check(consumer: str, folder: Path, texts: list[str], reference) -> dict:
    target = consumers.Target(folder, ONNX, st_modules.read(folder))
    probe = kinds.get("sentence-transformer").probe(texts)
    return consumers.check(consumers.BY_NAME[consumer], target, texts, reference, probe, "sentence-transformer", FP32)


@pytest.mark.parametrize("layout", ["fastembed", "transformers.js"])
def test_library_layouts_load_in_their_library(consumer_artifact, tmp_path, layout):
    out = _layout(consumer_artifact, tmp_path, layout)
    assert (out / "onnx" / "model.onnx").is_file() and (out / "tokenizer.json").is_file()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 32  # the model's max_seq_length: both libraries truncate there
    texts = short_texts()
    row = _check(layout, out, texts, _reference(consumer_artifact, texts))
    assert row["status"] == "passed", row


@pytest.mark.parametrize("variant", ["onnx", "openvino"])
def test_st_layout_serves_with_the_runtime_and_sentence_transformers(consumer_artifact, tmp_path, variant):
    out = _layout(consumer_artifact, tmp_path, "st", variant)
    texts = short_texts()
    reference = _reference(consumer_artifact, texts)
    entry = json.loads((out / "manifest.json").read_text())["variants"][0]
    target = consumers.Target(out, entry, st_modules.read(out))
    probe = kinds.get("sentence-transformer").probe(texts)
    for name in ("runtime", "sentence-transformers"):
        row = consumers.check(consumers.BY_NAME[name], target, texts, reference, probe, "sentence-transformer", FP32)
        assert row["status"] == "passed", row


def test_tei_layout_holds_the_files_and_graph_tei_reads(consumer_artifact, tmp_path):
    import onnxruntime as ort

    out = _layout(consumer_artifact, tmp_path, "tei")
    for rel in ("onnx/model.onnx", "config.json", "tokenizer.json", "1_Pooling/config.json"):
        assert (out / rel).is_file(), rel
    session = ort.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "sentence_embedding"]


@pytest.mark.parametrize(
    ("variant", "backend", "files"),
    [
        ("onnx", "onnxruntime", ["model.onnx"]),
        ("openvino", "openvino", ["model.bin", "model.xml"]),
    ],
)
def test_triton_layout_parses_with_tritons_model_config_schema(consumer_artifact, tmp_path, variant, backend, files):
    from google.protobuf import text_format

    out = _layout(consumer_artifact, tmp_path, "triton", variant)
    (model_dir,) = [p for p in out.iterdir() if p.is_dir()]
    pb2 = layouts.triton_model_config_pb2()
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert config.name == model_dir.name and config.backend == backend and config.max_batch_size == 0
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == files
    inputs = {i.name: (pb2.DataType.Name(i.data_type), list(i.dims)) for i in config.input}
    assert inputs["input_ids"] == inputs["attention_mask"] == ("TYPE_INT64", [-1, -1])
    outputs = [(o.name, pb2.DataType.Name(o.data_type), list(o.dims)) for o in config.output]
    assert outputs[0] == ("last_hidden_state", "TYPE_FP32", [-1, -1, 32])
    if variant == "onnx":
        assert outputs[1] == ("sentence_embedding", "TYPE_FP32", [-1, 32])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layout", "tgi"], "unknown layout 'tgi'"),
        (["--layout", "tei", "--variant", "openvino"], "the tei layout takes onnx variants; openvino is openvino"),
    ],
)
def test_bad_layout_requests_exit_2(consumer_artifact, tmp_path, args, message):
    res = invoke("package", str(consumer_artifact), *args, "--out", str(tmp_path / "x"))
    assert res.code == 2 and message in res.err, res.err
    assert not (tmp_path / "x").exists()
    res = invoke("package", str(consumer_artifact), "--layout", "tei")
    assert res.code == 2 and "--out DIR" in res.err
