"""Serving exported tiny models in a fresh process and comparing with torch: the check ``test_shapes`` and
``test_families`` share. ``FreshServer.serve`` loads every built variant through sentence-transformers and
every ONNX graph through the torch-free runtime, without and with each of the model's prompts (at its
``truncate_dim``), in ONE interpreter started for the session (not the one that exported them: nothing the
export loaded or patched is there), which imports torch and sentence-transformers once for both modules;
``check_fresh`` compares one model's results with torch."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.builders.test_onnx import TEXTS

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, sys
from sentence_transformers import SentenceTransformer
from exporter import runtime
for line in sys.stdin:  # one request per line: {"jobs", "texts", "out"}; answered with one line when written
    request = json.loads(line)
    results = {}
    for job in request["jobs"]:
        kw = {"truncate_dim": job["truncate_dim"]} if job["truncate_dim"] else {}
        for prompt in job["prompts"]:
            for v in job["variants"]:
                load = v["load"]
                model_kwargs = {"file_name": load["file_name"], **load.get("model_kwargs", {})}
                model = SentenceTransformer(
                    job["art"], backend=load["backend"], local_files_only=True, model_kwargs=model_kwargs, **kw
                )
                key = f"{job['name']}|{v['id']}|st|{prompt}"
                results[key] = model.encode(request["texts"], prompt=prompt, batch_size=3).tolist()
                if load["backend"] == "onnx":
                    enc = runtime.load(job["art"], file_name=load["file_name"])
                    key = f"{job['name']}|{v['id']}|runtime|{prompt}"
                    results[key] = enc.encode(request["texts"], 3, prompt=prompt).tolist()
    json.dump(results, open(request["out"], "w"))
    print(request["out"], flush=True)
"""


class FreshServer:
    """``SCRIPT`` in one interpreter, started on the first request and kept for the session."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.stderr = tempfile.TemporaryFile(mode="w+")

    def serve(self, built: dict[str, dict], root: Path) -> dict[str, np.ndarray]:
        """``name|variant|st or runtime|prompt`` -> embeddings of ``TEXTS``, for every model in ``built``
        (name -> {src, art, manifest, truncate_dim?})."""
        if self.proc is None:
            pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": self.stderr}
            self.proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO, text=True, **pipes)
        jobs = [
            {
                "name": name,
                "art": str(b["art"]),
                "truncate_dim": b.get("truncate_dim"),
                "prompts": ["", *model_prompts(b["src"])],
                "variants": [{"id": v["id"], "load": v["load"]} for v in b["manifest"]["variants"]],
            }
            for name, b in built.items()
        ]
        out = root / "out.json"
        self.proc.stdin.write(json.dumps({"jobs": jobs, "texts": TEXTS, "out": str(out)}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:  # a line a library printed is skipped; the end of output is a failure
            if line.strip() == str(out):
                break
        else:
            self.stderr.seek(0)
            raise AssertionError(f"the fresh serving process failed: {self.stderr.read()[-4000:]}")
        return {k: np.asarray(v, dtype=np.float64) for k, v in json.loads(out.read_text()).items()}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.stderr.close()


def model_prompts(src: Path) -> list[str]:
    config = json.loads((src / "config_sentence_transformers.json").read_text())
    return [p for p in dict.fromkeys((config.get("prompts") or {}).values()) if p]


def torch_embeddings(src: Path, prompt: str, truncate_dim: int | None = None) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(src), device="cpu", truncate_dim=truncate_dim)
    return np.asarray(model.encode(TEXTS, prompt=prompt, batch_size=3), dtype=np.float64)


def assert_matches(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    assert np.abs(got - want).max() < 2e-4, f"{what}: max abs diff {np.abs(got - want).max()}"
    cos = (got * want).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-12)
    assert cos.min() >= 0.9999, f"{what}: min cosine {cos.min()}"


def check_fresh(name: str, built: dict[str, dict], fresh: dict[str, np.ndarray]) -> int:
    """Compare every fresh-process result of model ``name`` with torch; the number of results compared."""
    b = built[name]
    checked = 0
    for prompt in ["", *model_prompts(b["src"])]:
        want = torch_embeddings(b["src"], prompt, b.get("truncate_dim"))
        for v in b["manifest"]["variants"]:
            loaders = ("st", "runtime") if v["load"]["backend"] == "onnx" else ("st",)
            for loader in loaders:
                assert_matches(
                    fresh[f"{name}|{v['id']}|{loader}|{prompt}"], want, f"{name} {v['id']} {loader} {prompt!r}"
                )
                checked += 1
    return checked
