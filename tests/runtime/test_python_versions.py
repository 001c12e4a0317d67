"""The serving side on every supported Python: where Python 3.12 or 3.13 is installed (pyenv here), the core
package with ``[openvino]`` installs into a clean venv, ``exporter --help`` and ``verify --integrity`` run, and
the torch-free runtime serves the same vectors from a real artifact's ONNX graph and OpenVINO IR as it does on
the suite's own Python. The export stack is tested on 3.11 (its torch wheel is the 3.11 CPU build here).

The venv's dependencies are cached under ``~/.cache/exporter-tests/`` by the pyproject's hash; the package itself is
reinstalled from a clean copy of the source on every run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.consumer_fixtures import short_texts

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ("3.12", "3.13")
SERVE = """
import json, sys
from pathlib import Path
from exporter import runtime
art, texts = Path(sys.argv[1]), json.loads(sys.argv[2])
out = {"python": "%d.%d" % sys.version_info[:2], "torch": "torch" in sys.modules}
for backend, name in (("onnx", "onnx/model.onnx"), ("openvino", "openvino/openvino_model.xml")):
    out[backend] = runtime.load(art, name, backend).encode(texts).tolist()
print(json.dumps(out))
"""


def _interpreter(version: str) -> str | None:
    """A working ``python<version>``: on PATH, or in pyenv's versions folder (its shims need a selected version)."""
    roots = [Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"]
    found = [shutil.which(f"python{version}")]
    found += [str(p / "bin" / "python") for root in roots if root.is_dir() for p in sorted(root.glob(f"{version}.*"))]
    for exe in filter(None, found):
        ok = subprocess.run([exe, "-c", "import sys, venv"], capture_output=True).returncode == 0
        if ok:
            return exe
    return None


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
    return proc


def _venv(python: str, version: str, src: Path) -> Path:
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "exporter-tests" / "pythons"
    venv = cache / f"{version}-{key}"  # outside the checkout, so a fresh clone on this machine reuses it
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not (venv / ".deps-installed").exists():
        shutil.rmtree(venv, ignore_errors=True)
        _run([python, "-m", "venv", str(venv)])
        _run([*pip, f"{src}[openvino]"])
        (venv / ".deps-installed").touch()
    _run([*pip, "--no-deps", "--force-reinstall", str(src)])  # this checkout's code, not the cached one
    return venv


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_the_serving_side_runs_on_newer_pythons(version, consumer_artifact, tmp_path):
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "exporter", src / "exporter", ignore=shutil.ignore_patterns("__pycache__"))
    venv = _venv(python, version, src)
    exe = str(venv / "bin" / "exporter")

    assert "verify" in _run([exe, "--help"]).stdout
    art = tmp_path / "served"
    shutil.copytree(consumer_artifact, art)
    report = json.loads(_run([exe, "verify", str(art), "--integrity", "--json"]).stdout)
    assert report["ok"] and report["integrity"]["status"] == "passed"

    texts = short_texts(16)
    served = json.loads(
        _run([str(venv / "bin" / "python"), "-c", textwrap.dedent(SERVE), str(art), json.dumps(texts)]).stdout
    )
    assert served["python"] == version and served["torch"] is False
    from exporter import runtime

    for backend, name in (("onnx", "onnx/model.onnx"), ("openvino", "openvino/openvino_model.xml")):
        here = runtime.load(art, name, backend).encode(texts)
        there = np.asarray(served[backend])
        cos = (here * there).sum(1) / (np.linalg.norm(here, axis=1) * np.linalg.norm(there, axis=1))
        assert cos.min() >= 0.99999, (version, backend, cos.min())

    (art / "onnx" / "model.onnx").write_bytes(b"tampered")
    proc = subprocess.run([exe, "verify", str(art), "--integrity"], capture_output=True, text=True)
    assert proc.returncode == 4, proc.stderr
