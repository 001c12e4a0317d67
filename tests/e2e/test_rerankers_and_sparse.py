"""Cross-encoders (rerankers) and sparse encoders (SPLADE) through export, verify and bench.

Tiny models of each kind are built locally (no network). Each kind is exported once per module with
every catalogue variant that applies to it (so a new catalogue entry that declares a kind is covered
without touching this file), and the read-only tests share that artifact.

Threshold overrides, and why: on CPUs with AVX512_BF16 or AMX (this machine has AVX512_BF16) OpenVINO's
CPU plugin runs an fp32 IR in bf16 by default, which is how a user loading it gets it too. On the tiny
random reranker that moves scores by ~5e-3 (the fp32 gate is 1e-3) and flips one list's near-tied best
passage in 32; on the tiny SPLADE model it swaps ~1.5% of the ten nearest neighbours (gate 0.99). The
int8 variants pass their default int8 gates on these tiny models as they are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter import kinds, variants
from exporter import manifest as mf
from exporter.errors import UsageError
from exporter.hostcaps import this_host
from exporter.kinds import ModelKind
from exporter.quality import kind_metrics, parity
from exporter.variants import CATALOGUE, Precision
from tests.cli_runner import invoke, run_cli
from tests.tiny_models import build_tiny_cross_encoder, build_tiny_sparse_encoder

EXERCISED_SHAPES = {"splade-transformer", "cross-encoder"}  # the support rules this module exports and verifies
OTHER_KINDS = (ModelKind.CROSS_ENCODER, ModelKind.SPARSE_ENCODER)
BUILDERS = {ModelKind.CROSS_ENCODER: build_tiny_cross_encoder, ModelKind.SPARSE_ENCODER: build_tiny_sparse_encoder}
TINY_OVERRIDES = {
    ModelKind.CROSS_ENCODER: ["openvino:score_max_abs_diff=0.02", "openvino:top1_agreement=0.9"],
    # Every probe stratum is gated (nn@10 too, at its lower confidence bound): the tiny random SPLADE's vectors
    # sit near ties (int8 cosine 0.9999 yet neighbours swap: tok_random 0.925 over 24 texts, bound 0.898), so
    # its int8 neighbours are held to 0.85 per stratum and overall.
    ModelKind.SPARSE_ENCODER: ["openvino:neighbour_agreement_at_10=0.95", "int8:neighbour_agreement_at_10=0.85"],
}
# what this host can build and gate (VariantSpec.requires: bf16 units, an ISA preset's int8 kernels)
ALLOWED_PAIRS = [(k, s.id) for k in OTHER_KINDS for s in CATALOGUE if k in s.kinds and not s.missing_on(this_host())]
REFUSED_PAIRS = [(k, s.id) for k in OTHER_KINDS for s in CATALOGUE if k not in s.kinds]


def _cli(*args: str) -> tuple[int, str, str]:
    """The real entry point in-process, for module-scoped fixtures (no capsys there)."""
    res = invoke(*args)
    return res.code, res.out, res.err


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[ModelKind, Path]:
    root = tmp_path_factory.mktemp("kinds-src")
    return {k: build(root / k.value) for k, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def artifacts(models, tmp_path_factory):
    """``get(kind)``: the tiny model of ``kind`` exported with every variant allowed for it (once)."""
    done: dict[ModelKind, tuple[Path, dict]] = {}

    def get(kind: ModelKind) -> tuple[Path, dict]:
        if kind not in done:
            out = tmp_path_factory.mktemp("kinds-art") / kind.value
            ids = ",".join(v for k, v in ALLOWED_PAIRS if k is kind)
            thresholds = [a for o in TINY_OVERRIDES[kind] for a in ("--threshold", o)]
            code, stdout, err = _cli(
                "export", str(models[kind]), "--variants", ids, "--out", str(out), *thresholds, "--json"
            )
            assert code == 0, err + stdout
            # NNCF prints its weight-compression table to stdout ahead of the JSON (see the report).
            done[kind] = (
                out,
                json.loads(stdout[stdout.find("{") if stdout.startswith("{") else stdout.rfind("\n{") + 1 :]),
            )
        return done[kind]

    return get


# ------------------------------------------------------------------------------------- the catalogue
@pytest.mark.parametrize(("kind", "vid"), ALLOWED_PAIRS, ids=[f"{k.value}:{v}" for k, v in ALLOWED_PAIRS])
def test_every_allowed_kind_variant_pair_builds_and_passes(artifacts, kind, vid):
    out, summary = artifacts(kind)
    v = mf.get_variant(mf.load(out), vid)
    assert v["status"] == "passed", (v.get("error"), (v["parity"] or {}).get("failures"))
    assert v["files"] and v["load"]["file_name"]
    expected = set(parity.defaults(kind, v["precision"]).to_dict())
    assert set(v["parity"]["threshold"]) == expected


@pytest.mark.parametrize(("kind", "vid"), REFUSED_PAIRS, ids=[f"{k.value}:{v}" for k, v in REFUSED_PAIRS])
def test_every_other_pair_is_refused_before_building(kind, vid):
    with pytest.raises(UsageError) as info:
        variants.select_for_kind([vid], kind)
    assert kind.value in info.value.message and vid in info.value.message
    assert "onnx" in info.value.hint


def test_every_catalogue_entry_declares_known_kinds_and_embedders_get_everything():
    for spec in CATALOGUE:
        assert spec.kinds and all(isinstance(k, ModelKind) for k in spec.kinds), spec.id
        assert ModelKind.SENTENCE_TRANSFORMER in spec.kinds, spec.id
        base = spec.derives_from and variants.BY_ID[spec.derives_from]
        assert not base or set(spec.kinds) <= set(base.kinds), f"{spec.id} applies where its base does not"
    for kind in OTHER_KINDS:
        assert "onnx" in variants.for_kind(kind)


def test_all_means_all_that_apply_to_the_kind():
    ids = [s.id for s in variants.select_for_kind("all", ModelKind.CROSS_ENCODER)]
    assert ids and all(ModelKind.CROSS_ENCODER in variants.BY_ID[i].kinds for i in ids)
    assert "quanto-int8" not in ids


def test_refused_pair_exits_2_with_a_clear_message(models, tmp_path, capsys):
    res = run_cli(
        capsys,
        "export",
        str(models[ModelKind.CROSS_ENCODER]),
        "--variants",
        "onnx,quanto-int8",
        "--out",
        str(tmp_path / "never"),
    )
    assert res.code == 2, res.err
    (line,) = [x for x in res.err.splitlines() if x.startswith("Error:")]  # one line (progress ticks aside)
    assert "quanto-int8" in line and "cross-encoder" in line and "onnx-o3" in line
    assert not (tmp_path / "never").exists()


def test_kind_stated_by_the_files_wins_over_a_different_kind_asked_for(models, tmp_path, capsys):
    res = run_cli(
        capsys,
        "export",
        str(models[ModelKind.SPARSE_ENCODER]),
        "--kind",
        "cross-encoder",
        "--out",
        str(tmp_path / "never"),
    )
    assert res.code == 2 and "is a sparse-encoder model, not a cross-encoder" in res.err


def test_threshold_of_another_kind_is_refused(models, tmp_path, capsys):
    res = run_cli(
        capsys,
        "export",
        str(models[ModelKind.CROSS_ENCODER]),
        "--threshold",
        "cosine_min=0.9",
        "--out",
        str(tmp_path / "never"),
    )
    assert res.code == 2 and "does not apply to cross-encoder" in res.err and "score_spearman" in res.err


# ----------------------------------------------------------------------------------------- manifest
def test_manifest_records_kind_and_its_facts(artifacts, models):
    from transformers import AutoConfig

    for kind in OTHER_KINDS:
        out, summary = artifacts(kind)
        m = mf.load(out)  # validates against the schema
        assert m["model"]["kind"] == kind.value and m["publishable"] is False  # a local folder is unpinned
        config = AutoConfig.from_pretrained(models[kind])
        if kind is ModelKind.CROSS_ENCODER:
            assert m["model"]["num_labels"] == 1 and m["model"]["activation_fn"].endswith("Sigmoid")
            assert m["variants"][0]["parity"]["n"] == 320 and m["variants"][0]["parity"]["n_lists"] == 32
        else:
            assert m["model"]["vocab_size"] == config.vocab_size == m["model"]["embedding_dim"]
            assert m["model"]["pooling"] == "splade-max-relu"
        # ST's ONNX backend reads logits; the sparse graph also holds SpladePooling for the torch-free runtime.
        expected = ["logits"] if kind is ModelKind.CROSS_ENCODER else ["logits", "sparse_embedding"]
        assert m["variants"][0]["build"]["outputs"] == expected


def test_torch_free_runtime_serves_the_sparse_artifact(artifacts, models):
    """SPLADE as ST 5.7 saves it (Transformer fill-mask): every ONNX variant serves sparse vectors."""
    from sentence_transformers import SparseEncoder

    from exporter import runtime

    out, _ = artifacts(ModelKind.SPARSE_ENCODER)
    texts = ["hello world", "the quick brown fox", ""]
    ref = SparseEncoder(str(models[ModelKind.SPARSE_ENCODER]), device="cpu").encode(
        texts, convert_to_tensor=True, convert_to_sparse_tensor=False
    )
    for v in mf.load(out)["variants"]:
        if v["backend"] == "onnx" and v["precision"] == "fp32":
            got = runtime.load(out, file_name=v["load"]["file_name"]).encode(texts)
            np.testing.assert_allclose(got, ref.numpy(), atol=1e-4, err_msg=v["id"])


def test_kind_of_a_legacy_cross_encoder_folder_is_detected(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    src = SimpleNamespace(path=tmp_path, kind="sentence-transformer")
    assert kinds.resolve_kind(src, None) is ModelKind.CROSS_ENCODER
    assert kinds.resolve_kind(src, "sparse-encoder") is ModelKind.SPARSE_ENCODER  # no stated kind: override wins
    (tmp_path / "modules.json").write_text("[]")
    assert kinds.resolve_kind(src, None) is ModelKind.SENTENCE_TRANSFORMER


# ---------------------------------------------------------------------------- users load it as usual
def test_every_onnx_and_openvino_variant_loads_in_a_fresh_process(artifacts, models):
    for kind in OTHER_KINDS:
        out, _ = artifacts(kind)
        loadable = [(v["load"]["backend"], v["load"]["file_name"]) for v in mf.load(out)["variants"]]
        cls = kinds.get(kind).model_class.rpartition(":")[2]
        call = "m.predict(pairs)" if kind is ModelKind.CROSS_ENCODER else "m.encode(texts).to_dense().numpy()"
        code = (
            "import json, sys, numpy as np\n"
            f"from sentence_transformers import {cls}\n"
            "texts = ['hello world', 'the quick brown fox', 'what is a river city']\n"
            "pairs = [(texts[0], texts[1]), (texts[0], texts[2]), (texts[2], texts[1])]\n"
            f"m = {cls}({str(models[kind])!r}, device='cpu')\n"
            f"ref = np.asarray({call})\n"
            f"for backend, file_name in {loadable!r}:\n"
            f"    m = {cls}({str(out)!r}, backend=backend, model_kwargs={{'file_name': file_name}})\n"
            f"    got = np.asarray({call})\n"
            "    assert got.shape == ref.shape, (file_name, got.shape)\n"
            "    assert np.abs(got - ref).max() < 0.05, (file_name, np.abs(got - ref).max())\n"
            "print('ok', len(" + repr(loadable) + "))\n"
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------- verify and bench
@pytest.mark.parametrize("kind", OTHER_KINDS, ids=[k.value for k in OTHER_KINDS])
def test_verify_reruns_parity_with_the_kinds_metrics(artifacts, kind, capsys):
    out, _ = artifacts(kind)
    same_policy = [a for o in TINY_OVERRIDES[kind] for a in ("--threshold", o)]  # verify judges by what it is given
    res = run_cli(capsys, "verify", str(out), "--variants", "onnx,onnx-quint8-avx2,openvino", "--json", *same_policy)
    assert res.code == 0, res.err + res.out
    report = json.loads(res.out)
    recorded = {v["id"]: v["parity"] for v in mf.load(out)["variants"]}
    for case in report["variants"]:
        assert case["status"] == "passed", case
        key = "score_spearman" if kind is ModelKind.CROSS_ENCODER else "top_terms_overlap_at_10"
        assert case["parity"][key] == pytest.approx(recorded[case["name"]][key], abs=1e-3)
        assert case["parity"]["threshold"] == recorded[case["name"]]["threshold"]


@pytest.mark.parametrize("kind", OTHER_KINDS, ids=[k.value for k in OTHER_KINDS])
def test_bench_times_pairs_for_rerankers_and_texts_for_sparse(artifacts, kind, capsys):
    out, _ = artifacts(kind)
    args = ["bench", str(out), "--variants", "onnx,openvino", "--batch-sizes", "1,8", "--rounds", "1"]
    res = run_cli(capsys, *args, "--max-texts", "24", "--no-report", "--json")
    assert res.code == 0, res.err + res.out
    bench = json.loads(res.out)["bench"]
    assert bench["unit"] == ("pairs" if kind is ModelKind.CROSS_ENCODER else "texts")
    assert bench["kind"] == kind.value and bench["n_inputs"] == 24
    m = mf.load(out)
    for vid in ("onnx", "openvino"):
        figures = mf.get_variant(m, vid)["bench"]
        assert all(t > 0 for t in figures["throughput"].values()) and figures["latency_ms"]["p50"] > 0
    human = run_cli(capsys, *args, "--max-texts", "12", "--no-report")
    assert human.code == 0 and f"{bench['unit']}/s @8" in human.out


@pytest.mark.parametrize("kind", OTHER_KINDS, ids=[k.value for k in OTHER_KINDS])
def test_summary_and_report_show_the_kinds_own_metrics(artifacts, kind, capsys):
    """The export summary, REPORT.md's columns and its plot use the metrics the kinds table names (a
    reranker's report used to have no fidelity columns and an empty plot)."""
    from exporter.quality import report

    out, summary = artifacts(kind)
    spec = kinds.get(kind)
    for v in summary["variants"]:
        assert v[spec.primary.key] is not None and {m.key for m in spec.summary} <= set(v), v
    args = ["bench", str(out), "--variants", "onnx", "--batch-sizes", "1,8", "--rounds", "1", "--max-texts", "16"]
    assert run_cli(capsys, *args).code == 0  # writes REPORT.md and report.png
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    assert f"| size MB | {' | '.join(m.label for m in spec.report)} | x torch @1 |" in text
    assert f" {spec.unit}/s @ 1" in text  # the reference's throughput in the kind's unit
    onnx_row = next(line for line in text.splitlines() if line.startswith(("| onnx |", "| **onnx** ")))
    recorded = mf.get_variant(mf.load(out), "onnx")["parity"]
    assert spec.primary.format(recorded[spec.primary.key]) in onnx_row
    assert [p["id"] for p in report.points(mf.load(out))] == ["onnx"]  # the plot has its point


# ------------------------------------------------------------------------------------------- metrics
def test_rerank_probe_is_deterministic_and_well_formed():
    texts = [f"text {i}" for i in range(100)]
    p = kind_metrics.rerank_probe(texts)
    assert p == kind_metrics.rerank_probe(texts)
    assert len(p.lists) == kind_metrics.RERANK_MAX_LISTS and all(
        len(x) == kind_metrics.RERANK_LIST_SIZE for x in p.lists
    )
    for idx in p.lists:
        queries = {p.pairs[i][0] for i in idx}
        passages = [p.pairs[i][1] for i in idx]
        assert len(queries) == 1 and len(set(passages)) == len(passages) and not queries & set(passages)
    small = kind_metrics.rerank_probe(["a", "b", "c"])
    assert [len(x) for x in small.lists] == [2, 2, 2]
    assert kind_metrics.rerank_probe(["only"]).pairs == [("only", "only")]


def test_compare_scores_on_exact_and_swapped_rankings():
    ref = np.linspace(0, 1, 20)
    lists = [list(range(10)), list(range(10, 20))]
    same = parity.compare_scores(ref, ref.copy(), lists)
    assert (same.score_max_abs_diff, same.top1_agreement, same.top3_agreement) == (0.0, 1.0, 1.0)
    assert same.score_spearman == pytest.approx(1.0) and (same.n, same.n_lists) == (20, 2)
    swapped = ref.copy()
    swapped[[9, 0]] = swapped[[0, 9]]  # list 0's best becomes its worst
    m = parity.compare_scores(ref, swapped, lists)
    assert m.top1_agreement == 0.5 and m.top3_agreement == pytest.approx((2 / 3 + 1) / 2)
    verdict = parity.judge(m, parity.SCORE_THRESHOLDS[Precision.FP32])
    assert not verdict.passed and any("score_max_abs_diff" in f and "above" in f for f in verdict.failures)


def test_compare_sparse_top_terms():
    rng = np.random.default_rng(0)
    ref = np.maximum(rng.normal(size=(30, 200)), 0)
    m = parity.compare_sparse(ref, ref.copy())
    assert m.top_terms_overlap_at_10 == 1.0 and m.cosine_min == pytest.approx(1.0)
    cand = ref.copy()
    top = np.argsort(-ref, axis=1)[:, :5]
    np.put_along_axis(cand, top, 0.0, axis=1)  # lose each text's five heaviest terms
    assert parity.compare_sparse(ref, cand).top_terms_overlap_at_10 == pytest.approx(0.5)
    empty = np.zeros((2, 5))
    assert parity.compare_sparse(empty, empty).top_terms_overlap_at_10 == 1.0


def test_kind_thresholds_and_their_overrides():
    fp32 = parity.SCORE_THRESHOLDS[Precision.FP32]
    assert fp32.override(top1_agreement=None).top1_agreement is None
    with pytest.raises(UsageError, match="cannot be switched off"):
        fp32.override(score_spearman=None)
    with pytest.raises(UsageError, match="does not apply to cross-encoder"):
        fp32.override(cosine_min=0.9)
    sparse = parity.thresholds_for([variants.BY_ID["onnx"]], {"*": {"top_terms_overlap_at_10": 0.5}}, "sparse-encoder")
    assert sparse["onnx"].top_terms_overlap_at_10 == 0.5 and sparse["onnx"].cosine_min == 0.9999
    with pytest.raises(UsageError, match="does not apply to sentence-transformer"):
        parity.thresholds_for([variants.BY_ID["onnx"]], {"*": {"top1_agreement": 0.5}})
    assert parity.thresholds_from_dict("cross-encoder", fp32.to_dict()) == fp32


@pytest.mark.parametrize("kind", OTHER_KINDS, ids=[k.value for k in OTHER_KINDS])
def test_st_layout_start_line_serves_the_kind_and_server_layouts_refuse_it(artifacts, kind, tmp_path):
    """A server layout pools one sentence embedding: a reranker or sparse artifact is refused there (exit 2,
    nothing written); its st layout's start line loads it with its own class and runs."""
    import shlex

    art, _ = artifacts(kind)
    refused = invoke("package", str(art), "--variant", "onnx", "--layout", "tei", "--out", str(tmp_path / "tei"))
    assert refused.code == 2 and f"holds a {kind.value} model" in refused.err and "--layout st" in refused.err
    assert not (tmp_path / "tei").exists()
    res = invoke("package", str(art), "--variant", "onnx", "--layout", "st", "--out", str(tmp_path / "st"), "--json")
    assert res.code == 0, res.err
    start = json.loads(res.out)["start"]
    argv = shlex.split(start.split("  # ")[0])
    proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()
