"""Sparse (SPLADE) and static-embedding shapes, and ONNX external data, through export, verify and runtime.

Tiny models of each shape are built locally and exported once per module; the read-only tests share the
artifacts. Each artifact is re-checked in fresh processes: ``exporter verify`` (sentence-transformers
loads every variant, ``exporter.quality.verify``'s worker) and the torch-free runtime (a subprocess that must not
import torch).

- SPLADE as sentence-transformers 5.0-5.6 saved it (``MLMTransformer`` + ``SpladePooling`` under
  ``sparse_encoder.models``), with sum pooling and OpenSearch's ``log1p_relu`` activation, exported with
  the external-data limit lowered to 1 KiB so every ONNX variant (base, ORT-optimised, int8) is written
  with ``<graph>_data`` (the path models over 2 GB take). The ST 5.7 spelling with max/relu is exported
  with every sparse variant by tests/e2e/test_rerankers_and_sparse.py.
- StaticEmbedding in both layouts (ST 5.7 at the root, the older ``0_StaticEmbedding/`` folder) and with
  a Normalize module.
- The inference-free Router (SparseStaticEmbedding query side, MLM document side): refused up front.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter import manifest as mf
from exporter import runtime, support
from exporter.builders import external_data
from exporter.errors import UsageError
from tests.cli_runner import invoke, run_cli
from tests.tiny_models import build_tiny_sparse_encoder, build_tiny_static_embedding

EXERCISED_SHAPES = {"splade-mlmtransformer", "router", "sparse-static-embedding", "static-embedding"}

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "", "what is the capital city? " * 20]
SPLADE_VARIANTS = ("onnx", "onnx-o2", "onnx-quint8-avx2", "openvino")
# OpenVINO on bf16-capable CPUs and int8: near-tied neighbours of a random tiny SPLADE model swap (int8: one_word
# 0.963 over 30 texts, its lower confidence bound 0.942).
SPLADE_THRESHOLDS = ("openvino:neighbour_agreement_at_10=0.95", "int8:neighbour_agreement_at_10=0.9")

_RUNTIME_SCRIPT = """
import json, sys
from exporter import runtime
artifact, file_name, backend, texts = json.loads(sys.stdin.read())
enc = runtime.load(artifact, file_name=file_name, backend=backend)
out = enc.encode(texts)
print(json.dumps({"torch": "torch" in sys.modules, "sparse": enc.sparse, "vectors": out.tolist()}))
"""


def _export(src: Path, out: Path, variants: str, *extra: str, env: dict | None = None) -> None:
    import os

    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        res = invoke("export", str(src), "--variants", variants, "--out", str(out), *extra)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert res.code == 0, res.err + res.out


def _runtime_in_fresh_process(artifact: Path, file_name: str, backend: str = "onnx") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _RUNTIME_SCRIPT],
        input=json.dumps([str(artifact), file_name, backend, TEXTS]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cos_min(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (norms == 0) & np.allclose(a, b, atol=1e-6, rtol=0)
    return float(np.where(both_zero, 1.0, (a * b).sum(1) / np.maximum(norms, 1e-30)).min())


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def splade(tmp_path_factory):
    """(source, artifact): ST 5.0-5.6 spelling, sum + log1p_relu, every ONNX file with external data."""
    root = tmp_path_factory.mktemp("splade")
    src = build_tiny_sparse_encoder(root / "src", spelling="5.0", pooling="sum", activation="log1p_relu")
    thresholds = [a for t in SPLADE_THRESHOLDS for a in ("--threshold", t)]
    env = {external_data.ENV_LIMIT: "1024"}
    _export(src, root / "art", ",".join(SPLADE_VARIANTS), *thresholds, env=env)
    return src, root / "art"


@pytest.fixture(scope="module")
def statics(tmp_path_factory):
    """layout -> (source, artifact) of a StaticEmbedding model exported with `all` (onnx, openvino)."""
    root = tmp_path_factory.mktemp("static")
    made = {}
    for layout, normalize in (("folder", False), ("5.7", True)):
        src = build_tiny_static_embedding(root / f"src-{layout}", layout=layout, normalize=normalize)
        _export(src, root / f"art-{layout}", "all")
        made[layout] = (src, root / f"art-{layout}")
    return made


# ------------------------------------------------------------------------------------------- SPLADE
def test_legacy_splade_exports_every_variant_with_external_data(splade):
    src, art = splade
    modules = json.loads((src / "modules.json").read_text())
    assert [m["type"].rsplit(".", 2)[-2] for m in modules] == ["models", "models"]  # the 5.0-5.6 spelling
    manifest = mf.load(art)
    for vid in SPLADE_VARIANTS:
        v = mf.get_variant(manifest, vid)
        assert v["status"] == "passed", (vid, v["error"], (v["parity"] or {}).get("failures"))
        if v["backend"] == "onnx":
            paths = [f["path"] for f in v["files"]]
            graph = v["load"]["file_name"]
            assert paths == [graph, graph + "_data"], paths  # the data file is listed and hashed like any
            assert all(len(f["sha256"]) == 64 for f in v["files"])
            assert external_data.locations(art / graph) == [Path(graph).name + "_data"]
    build = mf.get_variant(manifest, "onnx")["build"]
    assert build["splade_pooling"] == {"pooling_strategy": "sum", "activation_function": "log1p_relu"}
    assert "sparse_embedding" in build["outputs"] and "logits" in build["outputs"] and build["pruning"] is None


def test_splade_artifact_verifies_in_a_fresh_process(splade):
    same_policy = [a for t in SPLADE_THRESHOLDS for a in ("--threshold", t)]  # the artifact's record never judges
    res = invoke("verify", str(splade[1]), *same_policy)
    assert res.code == 0, res.err + res.out
    for vid in SPLADE_VARIANTS:
        assert any(line.startswith("ok") and vid in line for line in res.out.splitlines()), res.out


@pytest.mark.parametrize("file_name", ["onnx/model.onnx", "onnx/model_O2.onnx"])
def test_torch_free_runtime_serves_splade_vectors(splade, file_name):
    from sentence_transformers import SparseEncoder

    src, art = splade
    got = _runtime_in_fresh_process(art, file_name)
    assert got["torch"] is False and got["sparse"] is True
    ref = SparseEncoder(str(src), device="cpu").encode(TEXTS, convert_to_tensor=True, convert_to_sparse_tensor=False)
    ref = ref.numpy()
    vectors = np.asarray(got["vectors"], dtype=np.float32)
    assert vectors.shape == ref.shape and _cos_min(ref, vectors) > 0.9999
    np.testing.assert_allclose(vectors, ref, atol=1e-4)


def test_runtime_prunes_sparse_vectors_on_request(splade):
    enc = runtime.load(splade[1])
    full = enc.encode(TEXTS[:2])
    top = enc.encode(TEXTS[:2], top_k=3)
    assert ((top > 0).sum(axis=1) <= 3).all()
    for row_full, row_top in zip(full, top, strict=True):
        kept = np.flatnonzero(row_top)
        assert np.allclose(row_top[kept], row_full[kept]) and row_top[kept].min() >= np.sort(row_full)[-3]
    cut = float(np.median(full[full > 0]))
    assert (enc.encode(TEXTS[:2], threshold=cut) > cut).sum() == (enc.encode(TEXTS[:2], threshold=cut) > 0).sum()
    with pytest.raises(UsageError):
        enc.encode(TEXTS[:1], top_k=0)


@pytest.mark.parametrize("strategy", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_splade_pooling_in_the_graph_matches_sentence_transformers(tmp_path, strategy, activation):
    """The appended nodes against ST's SpladePooling.forward on random logits with padding."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    from exporter.builders.export_onnx_sparse import SpladeFacts, add_splade_pooling

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["logits"])],
        "mlm",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 7]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", 7])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    add_splade_pooling(path, SpladeFacts(strategy, activation))
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 5, 7)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)
    (got,) = ort.InferenceSession(str(path)).run(["sparse_embedding"], {"x": logits, "attention_mask": mask})
    pool = SpladePooling(strategy, activation_function=activation).eval()
    features = {"token_embeddings": torch.from_numpy(logits.copy()), "attention_mask": torch.from_numpy(mask)}
    ref = pool(features)["sentence_embedding"].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------- Router
def _router_model(root: Path) -> Path:
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding, SpladePooling, Transformer
    from transformers import AutoTokenizer, BertForMaskedLM

    from tests.tiny_models import _tiny_bert

    _tiny_bert(root / "hf", BertForMaskedLM, 32, 32, 0)
    doc = Transformer(str(root / "hf"), transformer_task="fill-mask", max_seq_length=32)
    query = SparseStaticEmbedding(tokenizer=AutoTokenizer.from_pretrained(root / "hf"), frozen=True)
    router = Router.for_query_document(
        query_modules=[query], document_modules=[doc, SpladePooling("max", activation_function="log1p_relu")]
    )
    SparseEncoder(modules=[router], device="cpu", similarity_fn_name="dot").save(str(root / "router"))
    return root / "router"


def test_inference_free_router_is_refused_up_front_naming_its_routes(tmp_path, capsys):
    src = _router_model(tmp_path)
    for variants in ("onnx", "openvino"):
        res = run_cli(capsys, "export", str(src), "--variants", variants, "--out", str(tmp_path / "never"))
        assert res.code == 2, res.err
        (line,) = [x for x in res.err.splitlines() if x.startswith("Error:")]
        assert "Router" in line and "query: SparseStaticEmbedding" in line and "document: Transformer" in line
        assert "OpenVINO" not in line and "Traceback" not in res.err
        assert not (tmp_path / "never").exists()


def _modules_dir(tmp_path: Path, types: list[str]) -> Path:
    entries = [{"idx": i, "name": str(i), "path": "", "type": t} for i, t in enumerate(types)]
    (tmp_path / "modules.json").write_text(json.dumps(entries))
    return tmp_path


@pytest.mark.parametrize(
    ("types", "kind", "expected"),
    [
        (["sentence_transformers.sparse_encoder.models.SparseStaticEmbedding"], "sparse-encoder", "SparseStatic"),
        (
            [
                "sentence_transformers.base.modules.transformer.Transformer",
                "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
                "sentence_transformers.sparse_encoder.modules.sparse_auto_encoder.SparseAutoEncoder",
            ],
            "sparse-encoder",
            "Transformer -> Pooling -> SparseAutoEncoder",
        ),
        (
            ["sentence_transformers.models.StaticEmbedding", "sentence_transformers.models.Dense"],
            "sentence-transformer",
            "StaticEmbedding -> Dense",
        ),
        (["sentence_transformers.models.Asym"], "sentence-transformer", "Router"),
    ],
)
def test_refused_chains_name_their_modules(tmp_path, types, kind, expected):
    with pytest.raises(UsageError) as info:
        support.match(_modules_dir(tmp_path, types), kind)
    assert expected in info.value.message and info.value.hint


def test_unknown_splade_activation_is_refused_by_name(tmp_path):
    root = _modules_dir(tmp_path, ["x.Transformer", "sentence_transformers.sparse_encoder.models.SpladePooling"])
    entries = json.loads((root / "modules.json").read_text())
    entries[1]["path"] = "1_SpladePooling"
    (root / "modules.json").write_text(json.dumps(entries))
    (root / "1_SpladePooling").mkdir()
    (root / "1_SpladePooling" / "config.json").write_text(json.dumps({"activation_function": "gelu"}))
    with pytest.raises(UsageError, match="SpladePooling with pooling_strategy='max', activation_function='gelu'"):
        support.match(root, "sparse-encoder")


@pytest.mark.parametrize(
    ("types", "kind", "row"),
    [
        (["sentence_transformers.sparse_encoder.models.MLMTransformer", "x.SpladePooling"], "sparse-encoder",
         "splade-mlmtransformer"),
        (["sentence_transformers.base.modules.transformer.Transformer", "x.SpladePooling"], "sparse-encoder",
         "splade-transformer"),
        (["sentence_transformers.models.StaticEmbedding", "sentence_transformers.models.Normalize"],
         "sentence-transformer", "static-embedding"),
        (["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"],
         "sentence-transformer", "bert-any-pooling"),
    ],
)  # fmt: skip
def test_chains_are_matched_to_their_rules(tmp_path, types, kind, row):
    root = _modules_dir(tmp_path, types)
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    assert support.match(root, kind).rule.id == row


# ------------------------------------------------------------------------------------------- static
@pytest.mark.parametrize("layout", ["folder", "5.7"])
def test_static_embedding_exports_onnx_and_openvino_and_verifies(statics, layout):
    src, art = statics[layout]
    manifest = mf.load(art)
    assert [v["id"] for v in manifest["variants"]] == list(support.STATIC_VARIANTS)  # `all`, narrowed
    assert all(v["status"] == "passed" for v in manifest["variants"]), manifest["variants"]
    assert manifest["model"]["kind"] == "sentence-transformer" and manifest["model"]["max_seq_length"] is None
    res = invoke("verify", str(art))
    assert res.code == 0, res.err + res.out


@pytest.mark.parametrize(("layout", "file_name", "backend"), [
    ("folder", "onnx/model.onnx", "onnx"),
    ("5.7", "onnx/model.onnx", "onnx"),
    ("5.7", "openvino/openvino_model.xml", "openvino"),
])  # fmt: skip
def test_torch_free_runtime_serves_static_embeddings(statics, layout, file_name, backend):
    from sentence_transformers import SentenceTransformer

    src, art = statics[layout]
    got = _runtime_in_fresh_process(art, file_name, backend)
    assert got["torch"] is False and got["sparse"] is False
    ref = SentenceTransformer(str(src), device="cpu").encode(TEXTS)
    vectors = np.asarray(got["vectors"])
    assert vectors.shape == ref.shape and not vectors[2].any()  # the empty text: the zero vector, as ST
    assert _cos_min(ref, vectors) > 0.9999


def test_static_embedding_variants_keep_the_matryoshka_width(statics, tmp_path):
    """--truncate-dim: the graph gives every dimension, so the runtime truncates as the reference does,
    in the export's checks and wherever a variant is loaded from its manifest entry (verify, bench)."""
    from sentence_transformers import SentenceTransformer

    from exporter.runners.variant import load_variant

    src, _ = statics["5.7"]
    _export(src, tmp_path / "art", "all", "--truncate-dim", "4")
    manifest = mf.load(tmp_path / "art")
    assert manifest["model"]["truncate_dim"] == 4
    ref = SentenceTransformer(str(src), device="cpu", truncate_dim=4).encode(TEXTS)
    for v in manifest["variants"]:
        assert v["status"] == "passed" and v["load"]["truncate_dim"] == 4, v
        got = load_variant(tmp_path / "art", v, manifest["model"]["kind"]).encode(TEXTS)
        assert got.shape == ref.shape == (len(TEXTS), 4), v["id"]
        assert _cos_min(ref, got) > 0.9999


def test_static_embedding_refuses_named_variants_it_cannot_serve(statics, tmp_path, capsys):
    src, _ = statics["folder"]
    res = run_cli(capsys, "export", str(src), "--variants", "onnx,onnx-o2", "--out", str(tmp_path / "never"))
    assert res.code == 2
    (line,) = [x for x in res.err.splitlines() if x.startswith("Error:")]
    assert "onnx-o2" in line and "static-embedding" in line and "onnx, openvino" in line
    assert not (tmp_path / "never").exists()


# -------------------------------------------------------------------------------------- external data
def test_settle_moves_tensors_out_and_back_by_the_limit(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(600, dtype=np.float32).reshape(20, 30), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 30])],
        [weight],
    )
    path = tmp_path / "onnx" / "model_X.onnx"
    path.parent.mkdir()
    onnx.save(helper.make_model(graph), str(path))
    assert external_data.settle(path, max_bytes=1024) == [path, path.parent / "model_X.onnx_data"]
    assert path.stat().st_size < 1024
    inode = (path.parent / "model_X.onnx_data").stat().st_ino
    assert external_data.settle(path, max_bytes=1024) == [path, path.parent / "model_X.onnx_data"]
    assert (path.parent / "model_X.onnx_data").stat().st_ino == inode  # already right: not rewritten
    assert external_data.settle(path, max_bytes=10**6) == [path]  # back inline, the data file removed
    assert not (path.parent / "model_X.onnx_data").exists()
    reloaded = onnx.load(str(path))
    assert np.array_equal(numpy_helper.to_array(reloaded.graph.initializer[0]), numpy_helper.to_array(weight))


def test_external_data_limit_env_is_validated(monkeypatch):
    monkeypatch.setenv(external_data.ENV_LIMIT, "lots")
    with pytest.raises(UsageError, match=external_data.ENV_LIMIT):
        external_data.limit()
    monkeypatch.setenv(external_data.ENV_LIMIT, "5")
    assert external_data.limit() == 5
    monkeypatch.delenv(external_data.ENV_LIMIT)
    assert external_data.limit() == external_data.DEFAULT_LIMIT


def test_support_rows_agree_with_what_export_allows():
    from exporter import variants

    rows = {r["id"]: r for r in support.table_rows()}
    for rid in ("splade-mlmtransformer", "splade-transformer"):
        assert rows[rid]["allowed"] == variants.for_kind("sparse-encoder")
    assert rows["static-embedding"]["allowed"] == list(support.STATIC_VARIANTS)
    assert rows["router"]["allowed"] == [] and "per-route export" in rows["router"]["refused"]["*"]
    for row in rows.values():
        assert set(row["allowed"]).isdisjoint(row["refused"])
        assert all(reason and "\n" not in reason for reason in row["refused"].values())
