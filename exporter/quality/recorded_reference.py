"""Reference vectors recorded in the artifact, so a serving host without torch can still run the gate.

The export writes the torch reference's sentence embeddings of the probe set (as fed, prompts included)
into the artifact: ``reference/probe_texts.json`` (``{"texts": [...], "strata": [...]}``: each text's
stratum, so the per-stratum worst cases are judged here too; an older artifact's plain list has none) and
``reference/probe_vectors.f16.npy`` (float16: 0.27 MB for all-MiniLM-L6-v2's 358 x 384), listed and
hashed in the manifest like every shared file, so ``verify --integrity`` covers them.

``open_gate`` turns them into the ``exporter.quality.gate.Gate`` the export judged by, with the reference
replaced by these vectors: the same metrics, strata, batch invariance, verdict records and consumers,
thresholds from whoever judges (the policy), never from the artifact. On a host without torch,
``exporter verify ART`` judges each variant with it through the installed runtime
(``Gate.check_runtime``), and ``package --layout`` judges each written folder's consumers with it
(``exporter.ship.layout_gate``). The reuse is explicit and keyed: the recorded texts must hash to the
manifest's ``probe.sha256`` (the probe set the export judged on) and both files must be listed, regular
and within ``MAX_BYTES``, else there is no recorded reference and nothing is judged against it.
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
NOTE = "against the reference vectors recorded at export (float16)"
REFERENCE = "the torch reference vectors recorded at export"  # what layout gate rows name as their reference


def torch_missing() -> bool:
    """True on a serving host: the export stack (torch) is not installed."""
    return importlib.util.find_spec("torch") is None


def write(stage: Path, texts: list[str], strata: list[str], vectors, kind: str) -> list[Path]:
    """Record the probe texts, their strata and the reference's vectors (embedders only) in ``stage``; the
    files written."""
    from exporter.kinds import ModelKind

    if kind != ModelKind.SENTENCE_TRANSFORMER.value or not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        return []
    folder = stage / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"texts": list(texts), "strata": list(strata)}
    (stage / TEXTS_FILE).write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
    np.save(stage / VECTORS_FILE, np.asarray(vectors, dtype=np.float16), allow_pickle=False)
    return [stage / name for name in FILES]


def load(artifact: Path, manifest: dict) -> tuple[list[str], list[str] | None, np.ndarray] | None:
    """The recorded (texts, strata or None, float32 vectors), or None when the artifact records none, or
    records them for another probe set than its manifest's (the key) or in another shape."""
    from exporter.quality import probes

    listed = {f["path"] for f in manifest["shared_files"]}
    if not all(name in listed and (artifact / name).is_file() for name in FILES):
        return None
    for name in FILES:
        path = artifact / name
        if path.is_symlink() or path.stat().st_size > MAX_BYTES:
            return None
    doc = json.loads((artifact / TEXTS_FILE).read_text(encoding="utf-8"))
    texts, strata = (doc, None) if isinstance(doc, list) else (doc.get("texts"), doc.get("strata"))
    vectors = np.load(artifact / VECTORS_FILE, allow_pickle=False).astype(np.float32)
    if not isinstance(texts, list) or len(texts) != len(vectors) or vectors.ndim != 2:
        return None
    texts = [str(t) for t in texts]
    if probes.texts_sha256(texts) != manifest["probe"]["sha256"]:
        return None  # recorded for another probe set: not this manifest's reference
    known = {*probes.STRATA, probes.USER_STRATUM}
    if strata is not None and (len(strata) != len(texts) or not set(strata) <= known):
        return None
    return texts, strata, vectors


def open_gate(artifact: Path, manifest: dict, thresholds, consumers=(), threads: int | None = None):
    """The gate (``exporter.quality.gate.Gate``) over the recorded probe texts, strata and vectors, judging
    by ``thresholds`` (a ``gate.ThresholdsFor``: the policy's), or None when the artifact records none."""
    from exporter import kinds
    from exporter.quality import gate

    recorded = load(artifact, manifest)
    if recorded is None:
        return None
    texts, strata, vectors = recorded
    kind = manifest["model"]["kind"]
    return gate.Gate(
        kind=kind,
        probe=kinds.get(kind).probe(texts, strata),
        probe_sha256=manifest["probe"]["sha256"],
        reference=vectors,
        thresholds=thresholds,
        consumers=tuple(consumers),
        threads=threads,
    )


def verify_cases(artifact, manifest, variants, consumers, thresholds):
    """(probe info, {variant id: CaseResult}) for ``exporter.quality.verify``: each variant judged through the
    runtime by the gate over the recorded vectors (``open_gate``), by ``thresholds`` (variant id -> the
    policy's, as the fresh process gets them)."""
    import os
    import time

    from exporter.errors import ExporterError, FidelityError
    from exporter.quality import gate
    from exporter.quality.consumers import BY_NAME
    from exporter.quality.verdicts import ERROR, FAILED, PASSED, SKIPPED, CaseResult, summary

    torch_only = ("sentence-transformers", "optimum")
    names = ["runtime", *[n for n in consumers or [] if n not in ("runtime", *torch_only)]]
    kind = manifest["model"]["kind"]
    the_gate = open_gate(artifact, manifest, gate.requested_thresholds(kind), names, threads=os.cpu_count() or 1)
    if the_gate is None:
        why = "the artifact records no reference vectors for its probe set (re-export it to record them)"
        if torch_missing():
            why = f"torch is not installed here and {why}"
        return None, {v["id"]: CaseResult(v["id"], SKIPPED, f"not re-run: {why}") for v in variants}
    out = {}
    for v in variants:
        if v["load"]["backend"] not in BY_NAME["runtime"].backends:
            out[v["id"]] = CaseResult(v["id"], SKIPPED, f"not re-run: a {v['load']['backend']} variant needs torch")
            continue
        item = {**v, "threshold": (thresholds or {}).get(v["id"])}  # the policy's, as the fresh process gets them
        start = time.perf_counter()
        try:
            entry = the_gate.check_runtime(artifact, item)
        except Exception as exc:  # noqa: BLE001 - as in the fresh process: broken outputs fail, a crash is an error
            status = FAILED if isinstance(exc, FidelityError) else ERROR
            msg = exc.message if isinstance(exc, ExporterError) else f"{type(exc).__name__}: {exc}"
            out[v["id"]] = CaseResult(v["id"], status, msg, failures=[msg], recorded=v.get("parity"))
            continue
        out[v["id"]] = CaseResult(
            v["id"],
            PASSED if entry["passed"] else FAILED,
            f"{summary(entry, manifest, None)} {NOTE}" + ("; torch is not installed here" if torch_missing() else ""),
            failures=list(entry["failures"]),
            parity=entry,
            recorded=v.get("parity"),
            seconds=time.perf_counter() - start,
        )
    probe = the_gate.probe
    return {"name": "recorded", "sha256": the_gate.probe_sha256, "n": len(probe.texts)}, out
