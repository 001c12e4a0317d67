"""Shared by the consumer and layout tests: transformers.js installed with npm into the repo's git-ignored
cache, and one real export (onnx + openvino) of the tiny model per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.quality import consumers, parity
from tests import hub_fixtures as hf

REPO = Path(__file__).resolve().parent.parent
NODE_CACHE = REPO / ".cache" / "transformers-js"  # git-ignored
PINNED = f"{hf.TINY_REPO}@{hf.TINY_SHA}"
WORDS = "the quick brown fox jumps over lazy dog hello world cat sat mat rain sun cloud river city train".split()
FP32 = parity.defaults("sentence-transformer", "fp32")
ONNX = {"id": "onnx", "precision": "fp32", "load": {"backend": "onnx", "file_name": "onnx/model.onnx"}}


def short_texts(n: int = 40) -> list[str]:
    """Texts well under the tiny model's 32-token limit (over-long ones are tested on their own)."""
    import random

    rng = random.Random(1)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """transformers.js installed from the npm registry into the repo's git-ignored cache (once)."""
    if shutil.which("npm") is None:
        pytest.fail("npm is missing: run .ci/install-system-deps (it installs Node and npm).")
    from filelock import FileLock

    NODE_CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(NODE_CACHE) + ".lock"):  # one install when test workers (or checkouts) ask at once
        if not (NODE_CACHE / "node_modules" / "@huggingface" / "transformers").is_dir():
            cmd = consumers.install_transformers_js_hint(NODE_CACHE).split(" (")[0].split()
            proc = subprocess.run([*cmd, "--no-audit", "--no-fund"], capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, proc.stderr[-2000:]
    return NODE_CACHE


@pytest.fixture(scope="session")
def consumer_artifact(tiny_model_dir, tmp_path_factory, node_modules) -> Path:
    """One real export (onnx + openvino, every consumer recorded) of the tiny model through the Hub cache, on
    short probe texts."""
    home = tmp_path_factory.mktemp("hf-consumers")
    probe = tmp_path_factory.mktemp("probe") / "probe.txt"
    probe.write_text("\n".join(short_texts(48)) + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("art") / "tiny"
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"}
    env[consumers.NODE_MODULES_ENV] = str(node_modules)
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HOME", str(home))
    mp.setenv("HF_HUB_CACHE", str(home / "hub"))
    hf.seed_tiny(tiny_model_dir)
    mp.undo()
    cmd = [sys.executable, "-m", "exporter", "export", PINNED, "--out", str(out), "--variants", "onnx,openvino"]
    cmd += ["--consumers", "all"]
    proc = subprocess.run([*cmd, "--probe", str(probe)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture
def node_env(node_modules, monkeypatch):
    """Point exporter.quality.consumers (and the verify process it starts) at the installed transformers.js."""
    monkeypatch.setenv(consumers.NODE_MODULES_ENV, str(node_modules))
