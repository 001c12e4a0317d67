"""Reference vectors recorded in the artifact, so a serving host without torch can still verify fidelity.

The export writes the torch reference's sentence embeddings of the probe set (as fed, prompts included)
into the artifact: ``reference/probe_texts.json`` and ``reference/probe_vectors.f16.npy`` (float16: 0.27 MB
for all-MiniLM-L6-v2's 358 x 384), listed and hashed in the manifest like every shared file, so
``verify --integrity`` covers them. On a host without torch, ``exporter verify ART`` runs each variant
through the installed runtime (and the consumers asked for, those installed) and judges it against these
vectors with the variant's recorded thresholds (``exporter.quality.consumers.check``: the same comparison as
everywhere), and says it did so. With torch installed, verify re-runs torch as before.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

TEXTS_FILE = "reference/probe_texts.json"
VECTORS_FILE = "reference/probe_vectors.f16.npy"
FILES = (TEXTS_FILE, VECTORS_FILE)
MAX_BYTES = 64 << 20  # read caps (user files are read as regular files with a size cap)
NOTE = "against the reference vectors recorded at export (float16; torch is not installed here)"


def torch_missing() -> bool:
    """True on a serving host: the export stack (torch) is not installed."""
    return importlib.util.find_spec("torch") is None


def write(stage: Path, texts: list[str], vectors, kind: str) -> list[Path]:
    """Record the probe texts and the reference's vectors (embedders only) in ``stage``; the files written."""
    from exporter.kinds import ModelKind

    if kind != ModelKind.SENTENCE_TRANSFORMER.value or not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        return []
    folder = stage / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    (stage / TEXTS_FILE).write_text(json.dumps(list(texts), ensure_ascii=False) + "\n", encoding="utf-8")
    np.save(stage / VECTORS_FILE, np.asarray(vectors, dtype=np.float16), allow_pickle=False)
    return [stage / name for name in FILES]


def load(artifact: Path, manifest: dict) -> tuple[list[str], np.ndarray] | None:
    """The recorded (texts, float32 vectors), or None when the artifact records none."""
    listed = {f["path"] for f in manifest["shared_files"]}
    if not all(name in listed and (artifact / name).is_file() for name in FILES):
        return None
    for name in FILES:
        path = artifact / name
        if path.is_symlink() or path.stat().st_size > MAX_BYTES:
            return None
    texts = json.loads((artifact / TEXTS_FILE).read_text(encoding="utf-8"))
    vectors = np.load(artifact / VECTORS_FILE, allow_pickle=False).astype(np.float32)
    if not isinstance(texts, list) or len(texts) != len(vectors):
        return None
    return [str(t) for t in texts], vectors


def verify_cases(artifact: Path, manifest: dict, variants: list[dict], consumers: list[str] | None):
    """(probe info, {variant id: CaseResult}) judged against the recorded vectors, without torch."""
    import os

    from exporter import kinds
    from exporter.quality import consumers as cons
    from exporter.quality import parity
    from exporter.quality.verdicts import ERROR, FAILED, PASSED, SKIPPED, CaseResult
    from exporter.source import st_modules

    recorded = load(artifact, manifest)
    if recorded is None:
        why = "torch is not installed here and the artifact records no reference vectors (re-export it to record them)"
        return None, {v["id"]: CaseResult(v["id"], SKIPPED, f"not re-run: {why}") for v in variants}
    texts, reference = recorded
    kind = manifest["model"]["kind"]
    probe = kinds.get(kind).probe(texts)
    facts = st_modules.read(artifact)
    names = ["runtime", *[n for n in consumers or [] if n not in ("runtime", "sentence-transformers", "optimum")]]
    out = {}
    for v in variants:
        if v["load"]["backend"] not in cons.BY_NAME["runtime"].backends:
            out[v["id"]] = CaseResult(v["id"], SKIPPED, f"not re-run: a {v['load']['backend']} variant needs torch")
            continue
        recorded_threshold = (v.get("parity") or {}).get("threshold")
        threshold = (
            parity.thresholds_from_dict(kind, recorded_threshold, v["precision"])
            if recorded_threshold
            else parity.defaults(kind, v["precision"])
        )
        target = cons.Target(artifact, v, facts, threads=os.cpu_count() or 1)
        rows = [
            cons.check(cons.BY_NAME[n], target, texts, reference, probe, kind, threshold)
            for n in names
            if cons.BY_NAME[n].applies(v, kind)
        ]
        own = rows[0]
        status = {PASSED: PASSED, FAILED: FAILED}.get(own["status"], ERROR)
        entry = cons.with_rows(
            {k: val for k, val in own.items() if k not in ("consumer", "runs", "status", "message")}, rows
        )
        status = PASSED if entry["passed"] else (status if status != PASSED else FAILED)
        metric = f"cosine_min {own['cosine_min']:.6f}" if own.get("cosine_min") is not None else own["message"]
        out[v["id"]] = CaseResult(
            v["id"],
            status,
            f"runtime {metric} {NOTE}",
            failures=entry["failures"],
            parity=entry,
            recorded=v.get("parity"),
        )
    return {"name": "recorded", "sha256": manifest["probe"]["sha256"], "n": len(texts)}, out
