"""The export pipeline: resolve the pin, build each variant, check its parity, write the manifest.

One plan object drives it, whether it came from CLI flags or a recipe file. The pipeline raises typed
errors and reports progress through a ``Progress`` object; it never prints.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from exporter import __version__
from exporter.errors import ExporterError, ExportFailed, FidelityError, UsageError
from exporter.fsutil import FileRecord, record_files, sha256_bytes, staged_dir

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".ckpt")


class Progress(Protocol):
    def step(self, label: str) -> contextlib.AbstractContextManager: ...


class NoProgress:
    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        yield


@dataclass
class ExportPlan:
    """Everything one export needs; the CLI and recipe files both build this."""

    model: str
    revision: str | None = None
    variants: list[str] | None = None  # None: the default set
    out: Path | None = None
    probe: Path | None = None
    calibration: Path | None = None
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)  # precision class or variant id
    force: bool = False
    allow_unpinned: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = False
    artifacts_root: Path = Path("artifacts")
    prompts: dict[str, str] | None = None  # e.g. {"query": "query: ", "passage": "passage: "}
    max_seq_length: int | None = None  # override the model's own
    kind: str | None = None  # expected model kind; None: whatever the source is
    publish: str | None = None  # oci:// target a fleet run publishes to after export


@dataclass
class ExportOutcome:
    artifact: Path
    manifest: dict
    skipped: bool  # the artifact was already complete and nothing was rebuilt

    @property
    def failed(self) -> list[str]:
        return [v["id"] for v in self.manifest["variants"] if v["status"] != "passed"]


def default_out(artifacts_root: Path, src) -> Path:
    """``artifacts/<org>--<name>/<sha12>/``; a local folder gets ``local--<name>/<hash12 of its files>``."""
    if src.repo_id and src.revision:
        return artifacts_root / src.repo_id.replace("/", "--") / src.revision[:12]
    listing = "".join(f"{r.path} {r.size} {r.sha256}\n" for r in src.files)
    return artifacts_root / f"local--{src.local_path.name}" / sha256_bytes(listing.encode())[:12]


def _copy_shared(src, stage: Path, max_seq_length: int | None = None) -> list[FileRecord]:
    """Copy the source files the model uses, except torch weights, into the artifact root.

    A ``max_seq_length`` override is written into the copy of sentence_bert_config.json, so every
    loader of the artifact (sentence-transformers, the torch-free runtime) truncates the same way.
    """
    copied = []
    for rec in src.files:
        if Path(rec.path).suffix in WEIGHT_SUFFIXES:
            continue
        dest = stage / rec.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile((src.path / rec.path).resolve(), dest)
        copied.append(dest)
    if max_seq_length:
        cfg_path = stage / "sentence_bert_config.json"
        cfg = json.loads(cfg_path.read_text("utf-8")) if cfg_path.is_file() else {}
        cfg["max_seq_length"] = max_seq_length
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", "utf-8")
        if cfg_path not in copied:
            copied.append(cfg_path)
    return record_files(stage, copied)


def _check_kind(src, expected: str | None) -> None:
    """Refuse a source whose kind differs from the one asked for, or that the pipeline cannot export yet."""
    if expected and src.kind != expected:
        raise UsageError(
            f"{src} is a {src.kind} model, not a {expected}.", "Fix `kind` in the recipe, or remove it to detect it."
        )
    if src.kind != "sentence-transformer":
        raise UsageError(
            f"{src} is a {src.kind} model; this version exports sentence-transformer (embedding) models only.",
            "Use an embedding model, or a later version of exporter.",
        )


def model_facts(model) -> dict:
    """Kind, dimension, max_seq_length, pooling and normalisation of a loaded SentenceTransformer."""
    pooling = None
    normalize = False
    for module in model:
        name = type(module).__name__
        if name == "Pooling":
            pooling = getattr(module, "pooling_mode", None) or module.get_pooling_mode_str()
        elif name == "Normalize":
            normalize = True
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return {
        "kind": "sentence-transformer",
        "embedding_dim": dim(),
        "max_seq_length": model.max_seq_length,
        "pooling": pooling,
        "normalize": normalize,
        "similarity": getattr(model, "similarity_fn_name", None),
    }


def _variant_encoder(artifact: Path, spec, ctx):
    """Load a built variant the way a user does and return its encode function."""
    from exporter.variants import Backend

    if spec.backend is Backend.TORCH:
        return spec.loader_fn()(artifact, device="cpu").encode
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(artifact), device="cpu", local_files_only=True, **_st_kwargs(spec))
    return model.encode


def _st_kwargs(spec) -> dict:
    return {"backend": spec.backend.value, "model_kwargs": {"file_name": spec.file_name}}


def run_export(plan: ExportPlan, progress: Progress | None = None) -> ExportOutcome:
    """Run one export plan end to end; failed variants are recorded, see ``raise_for_failures``.

    The artifact is committed after each variant (built in a hard-linked clone beside it, then swapped
    in), so it is always complete for what its manifest lists: an interrupted run loses only the
    variant in flight, and re-running resumes by building only what is missing. A variant already in
    the manifest is kept when its files still match and the source, toolchain and probe set are the
    same; ``force`` rebuilds everything.
    """
    from exporter import manifest as mf
    from exporter import parity, probes, source, variants
    from exporter.build import BuildContext
    from exporter.environment import environment

    progress = progress or NoProgress()
    specs = variants.select(plan.variants)  # bad ids fail before anything heavy runs
    ref = source.parse_model_ref(plan.model, plan.revision)
    probe_set = probes.with_prompts(probes.load_text_set(plan.probe, "probe"), plan.prompts)
    calib_set = probes.load_text_set(plan.calibration, "calibration") if plan.calibration else None
    thresholds = parity.thresholds_for(specs, plan.thresholds)

    with progress.step("Resolving source"):
        src = source.resolve(
            ref,
            allow_unpinned=plan.allow_unpinned,
            trust_remote_code=plan.trust_remote_code,
            allow_pickle=plan.allow_pickle,
        )
    _check_kind(src, plan.kind)
    out = plan.out or default_out(plan.artifacts_root, src)
    env = environment()
    source_entry = {
        "repo": src.repo_id,
        "revision": src.revision,
        "requested_ref": src.requested_ref,
        "pinned": src.pinned,
        "local_path": str(src.local_path) if src.local_path else None,
        "weights_format": src.weights_format,
        "trust_remote_code": plan.trust_remote_code,
        "files": [r.to_dict() for r in src.files],
    }
    kept = {} if plan.force else _reusable_variants(out, source_entry, env, probe_set, plan.max_seq_length)
    todo = [s for s in specs if s.id not in kept]
    if not todo:
        return ExportOutcome(artifact=out, manifest=mf.load(out), skipped=True)

    ctx = BuildContext(
        source_dir=src.path,
        stage_dir=out,
        calibration_texts=lambda: (calib_set or probes.load_text_set(None, "calibration")).texts,
        probe_texts=lambda: probe_set.texts,
        options={"trust_remote_code": plan.trust_remote_code},
    )
    with progress.step("Loading the torch reference"):
        reference = ctx.reference_model()
        if plan.max_seq_length:
            reference.max_seq_length = plan.max_seq_length
    with progress.step(f"Encoding {len(probe_set.texts)} probe texts with the reference"):
        ref_emb = encode_with(reference.encode, probe_set.texts)

    fresh = not kept
    entries = dict(kept)
    manifest: dict = {}
    for spec in todo:
        with staged_dir(out, replace=True, clone=not fresh) as stage:
            ctx.stage_dir = stage
            if fresh:
                shared = _copy_shared(src, stage, plan.max_seq_length)
                fresh = False
            else:
                shared = [FileRecord(**f) for f in mf.load(stage)["shared_files"]]
            entries[spec.id] = _build_and_check(spec, ctx, stage, probe_set, ref_emb, thresholds[spec.id], progress)
            _remove_stale_files(stage, entries)
            ordered = [entries[s.id] for s in variants.CATALOGUE if s.id in entries]
            uses_calibration = any(e["build"].get("calibration") for e in ordered)
            calibration = calib_set or (probes.load_text_set(None, "calibration") if uses_calibration else None)
            manifest = {
                "schema_version": mf.SCHEMA_VERSION,
                "tool_version": __version__,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source": source_entry,
                "model": {**model_facts(reference), "prompts": plan.prompts},
                "environment": env,
                "probe": _textset_entry(probe_set),
                "calibration": _textset_entry(calibration) if calibration else None,
                "shared_files": [r.to_dict() for r in shared],
                "variants": ordered,
                "publishable": all(e["status"] == "passed" for e in ordered) and src.pinned,
                "recommended": None,
                "bench": None,
            }
            mf.save(stage, manifest)
    return ExportOutcome(artifact=out, manifest=manifest, skipped=False)


def raise_for_failures(outcome: ExportOutcome) -> None:
    """FidelityError if a variant missed its thresholds; ExportFailed if one could not be built."""
    by_status = {s: [v["id"] for v in outcome.manifest["variants"] if v["status"] == s] for s in ("failed", "error")}
    if by_status["failed"]:
        raise FidelityError(
            f"variant(s) failed the fidelity gate: {', '.join(by_status['failed'])} (artifact kept at "
            f"{outcome.artifact}).",
            "See manifest.json variants[].parity; nothing was marked publishable.",
        )
    if by_status["error"]:
        raise ExportFailed(
            f"variant(s) could not be built: {', '.join(by_status['error'])} (artifact kept at {outcome.artifact}).",
            "See manifest.json variants[].error; re-run with --verbose for details.",
        )


def _reusable_variants(
    out: Path, source_entry: dict, env: dict, probe_set, max_seq_length: int | None
) -> dict[str, dict]:
    """Variants of an existing artifact at ``out`` that a re-run may keep (files intact, same inputs)."""
    from exporter import manifest as mf

    if not out.exists():
        return {}
    if not (out / mf.MANIFEST_NAME).is_file():
        raise UsageError(f"{out} exists and is not an artifact.", "Pass --out with another folder, or --force.")
    existing = mf.load(out)
    old_src = existing["source"]
    if (old_src["repo"], old_src["revision"]) != (source_entry["repo"], source_entry["revision"]) or (
        {f["sha256"] for f in old_src["files"]} != {f["sha256"] for f in source_entry["files"]}
    ):
        raise UsageError(
            f"{out} holds an artifact of {old_src['repo'] or old_src['local_path']}@{old_src['revision']}, "
            "not of this source.",
            "Pass --out with another folder, or --force to replace it.",
        )
    if (
        existing["environment"]["packages"] != env["packages"]
        or existing["probe"]["sha256"] != probe_set.sha256
        or (max_seq_length and existing["model"]["max_seq_length"] != max_seq_length)
    ):
        return {}  # a new toolchain, probe set or length: every variant is rebuilt and re-checked
    if not mf.check_files(out, existing, []).ok:  # shared files changed: start again
        return {}
    return {
        v["id"]: v
        for v in existing["variants"]
        if v["status"] != "error" and mf.check_files(out, existing, [v["id"]]).ok
    }


def _remove_stale_files(stage: Path, entries: dict[str, dict]) -> None:
    """Drop files of superseded builds: anything in a backend folder that no variant lists."""
    listed = {f["path"] for e in entries.values() for f in e["files"]}
    for folder in ("onnx", "openvino", "quanto"):
        for p in (stage / folder).rglob("*") if (stage / folder).is_dir() else ():
            if p.is_file() and p.relative_to(stage).as_posix() not in listed:
                p.unlink()


def _textset_entry(ts) -> dict:
    return {"name": ts.name, "sha256": ts.sha256, "n": len(ts.texts), "source": ts.source}


def _build_and_check(spec, ctx, stage: Path, probe_set, ref_emb, threshold, progress) -> dict:
    from exporter import parity

    entry = {
        "id": spec.id,
        "backend": spec.backend.value,
        "precision": spec.precision.value,
        "status": "error",
        "error": None,
        "files": [],
        "load": spec.load_kwargs(),
        "build": {},
        "parity": None,
        "bench": None,
    }
    try:
        with progress.step(f"Building {spec.id}"):
            result = spec.build_fn()(ctx, spec)
        entry["files"] = [r.to_dict() for r in record_files(stage, result.files)]
        entry["build"] = result.build
        with progress.step(f"Checking parity of {spec.id}"):
            emb = encode_with(_variant_encoder(stage, spec, ctx), probe_set.texts)
            metrics = parity.compare(ref_emb, emb)
            verdict = parity.judge(metrics, threshold)
        entry["parity"] = parity.to_manifest(metrics, threshold, verdict, probe_set.sha256)
        entry["status"] = "passed" if verdict.passed else "failed"
    except UsageError:
        raise
    except FidelityError as exc:  # broken output (NaN, wrong shape) fails the gate, it is not a crash
        entry["status"] = "failed"
        entry["error"] = str(exc)
    except ExporterError as exc:
        entry["error"] = str(exc)
    except Exception as exc:  # a backend crash fails this variant, not the others
        entry["error"] = f"{type(exc).__name__}: {exc}"
    return entry


def encode_with(encode_fn, texts: list[str]):
    import numpy as np

    return np.asarray(encode_fn(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False))
