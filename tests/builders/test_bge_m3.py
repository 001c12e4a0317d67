"""bge-m3 (FlagEmbedding's three heads): detection, export, per-head gate, the runtime in a fresh process, bad heads.

One tiny bge-m3-shaped model (2-layer XLM-RoBERTa, hidden 32, Pooling[cls] -> Normalize, ``sparse_linear.pt`` and
``colbert_linear.pt`` beside it) is exported once (onnx + openvino) through the CLI; the read-only tests share it.
The runtime's outputs are checked in a fresh process against FlagEmbedding's formulas transcribed here from its
code (``m3.py`` / ``modeling.py``), independent of the exporter's own torch reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from exporter import kinds, runtime
from exporter import manifest as mf
from exporter.errors import UsageError
from exporter.quality import kind_metrics, parity, parity_m3
from tests.cli_runner import invoke
from tests.tiny_models import build_tiny_bge_m3

EXERCISED_SHAPES = ("bge-m3",)
REPO = Path(__file__).resolve().parents[2]
TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog, the fox!", "", "cat " * 40, "a"]


@pytest.fixture(scope="module")
def m3(tmp_path_factory):
    """(source, artifact): the tiny bge-m3 exported with onnx and openvino."""
    root = tmp_path_factory.mktemp("m3")
    src = build_tiny_bge_m3(root / "src")
    res = invoke("export", str(src), "--variants", "onnx,openvino", "--out", str(root / "art"))
    assert res.code == 0, res.err + res.out
    return src, root / "art"


def test_export_records_the_heads_their_hashes_and_gates_each_head(m3):
    src, art = m3
    assert kinds.kind_of_folder(src) is kinds.ModelKind.BGE_M3  # stated by the two head files
    manifest = mf.load(art)
    model = manifest["model"]
    assert model["kind"] == "bge-m3" and model["shape"]["support_rows"] == ["bge-m3"]
    heads = model["bge_m3"]["heads"]
    assert heads["sparse"]["file"] == "sparse_linear.pt" and heads["colbert"]["file"] == "colbert_linear.pt"
    assert heads["colbert"]["dim"] == 32 and heads["dense"]["dim"] == 32
    files = {f["path"]: f["sha256"] for f in manifest["source"]["files"]}
    for name in ("sparse_linear.pt", "colbert_linear.pt"):  # hashed like every source file; no pickle weights
        assert files[name] == hashlib.sha256((src / name).read_bytes()).hexdigest()
    assert manifest["source"]["weights_format"] == "safetensors"
    by_id = {v["id"]: v for v in manifest["variants"]}
    assert set(by_id) == {"onnx", "openvino"}
    for v in by_id.values():
        p = v["parity"]
        assert p["passed"], p["failures"]
        # dense, sparse and ColBERT heads each judged by their own gates
        assert {"cosine_min", "top_terms_overlap_at_10", "lexical_spread_err_max", "token_cosine_min"} <= set(
            p["threshold"]
        )
        assert p["cosine_min"] >= 0.9999 and p["neighbour_agreement_at_10"] >= 0.99
        assert p["top_terms_overlap_at_10"] >= 0.99 and p["lexical_spread_err_max"] <= 1e-3
        assert p["lexical_terms_reference"] > 1 and p["lexical_terms_candidate"] == p["lexical_terms_reference"]
        assert p["token_cosine_min"] >= 0.9999 and p["maxsim_spearman"] >= 0.999 and p["n_pairs"] == 320
        assert p["strata"] and all(e["token_cosine_min"] >= 0.9999 for e in p["strata"].values())
    assert not list(art.glob("*.pt"))  # the heads are inside the graph, not shipped as pickles
    with pytest.raises(UsageError, match=r"bge-m3 model.*exporter\.runtime\.bge_m3\.load"):
        runtime.load(art)  # the sentence-embedding runtime names the one that serves it


_FRESH = """
import json, sys
from exporter.runtime import bge_m3
art, texts, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
results = {}
for backend in ("onnx", "openvino"):
    enc = bge_m3.load(art, backend=backend)
    got = enc.encode(texts, batch_size=2)
    results[backend] = {
        "dense": got["dense_vecs"].tolist(),
        "lexical": got["lexical_weights"],
        "colbert": [v.tolist() for v in got["colbert_vecs"]],
    }
results["torch_imported"] = "torch" in sys.modules
json.dump(results, open(out, "w"))
"""


def _flagembedding(src: Path, texts: list[str]) -> list[tuple]:
    """FlagEmbedding's M3 inference on one text at a time (no padding), transcribed from its code: the dense
    CLS state normalised, ``relu(sparse_linear(h))`` kept per token id by max without CLS/EOS/PAD/UNK, and
    ``normalize(colbert_linear(h[:, 1:]) * mask[:, 1:])`` for the tokens but CLS."""
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(src), AutoModel.from_pretrained(src).eval()
    sparse, colbert = torch.nn.Linear(32, 1), torch.nn.Linear(32, 32)
    sparse.load_state_dict(torch.load(src / "sparse_linear.pt", map_location="cpu", weights_only=True))
    colbert.load_state_dict(torch.load(src / "colbert_linear.pt", map_location="cpu", weights_only=True))
    specials = ("cls_token", "eos_token", "pad_token", "unk_token")
    unused = {tok.convert_tokens_to_ids(tok.special_tokens_map[t]) for t in specials if t in tok.special_tokens_map}
    out = []
    with torch.no_grad():
        for text in texts:
            f = tok([text], truncation=True, max_length=32, return_tensors="pt")
            h = model(**f, return_dict=True).last_hidden_state
            lexical: dict[str, float] = {}
            for w, idx in zip(torch.relu(sparse(h)).squeeze(-1)[0].tolist(), f["input_ids"][0].tolist(), strict=True):
                if idx not in unused and w > 0 and w > lexical.get(str(idx), 0):
                    lexical[str(idx)] = w
            vecs = F.normalize(colbert(h[:, 1:]) * f["attention_mask"][:, 1:][:, :, None].float(), dim=-1)
            out.append((F.normalize(h[:, 0], dim=-1)[0].numpy(), lexical, vecs[0].numpy()))
    return out


def test_runtime_serves_flagembeddings_three_outputs_in_a_fresh_process(m3, tmp_path):
    src, art = m3
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_FRESH), str(art), json.dumps(TEXTS), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(out.read_text())
    assert served.pop("torch_imported") is False  # served without torch
    want = _flagembedding(src, TEXTS)
    for backend, got in served.items():
        for i, (dense, lexical, colbert) in enumerate(want):
            assert float(np.dot(got["dense"][i], dense)) > 0.9999, (backend, i)
            assert set(got["lexical"][i]) == set(lexical), (backend, i)
            assert all(abs(got["lexical"][i][t] - w) < 1e-4 for t, w in lexical.items()), (backend, i)
            vecs = np.asarray(got["colbert"][i]).reshape(-1, 32)
            assert vecs.shape == colbert.shape, (backend, i)  # every token but CLS, padding dropped
            assert (vecs * colbert).sum(axis=1).min() > 0.9999, (backend, i)
    assert len(want[2][1]) == 0 and want[2][2].shape == (1, 32)  # "": no lexical weight, one vector (EOS)
    assert len(want[3][2]) == 31  # truncated at max_seq_length 32


@pytest.mark.parametrize(
    "fault, message",
    [
        (lambda p: torch.save(torch.nn.Linear(32, 32), p), "is not a state dict of tensors"),
        (lambda p: torch.save(torch.nn.Linear(16, 32).state_dict(), p), "has weight [32, 16]"),
        (lambda p: torch.save({"weight": torch.zeros(32, 32)}, p), "is not a plain Linear state dict"),
    ],
    ids=["pickled-module", "wrong-shape", "no-bias"],
)
def test_a_head_that_is_not_a_plain_state_dict_is_one_line_and_exit_2(m3, tmp_path, fault, message):
    import shutil

    src = shutil.copytree(m3[0], tmp_path / "src")
    fault(src / "colbert_linear.pt")
    res = invoke("export", str(src), "--variants", "onnx", "--out", str(tmp_path / "art"))
    assert res.code == 2, res.out + res.err
    error = [line for line in res.err.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and message in error[0] and "colbert_linear.pt" in error[0], res.err
    assert not (tmp_path / "art").exists()


def test_without_both_heads_the_folder_is_a_plain_sentence_transformer(m3, tmp_path):
    import shutil

    src = shutil.copytree(m3[0], tmp_path / "src", ignore=shutil.ignore_patterns("colbert_linear.pt"))
    assert kinds.kind_of_folder(src) is kinds.ModelKind.SENTENCE_TRANSFORMER


def test_each_heads_metrics_fail_on_its_own_fault():
    """Packed outputs (``kind_metrics.m3_outputs`` layout) with one head perturbed at a time: only that head's
    gates fail."""
    rng = np.random.default_rng(0)
    n, width, dim = 40, 6, 8
    ref = np.zeros((n, 1 + width, dim + 2))
    ref[:, 0, :dim] = rng.normal(size=(n, dim))
    vecs = rng.normal(size=(n, width, dim))
    ref[:, 1:, :dim] = vecs / np.linalg.norm(vecs, axis=-1, keepdims=True)
    ref[:, 1:, -2] = np.arange(width) + 5  # token ids
    ref[:, 1:, -1] = rng.uniform(0.1, 1.0, size=(n, width))  # weights
    probe = kind_metrics.m3_probe([f"text {'x' * i}" for i in range(n)])
    gates = parity.defaults("bge-m3")

    def failed(cand) -> set[str]:
        metrics = parity_m3.compare_m3(ref, cand, probe.pair_rows, probe.lists)
        return {f.split()[0] for f in parity.judge(metrics, gates).failures}

    assert failed(ref.copy()) == set()
    lexical = ref.copy()
    lexical[:, 1:, -1] *= rng.uniform(0.5, 1.5, size=(n, width))  # the weights wrong, ids right
    assert failed(lexical) == {"lexical_spread_err_max"}  # the same ids: the top terms still agree
    ids = ref.copy()
    ids[:, 1:, -2] += 100  # the weights on other token ids
    assert {"lexical_spread_err_max", "top_terms_overlap_at_10"} == failed(ids)
    dense = ref.copy()
    dense[:, 0, :dim] += rng.normal(size=(n, dim))
    assert "cosine_min" in failed(dense) and not failed(dense) & {"token_cosine_min", "lexical_spread_err_max"}
    colbert = ref.copy()
    colbert[:, 1:, :dim] = np.roll(colbert[:, 1:, :dim], 1, axis=1)  # token vectors out of place
    assert "token_cosine_min" in failed(colbert) and not failed(colbert) & {"cosine_min", "lexical_spread_err_max"}


@pytest.mark.slow
def test_fresh_process_gate_fails_only_the_perturbed_sparse_head_with_exit_3(m3, tmp_path):
    """``exporter verify`` re-gates both variants against the torch reference in a fresh process: the OpenVINO
    IR passes; an ONNX graph whose sparse head is 1.5x off (the traced Linear(hidden, 1) weight; integrity passes,
    the manifest re-records the file) fails its two lexical gates with exit 3, while its dense and ColBERT gates
    pass."""
    from tests.artifact_faults import copy_artifact, scale_initializer

    art = copy_artifact(m3[1], tmp_path / "art")
    scale_initializer(art, "onnx", (32, 1), 1.5)
    res = invoke("verify", str(art))
    assert res.code == 3, res.out + res.err
    lines = {line.split()[1]: line for line in res.out.splitlines() if len(line.split()) > 1}
    assert lines["openvino"].startswith("ok") and "lexical err/spread" in lines["openvino"], res.out
    assert not lines["onnx"].startswith("ok"), res.out
    failed = {line.split()[0] for line in res.out.splitlines() if " the threshold " in line}
    assert failed == {"lexical_spread_err_max", "top_terms_overlap_at_10"}, res.out  # the sparse head's gates only


def test_st_layout_start_line_serves_three_heads_and_server_layouts_refuse(m3, tmp_path):
    import shlex

    _, art = m3
    refused = invoke("package", str(art), "--variant", "onnx", "--layout", "fastembed", "--out", str(tmp_path / "fe"))
    assert refused.code == 2 and "holds a bge-m3 model" in refused.err and not (tmp_path / "fe").exists()
    res = invoke("package", str(art), "--variant", "onnx", "--layout", "st", "--out", str(tmp_path / "st"), "--json")
    assert res.code == 0, res.err
    argv = shlex.split(json.loads(res.out)["start"])
    assert "# torch-free" not in argv  # its own runtime is the line
    proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['colbert_vecs', 'dense_vecs', 'lexical_weights']"
