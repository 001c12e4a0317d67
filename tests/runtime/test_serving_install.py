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

REPO = Path(__file__).resolve().parents[2]
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


def _clean_venv_with_core(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(python, exporter, source copy): the README's torch-free install (`pip install "./[openvino]"`, run in
    a clean copy of the package source) in a fresh venv."""
    src = tmp_path / "src"  # a clean copy of the package source: no build files land in the repo
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "exporter", src / "exporter", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py, exe = venv / "bin" / "python", venv / "bin" / "exporter"
    _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "./[openvino]"], cwd=src)
    return py, exe, src


def _wheel_files(py: Path, src: Path, tmp_path: Path) -> set[str]:
    import zipfile

    dist = tmp_path / "dist"
    _run(
        [str(py), "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(dist), "."], cwd=src
    )
    (wheel,) = dist.glob("exporter-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


@pytest.mark.slow
def test_core_install_serves_a_real_artifact_without_torch(consumer_artifact, node_modules, tmp_path):
    """The serving host's jobs, in a clean venv from the built package, without torch, onnx, optimum or
    tritonclient: verify --integrity, verify against the recorded reference vectors (runtime and
    transformers.js), package --layout for each server, pull; every package-data file is in the wheel."""
    import os

    from sentence_transformers import SentenceTransformer

    from tests.registry_server import running_registry

    py, exe, src = _clean_venv_with_core(tmp_path)
    listed = {line.split("==")[0].lower() for line in _run([str(py), "-m", "pip", "freeze"]).stdout.split()}
    assert not listed & {"torch", "transformers", "sentence-transformers", "optimum", "nncf", "onnx", "tritonclient"}
    assert _run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch'))"]).stdout.strip() == "None"
    data = {p.relative_to(REPO).as_posix() for p in (REPO / "exporter").rglob("*") if p.is_file()}
    data = {p for p in data if not p.endswith((".py", ".pyc")) and "__pycache__" not in p}
    assert data and data <= _wheel_files(py, src, tmp_path), data - _wheel_files(py, src, tmp_path)
    assert "verify" in _run([str(exe), "--help"]).stdout

    art = tmp_path / "served"  # what a serving host has after a copy
    shutil.copytree(consumer_artifact, art)
    report = json.loads(_run([str(exe), "verify", str(art), "--integrity", "--json"]).stdout)
    assert report["ok"] and report["integrity"]["status"] == "passed" and report["variants"] == []

    env = {**os.environ, "EXPORTER_NODE_MODULES": str(node_modules)}
    env.pop("HF_HUB_OFFLINE", None)  # a serving host has no Hub cache and may have no network: never asked
    res = _run([str(exe), "verify", str(art), "--consumers", "transformers.js", "--json"], env=env)
    report = json.loads(res.stdout)
    assert report["ok"] and report["source"]["reference"] == "recorded", report
    for case in report["variants"]:
        assert case["status"] == "passed" and "recorded at export" in case["message"], case
        rows = {r["consumer"]: r["status"] for r in case["parity"]["consumers"]}
        assert rows == (
            {"runtime": "passed", "transformers.js": "passed"} if case["name"] == "onnx" else {"runtime": "passed"}
        )

    for layout, variant in (("st", "onnx"), ("st", "openvino"), ("tei", "onnx"), ("fastembed", "onnx"),
                            ("transformers.js", "onnx"), ("triton", "onnx")):  # fmt: skip
        out = tmp_path / "layouts" / f"{layout}-{variant}"
        res = _run(
            [str(exe), "package", str(art), "--variant", variant, "--layout", layout, "--out", str(out)], env=env
        )
        assert "gate: " in res.stdout and "start: " in res.stdout, res.stdout
        assert _run([str(exe), "verify", str(out), "--integrity"]).returncode == 0
    assert (
        "gate: skipped fastembed"
        in _run(  # not installed on this host: said, not failed
            [str(exe), "package", str(art), "--variant", "onnx", "--layout", "fastembed", "--out", str(tmp_path / "fe")]
        ).stdout
    )

    texts = short_texts(16)
    served = json.loads(_run([str(py), "-c", textwrap.dedent(SERVE), str(art), json.dumps(texts)]).stdout)
    assert served["heavy"] == []
    assert served["onnx"]["in_graph"] is True and served["openvino"]["in_graph"] is False  # the IR is pooled here
    want = SentenceTransformer(str(consumer_artifact), backend="onnx").encode(texts)
    for backend in ("onnx", "openvino"):
        got = np.asarray(served[backend]["vectors"])
        cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        assert cos.min() >= 0.9999, (backend, cos.min())

    with running_registry(tmp_path / "registry") as server:
        ref = f"oci://{server.url.split('://')[1]}/team/tiny:v1"
        _run(
            [
                sys.executable,
                "-m",
                "exporter",
                "publish",
                str(consumer_artifact),
                ref,
                "--variants",
                "onnx",
                "--insecure",
            ]
        )
        pulled = tmp_path / "pulled"
        _run([str(exe), "pull", ref, str(pulled), "--insecure"])
    assert _run([str(exe), "verify", str(pulled), "--integrity"]).returncode == 0
    enc = _run([str(py), "-c", f"from exporter import runtime; print(runtime.load('{pulled}').encode(['hi']).shape)"])
    assert enc.stdout.strip() == "(1, 32)"

    (art / "onnx" / "model.onnx").write_bytes(b"tampered")
    proc = subprocess.run([str(exe), "verify", str(art), "--integrity"], capture_output=True, text=True)
    assert proc.returncode == 4 and "onnx/model.onnx" in proc.stderr + proc.stdout
