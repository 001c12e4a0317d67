"""A serving host installs the core package alone (plus ``[openvino]``): a clean virtual environment gets
no torch, ``exporter --help`` and ``verify --integrity`` run, and a copied real artifact serves the same
vectors as sentence-transformers from its ONNX graph and its OpenVINO IR (pooled by the runtime)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.consumer_fixtures import short_texts

REPO = Path(__file__).resolve().parent.parent
SERVE = """
import json, sys
from pathlib import Path
import numpy as np
from exporter import runtime
art, texts = Path(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for backend, name in (("onnx", "onnx/model.onnx"), ("openvino", "openvino/openvino_model.xml")):
    enc = runtime.load(art, name, backend)
    out[backend] = {"vectors": enc.encode(texts).tolist(), "in_graph": enc.pooling_in_graph}
heavy = [m for m in ("torch", "transformers", "sentence_transformers", "optimum") if m in sys.modules]
print(json.dumps({"heavy": heavy, **out}))
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_core_install_serves_a_real_artifact_without_torch(consumer_artifact, tmp_path):
    from sentence_transformers import SentenceTransformer

    src = tmp_path / "src"  # a clean copy of the package source: no build files land in the repo
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "exporter", src / "exporter", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py, exe = venv / "bin" / "python", venv / "bin" / "exporter"
    _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{src}[openvino]"])

    listed = {line.split("==")[0].lower() for line in _run([str(py), "-m", "pip", "freeze"]).stdout.split()}
    assert not listed & {"torch", "transformers", "sentence-transformers", "optimum", "nncf"}, listed
    assert _run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch'))"]).stdout.strip() == "None"
    assert "verify" in _run([str(exe), "--help"]).stdout
    _run(
        [str(py), "-c", "import exporter.ship.registry, exporter.ship.signing, exporter.runtime"]
    )  # pull's and serving's code
    assert "--verify-key" in _run([str(exe), "pull", "--help"]).stdout

    art = tmp_path / "served"  # what a serving host has after a copy (or a pull)
    shutil.copytree(consumer_artifact, art)
    report = json.loads(_run([str(exe), "verify", str(art), "--integrity", "--json"]).stdout)
    assert report["ok"] and report["integrity"]["status"] == "passed" and report["variants"] == []

    texts = short_texts(16)
    served = json.loads(_run([str(py), "-c", textwrap.dedent(SERVE), str(art), json.dumps(texts)]).stdout)
    assert served["heavy"] == []
    assert served["onnx"]["in_graph"] is True and served["openvino"]["in_graph"] is False  # the IR is pooled here
    want = SentenceTransformer(str(consumer_artifact), backend="onnx").encode(texts)
    for backend in ("onnx", "openvino"):
        got = np.asarray(served[backend]["vectors"])
        cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        assert cos.min() >= 0.9999, (backend, cos.min())

    (art / "onnx" / "model.onnx").write_bytes(b"tampered")
    proc = subprocess.run([str(exe), "verify", str(art), "--integrity"], capture_output=True, text=True)
    assert proc.returncode == 4 and "onnx/model.onnx" in proc.stderr + proc.stdout
