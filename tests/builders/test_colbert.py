"""ColBERT (late interaction) as PyLate saves it: export, gate, verify in a fresh process, runtime, a fault.

One tiny PyLate model (2-layer BERT, hidden 32, Dense to 16, [Q]/[D] prefixes, query_length 12, punctuation
in the vocabulary so the document skiplist removes real tokens) is exported once (onnx + openvino) through
the CLI; the read-only tests share it. PyLate is the reference throughout. ``exporter verify`` re-gates in
a fresh process once, on a copy with a seeded fault in the ONNX graph (the slow test).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from exporter import kinds
from exporter import manifest as mf
from exporter.quality import kind_metrics
from exporter.quality import parity_late as parity
from exporter.runtime import colbert as rt
from tests.artifact_faults import copy_artifact, scale_initializer
from tests.cli_runner import invoke
from tests.tiny_models import build_tiny_colbert

EXERCISED_SHAPES = ("colbert-pylate",)
QUERIES = ["hello world", "what is the quick brown fox?", ""]
DOCUMENTS = ["The cat sat, on the mat.", "rain! sun; cloud: river...", "a", "the lazy dog " * 20]


@pytest.fixture(scope="module")
def colbert(tmp_path_factory):
    """(source, artifact): the tiny ColBERT exported with onnx and openvino."""
    root = tmp_path_factory.mktemp("colbert")
    src = build_tiny_colbert(root / "src")
    res = invoke("export", str(src), "--variants", "onnx,openvino", "--out", str(root / "art"))
    assert res.code == 0, res.err + res.out
    return src, root / "art"


def _pylate(src: Path):
    from exporter.builders.export_onnx_colbert import load_reference

    return load_reference(src)


def test_export_records_the_kind_and_gates_token_vectors_and_maxsim(colbert):
    src, art = colbert
    assert kinds.kind_of_folder(src) is kinds.ModelKind.COLBERT  # stated by PyLate's own config keys
    manifest = mf.load(art)
    assert manifest["model"]["kind"] == "colbert"
    assert manifest["model"]["colbert"]["query_length"] == 12
    by_id = {v["id"]: v for v in manifest["variants"]}
    assert set(by_id) == {"onnx", "openvino"}
    for v in by_id.values():
        p = v["parity"]
        assert p["passed"], p["failures"]
        assert p["token_cosine_min"] >= 0.9999 and p["maxsim_spearman"] >= 0.999
        assert p["n_pairs"] == 320 and p["n_lists"] == 32 and p["n_tokens"] > p["n"]
        assert p["strata"] and all(e["token_cosine_min"] >= 0.9999 for e in p["strata"].values())  # per stratum


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_runtime_serves_pylates_token_vectors(colbert, backend):
    src, art = colbert
    reference = _pylate(src)
    served = rt.load(art, backend=backend)
    for texts, is_query in ((QUERIES, True), (DOCUMENTS, False)):
        want = reference.encode(texts, is_query=is_query, convert_to_numpy=True, show_progress_bar=False)
        got = served.encode(texts, is_query=is_query, batch_size=2)
        for w, g in zip(want, got, strict=True):
            assert g.shape == np.asarray(w).shape
            assert float((np.asarray(w, dtype=np.float64) * g).sum(axis=1).min()) > 0.9999
    queries = served.encode(QUERIES, is_query=True)
    assert {len(q) for q in queries} == {12}  # expanded with mask tokens to query_length, the empty one too
    ids, att, keep = served.tokenize(["the cat sat, on the mat."], is_query=False)
    assert keep.sum() == att.sum() - 2  # "," and "." are attended but skiplisted


@pytest.mark.slow
def test_fresh_process_gate_passes_openvino_and_fails_a_perturbed_onnx_with_exit_3(colbert, tmp_path):
    """``exporter verify`` re-gates both variants against PyLate in a fresh process (one run, for time): the
    OpenVINO IR passes; the ONNX graph of a build that got the Dense projection wrong (one output dimension
    of the traced weight 10% off; integrity passes, the manifest re-records the file) fails with exit 3."""
    art = copy_artifact(colbert[1], tmp_path / "art")
    scale_initializer(art, "onnx", (32, 16), 1.1, column=0)  # the traced Dense weight [hidden, dim]
    res = invoke("verify", str(art))
    assert res.code == 3, res.out + res.err
    lines = {line.split()[1]: line for line in res.out.splitlines() if len(line.split()) > 1}
    assert lines["openvino"].startswith("ok") and "token cos min" in lines["openvino"], res.out
    assert not lines["onnx"].startswith("ok") and "token_cosine_min" in res.out + res.err, res.out


def test_late_interaction_metrics_see_a_missing_token_and_a_reordered_ranking():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 5, 4))
    ref /= np.linalg.norm(ref, axis=-1, keepdims=True)
    ref[3:, 4] = 0.0  # documents have one padding row
    pairs, lists = [(0, 3), (0, 4), (0, 5), (1, 3), (1, 4), (1, 5)], [[0, 1, 2], [3, 4, 5]]
    same = parity.compare_late_interaction(ref, ref.copy(), pairs, lists)
    assert same.token_cosine_min == pytest.approx(1.0) and same.maxsim_spearman == pytest.approx(1.0)
    dropped = ref.copy()
    dropped[3, 1] = 0.0  # a document token the candidate does not serve (a skiplist difference)
    assert parity.compare_late_interaction(ref, dropped, pairs, lists).token_cosine_min == 0.0
    texts = [f"text {'x' * (40 - i)}" for i in range(40)]  # longest first: the probe reorders them
    probe = kind_metrics.late_interaction_probe(texts, [f"s{i % 2}" for i in range(40)])
    assert [probe.items[r][1] for r in range(40)] != texts and len(probe.strata) == len(probe.items) == 40
    assert all(probe.strata[r] == f"s{texts.index(probe.items[r][1]) % 2}" for r in range(40))
    labelled = parity.compare_late_interaction(ref, dropped, pairs, lists, ["a", "a", "a", "b", "b", "b"])
    assert labelled.strata["b"]["token_cosine_min"] == 0.0 and labelled.strata["b"]["worst_text_index"] == 3
    assert labelled.strata["a"]["token_cosine_min"] == pytest.approx(1.0)
    assert len(probe.lists) == 20 and all(len(x) == 10 for x in probe.lists)
    assert all(probe.items[q][0] == "query" and probe.items[d][0] == "document" for q, d in probe.pair_rows)
    assert probe == kind_metrics.late_interaction_probe(texts, [f"s{i % 2}" for i in range(40)])  # deterministic
    assert json.dumps(same.to_dict())


def test_st_layout_start_line_serves_token_vectors_and_server_layouts_refuse(colbert, tmp_path):
    import shlex
    import subprocess
    import sys

    _, art = colbert
    refused = invoke("package", str(art), "--variant", "onnx", "--layout", "tei", "--out", str(tmp_path / "tei"))
    assert refused.code == 2 and "holds a colbert model" in refused.err and not (tmp_path / "tei").exists()
    res = invoke(
        "package", str(art), "--variant", "openvino", "--layout", "st", "--out", str(tmp_path / "st"), "--json"
    )
    assert res.code == 0, res.err
    argv = shlex.split(json.loads(res.out)["start"])
    proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith("(") and proc.stdout.strip().endswith(")")  # a token-vector array's shape
