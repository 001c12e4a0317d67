"""`exporter package --layout`: each layout built from a real export of the tiny model and checked with the
consumer that loads it (runtime, sentence-transformers, fastembed, transformers.js) or with its own schema
(Triton's model_config protobuf from tritonclient; TEI's file contract through onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from exporter import kinds
from exporter.quality import consumers, emulated_servers, recorded_reference
from exporter.quality.policy import DEFAULT
from exporter.ship import ovms_layout, triton_config
from exporter.source import st_modules
from tests.cli_runner import invoke
from tests.consumer_fixtures import FP32, ONNX, short_texts

pytestmark = pytest.mark.usefixtures("node_env")


GATED_BY = {  # the consumer each layout is run through before it is written, and how
    "st": [("runtime", "in-process"), ("sentence-transformers", "in-process")],
    "tei": [("tei", emulated_servers.EMULATED)],
    "fastembed": [("fastembed", "in-process")],
    "transformers.js": [("transformers.js", "node subprocess")],
    "ovms": [("ovms", emulated_servers.EMULATED)],
    "triton": [("triton", emulated_servers.EMULATED)],
}


def _layout(art: Path, tmp_path: Path, layout: str, variant: str = "onnx") -> Path:
    """The layout written by the CLI, gated, with a manifest listing exactly its files (integrity exit 0)."""
    out = tmp_path / layout
    res = invoke("package", str(art), "--variant", variant, "--layout", layout, "--out", str(out))
    assert res.code == 0, res.out + res.err
    assert f"{layout} layout of {variant}" in res.out and "start: " in res.out
    narrowed = json.loads((out / "manifest.json").read_text())
    assert [v["id"] for v in narrowed["variants"]] == [variant]
    gate = narrowed["layout"]["gate"]
    assert [(r["consumer"], r["runs"]) for r in gate] == GATED_BY[layout]
    assert all(r["status"] == "passed" and r["cosine_min"] >= 0.9999 for r in gate), gate
    policy = DEFAULT.thresholds_for("sentence-transformer", "fp32", variant).to_dict()
    for row in gate:  # judged by the export's gate: against the recorded torch vectors, the policy, every stratum
        assert row["reference"] == recorded_reference.REFERENCE and row["threshold"] == policy, row
        assert row["strata"] and all(s["cosine_min"] >= policy["cosine_min"] for s in row["strata"].values()), row
    for consumer, runs in GATED_BY[layout]:
        assert f"gate: passed {consumer} ({runs}) on the probe set: cosine_min" in res.out
    from exporter.fsutil import sha256_file

    assert narrowed["layout"]["artifact_manifest_sha256"] == sha256_file(art / "manifest.json")
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    listed = [f["path"] for f in narrowed["shared_files"] + narrowed["variants"][0]["files"]]
    assert sorted([*listed, "manifest.json"]) == on_disk
    res = invoke("verify", str(out), "--integrity")
    assert res.code == 0, res.out + res.err
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
    from exporter import runtime

    out = _layout(consumer_artifact, tmp_path, "st", variant)
    texts = short_texts()
    reference = _reference(consumer_artifact, texts)
    entry = json.loads((out / "manifest.json").read_text())["variants"][0]
    target = consumers.Target(out, entry, st_modules.read(out))
    probe = kinds.get("sentence-transformer").probe(texts)
    for name in ("runtime", "sentence-transformers"):
        row = consumers.check(consumers.BY_NAME[name], target, texts, reference, probe, "sentence-transformer", FP32)
        assert row["status"] == "passed", row
    enc = runtime.load(out)  # the folder's single-variant manifest says which file and backend
    assert enc.backend == variant and enc.path.name == Path(entry["load"]["file_name"]).name
    if variant == "openvino":  # the f32 pin travels with the folder, in the options the start line passes
        ov_config = json.loads((out / "openvino" / "ov_config.json").read_text())
        assert ov_config == {"INFERENCE_PRECISION_HINT": "f32"}


def test_layout_folders_follow_the_umask_and_a_change_fails_integrity(consumer_artifact, tmp_path):
    """0755/0644 under umask 022 (mkdtemp staging made them 0700); one byte or one tokenizer setting
    changed in a fresh layout is an integrity failure (exit 4)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = _layout(consumer_artifact, tmp_path, "fastembed")
    finally:
        os.umask(old)
    for path in [out, *out.rglob("*")]:
        want = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 512}))
    res = invoke("verify", str(out), "--integrity")
    assert res.code == 4 and "tokenizer_config.json" in res.err, res.err
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    assert invoke("verify", str(out), "--integrity").code == 0
    graph = bytearray((out / "onnx" / "model.onnx").read_bytes())
    graph[len(graph) // 2] ^= 1
    (out / "onnx" / "model.onnx").write_bytes(bytes(graph))
    res = invoke("verify", str(out), "--integrity")
    assert res.code == 4 and "onnx/model.onnx" in res.err, res.err


def test_tei_layout_holds_the_files_and_graph_tei_reads(consumer_artifact, tmp_path):
    import onnxruntime as ort

    out = _layout(consumer_artifact, tmp_path, "tei")
    for rel in ("onnx/model.onnx", "config.json", "tokenizer.json", "1_Pooling/config.json"):
        assert (out / rel).is_file(), rel
    session = ort.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "sentence_embedding"]


def _triton_config(pb2, text: str):
    from google.protobuf import text_format

    return text_format.Parse(text, pb2.ModelConfig())


def _check_triton_io(pb2, config, variant: str) -> None:
    """Batched: Triton owns the batch dimension (max_batch_size), so dims leave it out."""
    assert config.max_batch_size == triton_config.TRITON_MAX_BATCH and config.HasField("dynamic_batching")
    assert [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [(1, "KIND_CPU")]
    inputs = {i.name: (pb2.DataType.Name(i.data_type), list(i.dims)) for i in config.input}
    assert inputs["input_ids"] == inputs["attention_mask"] == ("TYPE_INT64", [-1])
    outputs = [(o.name, pb2.DataType.Name(o.data_type), list(o.dims)) for o in config.output]
    assert outputs[0] == ("last_hidden_state", "TYPE_FP32", [-1, 32])
    if variant == "onnx":
        assert outputs[1] == ("sentence_embedding", "TYPE_FP32", [32])


def test_triton_layout_parses_with_tritons_model_config_schema(consumer_artifact, tmp_path):
    out = _layout(consumer_artifact, tmp_path, "triton", "onnx")
    (model_dir,) = [p for p in out.iterdir() if p.is_dir()]
    pb2 = triton_config.triton_model_config_pb2()
    text = (model_dir / "config.pbtxt").read_text()
    config = _triton_config(pb2, text)
    assert config.name == model_dir.name and config.backend == "onnxruntime"
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx"]
    assert not config.parameters
    _check_triton_io(pb2, config, "onnx")
    assert "# Client-side tokenizer contract" in text and "truncates at 32 tokens" in text
    assert (model_dir / "tokenizer.json").is_file()  # what the contract tells the client to tokenize with


def test_triton_openvino_carries_bf16_and_refuses_an_f32_pin(consumer_artifact, tmp_path):
    """Triton's openvino backend takes HINT_BF16=YES and has no f32 pin: a bf16 variant gets the hint, the
    f32-pinned one is refused (a bf16-capable CPU would otherwise serve it in bf16)."""
    from exporter import manifest as mf

    res = invoke(
        "package", str(consumer_artifact), "--variant", "openvino", "--layout", "triton", "--out", str(tmp_path / "t")
    )
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1, res.err
    assert "'INFERENCE_PRECISION_HINT': 'f32'" in res.err and not (tmp_path / "t").exists()
    manifest = mf.load(consumer_artifact)
    entry = json.loads(json.dumps(mf.get_variant(manifest, "openvino")))
    entry["load"]["model_kwargs"] = {"ov_config": {"INFERENCE_PRECISION_HINT": "bf16"}}  # openvino-bf16's options
    files = triton_config._triton(consumer_artifact, manifest, entry, tmp_path)
    (config_path,) = [k for k in files if k.endswith("config.pbtxt")]
    pb2 = triton_config.triton_model_config_pb2()
    config = _triton_config(pb2, files[config_path].decode())
    assert config.backend == "openvino" and sorted(Path(k).name for k in files if "/1/" in k) == [
        "model.bin",
        "model.xml",
    ]
    assert {k: v.string_value for k, v in config.parameters.items()} == {"HINT_BF16": "YES"}
    _check_triton_io(pb2, config, "openvino")


def test_triton_layout_names_a_tensor_type_it_cannot_map(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from exporter.errors import UsageError

    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["out"])],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, [None, None])],
        [helper.make_tensor_value_info("out", TensorProto.INT32, [None, None])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    with pytest.raises(UsageError, match=r"'ids' is tensor\(int32\)") as err:
        triton_config._graph_io(tmp_path / "m.onnx", "onnx")
    assert "\n" not in err.value.message


@pytest.fixture(scope="module")
def external_data_artifact(tmp_path_factory) -> Path:
    """The tiny model's onnx-o1 variant (onnx/model_O1.onnx) exported with its weights in external data."""
    from exporter.builders import external_data
    from tests.tiny_models import build_tiny_sentence_transformer

    root = tmp_path_factory.mktemp("layout-external")
    src = build_tiny_sentence_transformer(root / "src")
    mp = pytest.MonkeyPatch()
    mp.setenv(external_data.ENV_LIMIT, "1024")
    try:
        res = invoke("export", str(src), "--variants", "onnx-o1", "--out", str(root / "art"))
    finally:
        mp.undo()
    assert res.code == 0, res.err + res.out
    assert external_data.locations(root / "art" / "onnx" / "model_O1.onnx") == ["model_O1.onnx_data"]
    return root / "art"


@pytest.mark.parametrize("layout", ["tei", "fastembed"])
def test_renamed_graph_names_its_renamed_external_data(external_data_artifact, tmp_path, layout):
    import onnxruntime as ort

    from exporter.builders import external_data

    art = external_data_artifact
    out = _layout(art, tmp_path, layout, "onnx-o1")
    assert external_data.locations(out / "onnx" / "model.onnx") == ["model.onnx_data"]
    assert not (out / "onnx" / "model_O1.onnx_data").exists()
    want = ort.InferenceSession(str(art / "onnx" / "model_O1.onnx"), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(out / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[2, 5, 7, 9, 3], [2, 6, 3, 0, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    feeds = {i.name: feeds[i.name] for i in want.get_inputs()}
    for a, b in zip(got.run(None, feeds), want.run(None, feeds), strict=True):
        np.testing.assert_array_equal(a, b)


def test_layout_into_an_existing_folder_exits_2_in_one_line(consumer_artifact, tmp_path):
    out = _layout(consumer_artifact, tmp_path, "tei")
    res = invoke("package", str(consumer_artifact), "--variant", "onnx", "--layout", "tei", "--out", str(out))
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1, res.err
    assert str(out) in res.err and "--force" not in res.err  # package has no --force
    (tmp_path / "empty").mkdir()
    res = invoke(
        "package", str(consumer_artifact), "--variant", "onnx", "--layout", "tei", "--out", str(tmp_path / "empty")
    )
    assert res.code == 0 and (tmp_path / "empty" / "onnx" / "model.onnx").is_file(), res.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layout", "tgi"], "unknown layout 'tgi'"),
        (["--layout", "tei", "--variant", "openvino"], "the tei layout takes onnx variants; openvino is openvino"),
        (["--layout", "infinity"], "the infinity layout is not written: infinity-emb's optimum engine"),
    ],
)
def test_bad_layout_requests_exit_2(consumer_artifact, tmp_path, args, message):
    res = invoke("package", str(consumer_artifact), *args, "--out", str(tmp_path / "x"))
    assert res.code == 2 and message in res.err, res.err
    assert not (tmp_path / "x").exists()
    res = invoke("package", str(consumer_artifact), "--layout", "tei")
    assert res.code == 2 and "--out DIR" in res.err


def test_ovms_layout_runs_through_the_ovms_data_path(consumer_artifact, tmp_path):
    out = _layout(consumer_artifact, tmp_path, "ovms", "openvino")
    names = {p.name for p in out.iterdir()}
    assert {"openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_tokenizer.bin"} <= names
    assert {"graph.pbtxt", "config.json", "tokenizer.json"} <= names
    assert "pooling: MEAN" in (out / "graph.pbtxt").read_text()
    assert 'plugin_config: "{\\"INFERENCE_PRECISION_HINT\\": \\"f32\\"}"' in (out / "graph.pbtxt").read_text()
    texts = short_texts() + [" ".join(short_texts(30))]  # one over max_seq_length: the tokenizer IR truncates
    got, want = emulated_servers.ovms_embeddings(out, texts), _reference(consumer_artifact, texts)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.9999, cos.min()


def test_ovms_layout_refuses_a_model_it_cannot_pool_like(tmp_path_factory, tmp_path):
    from exporter.errors import UsageError
    from tests.builders.test_onnx import exported_tiny

    _, art, _ = exported_tiny(tmp_path_factory, "max", True)
    with pytest.raises(UsageError, match="OVMS pools the first rank-3 output with CLS/MEAN/LAST only"):
        ovms_layout._ovms(art, {"shared_files": []}, {"load": {"file_name": "x.xml"}, "files": []}, tmp_path)


def test_a_layout_whose_consumer_differs_exits_3_and_writes_nothing(tmp_path):
    """A max-pooled model: fastembed pools the graph's token output with mean/cls/last only, so its layout
    would serve other vectors; the gate (the real fastembed row) refuses it before anything is written."""
    from tests.tiny_models import build_tiny_embedder

    src = build_tiny_embedder(tmp_path / "src", pooling="max")
    res = invoke("export", str(src), "--variants", "onnx", "--out", str(tmp_path / "art"))
    assert res.code == 0, res.err + res.out
    out = tmp_path / "fastembed"
    res = invoke("package", str(tmp_path / "art"), "--variant", "onnx", "--layout", "fastembed", "--out", str(out))
    assert res.code == 3, res.out + res.err
    assert "fastembed (in-process): fastembed can only pool with mean/cls/lasttoken" in res.err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".fastembed")]
    assert _layout(tmp_path / "art", tmp_path, "tei").is_dir()  # the graph pools inside: TEI serves it
