"""The export pipeline: resolve the pin, build each variant, check its parity, write the manifest.

One plan object drives it, whether it came from CLI flags or a recipe file. The pipeline raises typed
errors and reports progress through a ``Progress`` object; it never prints. What differs between model
kinds (embedders, cross-encoders, sparse encoders: loading, probe inputs, outputs, metrics, facts) is
looked up in ``exporter.kinds``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from exporter import __version__
from exporter.errors import ExporterError, ExportFailed, FidelityError, UsageError
from exporter.fsutil import FileRecord, record_files, sha256_bytes, staged_dir

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".ckpt")


class Progress(Protocol):
    def step(self, label: str) -> contextlib.AbstractContextManager: ...

    def note(self, message: str) -> None: ...  # something done on the user's behalf, worth a line


class NoProgress:
    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        yield

    def note(self, message: str) -> None:
        pass


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
    truncate_dim: int | None = None  # Matryoshka: keep the first N dimensions (SentenceTransformer(truncate_dim=N))
    kind: str | None = None  # expected model kind; None: whatever the source is
    publish: str | None = None  # oci:// target a fleet run publishes to after export
    consumers: list[str] = field(default_factory=list)  # exporter.quality.consumers names each variant is loaded by


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


def _transformer_folder(root: Path) -> str:
    """The Transformer module's folder relative to ``root`` ("." for the root, and for folders without
    modules.json such as plain cross-encoders)."""
    from exporter.source import st_modules

    if not (root / "modules.json").is_file():
        return "."
    entry = next((m for m in st_modules.read_modules(root) if m.kind is st_modules.ModuleKind.TRANSFORMER), None)
    return (entry.path.strip("/") or ".") if entry else "."


def _copy_shared(src, stage: Path, max_seq_length: int | None = None) -> list[FileRecord]:
    """Copy the source files the model uses, except the Transformer's torch weights, into the artifact root.

    The weights of the other modules (``2_Dense/model.safetensors`` ...) are copied: sentence-transformers
    runs those modules in torch on top of an ONNX / OpenVINO transformer, and loads them from there.

    A ``max_seq_length`` override is written into the copy of sentence_bert_config.json, so every
    loader of the artifact (sentence-transformers, the torch-free runtime) truncates the same way.
    """
    copied = []
    transformer_folder = _transformer_folder(src.path)
    for rec in src.files:
        rel = Path(rec.path)
        if rel.suffix in WEIGHT_SUFFIXES and rel.parent.as_posix() == transformer_folder:
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


def model_facts(model, kind: str | None = None) -> dict:
    """The manifest's ``model`` facts of a loaded model of ``kind`` (default: a SentenceTransformer)."""
    from exporter import kinds

    return kinds.get(kind).facts(model)


def load_variant_model(artifact: Path, spec, kind: str | None = None, truncate_dim: int | None = None):
    """Load a built variant the way a user does (``<Class>(artifact, backend=..., model_kwargs={"file_name": ...})``,
    or the variant's own loader for the ones sentence-transformers cannot load alone)."""
    from exporter import kinds
    from exporter.variants import Backend

    if spec.backend is Backend.TORCH:
        model = spec.loader_fn()(artifact, device="cpu")
        if truncate_dim:
            model.truncate_dim = truncate_dim
        return model
    return kinds.load_variant(
        kind, artifact, spec.backend.value, spec.file_name, truncate_dim=truncate_dim, **spec.model_kwargs
    )


def run_export(plan: ExportPlan, progress: Progress | None = None) -> ExportOutcome:
    """Run one export plan end to end; failed variants are recorded, see ``raise_for_failures``.

    The artifact is committed after each variant (built in a hard-linked clone beside it, then swapped
    in), so it is always complete for what its manifest lists: an interrupted run loses only the
    variant in flight, and re-running resumes by building only what is missing. A variant already in
    the manifest is kept when its files still match and the source, toolchain and probe set are the
    same; ``force`` rebuilds everything.
    """
    from exporter import kinds, outdir, variants
    from exporter.quality import parity, probes
    from exporter.source import preflight
    from exporter.source import resolve as source

    progress = progress or NoProgress()
    variants.select(plan.variants)  # bad ids fail before anything heavy runs
    if plan.kind:
        kinds.select_variants(plan.variants, plan.kind)
        parity.thresholds_for([], plan.thresholds, kinds.get(plan.kind).kind.value)
    ref = source.parse_model_ref(plan.model, plan.revision)
    probe_set = probes.with_prompts(probes.load_text_set(plan.probe, "probe"), plan.prompts)
    calib_set = probes.load_text_set(plan.calibration, "calibration") if plan.calibration else None

    with progress.step("Resolving source"):
        src = source.resolve(
            ref,
            allow_unpinned=plan.allow_unpinned,
            trust_remote_code=plan.trust_remote_code,
            allow_pickle=plan.allow_pickle,
        )
    kind = kinds.resolve_kind(src, plan.kind).value
    if plan.prompts and kind != kinds.ModelKind.SENTENCE_TRANSFORMER:
        raise UsageError(f"{src} is a {kind} model; prompts apply to sentence-transformer models only.", "")
    if plan.truncate_dim and kind != kinds.ModelKind.SENTENCE_TRANSFORMER:
        raise UsageError(f"{src} is a {kind} model; truncate_dim applies to sentence-transformer models only.", "")
    specs = kinds.select_variants(plan.variants, kind)  # a variant that does not apply to the kind: refused
    specs, shape = preflight.narrow(src.path, kind, specs, plan.variants)  # chain and architecture: as the dry run
    thresholds = parity.thresholds_for(specs, plan.thresholds, kind)
    out = plan.out or default_out(plan.artifacts_root, src)
    outdir.check_out(out)  # before anything heavy: writable, and nothing there the tool did not write
    with outdir.claim(out) as cleaned:
        for line in cleaned:
            progress.note(line)
        return _export_into(out, plan, src, kind, specs, thresholds, probe_set, calib_set, progress, shape)


def _export_into(out: Path, plan: ExportPlan, src, kind: str, specs, thresholds, probe_set, calib_set, progress, shape):
    """The part of ``run_export`` that runs holding the lock of ``out``: reuse, build, check, commit."""
    from exporter import kinds, variants
    from exporter import manifest as mf
    from exporter.builders.context import BuildContext
    from exporter.environment import environment
    from exporter.quality import parity_run, probes, refcache
    from exporter.quality.parity_run import run_chunked

    kspec = kinds.get(kind)
    env = environment()
    source_entry = {**src.to_dict(), "trust_remote_code": plan.trust_remote_code}
    kept = {} if plan.force else _reusable_variants(out, source_entry, env, probe_set, plan.max_seq_length, kind)
    kept = {vid: v for vid, v in kept.items() if _judged_as_asked(v, kind, thresholds.get(vid), plan.consumers)}
    if kept and mf.load(out)["model"].get("truncate_dim") != plan.truncate_dim:
        kept = {}  # another Matryoshka width: every variant is rebuilt
    todo = [s for s in specs if s.id not in kept]
    if not todo:
        return ExportOutcome(artifact=out, manifest=mf.load(out), skipped=True)

    ctx = BuildContext(
        source_dir=src.path,
        stage_dir=out,
        calibration_texts=lambda: (calib_set or probes.load_text_set(None, "calibration")).texts,
        probe_texts=lambda: probe_set.texts,
        options={
            "trust_remote_code": plan.trust_remote_code,
            "truncate_dim": plan.truncate_dim,
            "consumers": plan.consumers,
        },
        kind=kind,
    )
    with progress.step(f"Loading the torch reference ({kspec.label})"):
        reference = ctx.reference_model()
        if plan.max_seq_length:
            kspec.set_max_length(reference, plan.max_seq_length)
        _check_truncate_dim(plan.truncate_dim, reference)
    probe = kspec.probe(probe_set.texts)
    label = f"Running the reference on {len(probe.inputs)} probe {kspec.unit}"
    ref_key = refcache.key(
        source=[(f["path"], f["sha256"]) for f in source_entry["files"]],
        probe=probe_set.sha256,
        kind=kind,
        max_seq_length=plan.max_seq_length,
        truncate_dim=plan.truncate_dim,
        prompts=plan.prompts,
        packages=env["packages"],
        cpu=env["cpu"],
        batch=kinds.PARITY_BATCH,
        batching=parity_run.REFERENCE_BATCHING,
    )
    ctx.options["reference_key"] = ref_key  # builders cache their own reference runs under it (refcache)
    run_ref = lambda c: parity_run.outputs_length_sorted(kspec.outputs, reference, c, kinds.PARITY_BATCH)  # noqa: E731
    ref_out, hit = refcache.cached(ref_key, lambda: run_chunked(progress, label, run_ref, probe.inputs))
    if hit:
        progress.note(f"{label}: reused the cached reference outputs ({refcache.cache_dir()})")

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
            entries[spec.id] = _build_and_check(
                spec, ctx, stage, probe_set.sha256, probe, ref_out, thresholds[spec.id], progress
            )
            _remove_stale_files(stage, entries)
            ordered = [entries[s.id] for s in variants.CATALOGUE if s.id in entries]
            uses_calibration = any(e["build"].get("calibration") for e in ordered)
            calibration = calib_set or (probes.load_text_set(None, "calibration") if uses_calibration else None)
            manifest = {
                "schema_version": mf.SCHEMA_VERSION,
                "tool_version": __version__,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source": source_entry,
                "model": {**kspec.facts(reference), "prompts": plan.prompts, "shape": shape.to_dict()},
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
    out: Path, source_entry: dict, env: dict, probe_set, max_seq_length: int | None, kind: str = "sentence-transformer"
) -> dict[str, dict]:
    """Variants of an existing artifact at ``out`` that a re-run may keep (files intact, same inputs)."""
    from exporter import manifest as mf

    if not out.exists():
        return {}
    if not (out / mf.MANIFEST_NAME).is_file():  # an empty folder (outdir.check_out refused any other)
        return {}
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
        or existing["model"]["kind"] != kind
    ):
        return {}  # a new toolchain, probe set, length or kind: every variant is rebuilt and re-checked
    if not mf.check_files(out, existing, []).ok:  # shared files changed: start again
        return {}
    return {
        v["id"]: v
        for v in existing["variants"]
        if v["status"] != "error" and mf.check_files(out, existing, [v["id"]]).ok
    }


def _judged_as_asked(variant: dict, kind: str, threshold, names: list[str]) -> bool:
    """Whether a kept variant's verdict holds for this run: judged by ``threshold`` (None: a variant not asked
    for now, kept as it was) with a row for every consumer in ``names`` that applies to it."""
    if threshold is None:
        return True
    from exporter.quality import consumers

    parity = variant.get("parity") or {}
    want = threshold.to_dict()
    recorded = parity.get("threshold") or {}
    if {k: recorded.get(k) for k in want} != want or any(v is not None for k, v in recorded.items() if k not in want):
        return False  # another threshold: rebuilt and judged again
    rows = {r["consumer"] for r in parity.get("consumers") or []}
    return all(n in rows for n in names if n == "sentence-transformers" or consumers.BY_NAME[n].applies(variant, kind))


def _remove_stale_files(stage: Path, entries: dict[str, dict]) -> None:
    """Drop files of superseded builds: anything in a backend folder that no variant lists.

    And every signature bundle: a rebuild writes a new manifest.json (``created_at`` at least), which each
    variant's bundles sign, so none of them would still verify; re-run ``exporter sign``.
    """
    from exporter.ship.sign_artifact import SIGNATURE_DIR

    shutil.rmtree(stage / SIGNATURE_DIR, ignore_errors=True)
    listed = {f["path"] for e in entries.values() for f in e["files"]}
    for folder in ("onnx", "openvino", "quanto"):
        for p in (stage / folder).rglob("*") if (stage / folder).is_dir() else ():
            if p.is_file() and p.relative_to(stage).as_posix() not in listed:
                p.unlink()


def _check_truncate_dim(truncate_dim: int | None, reference) -> None:
    """UsageError when ``truncate_dim`` is not below the model's full embedding width."""
    if not truncate_dim:
        return
    reference.truncate_dim = None
    full = reference.get_embedding_dimension()
    reference.truncate_dim = truncate_dim
    if truncate_dim >= full:
        raise UsageError(
            f"truncate_dim {truncate_dim} is not below the model's embedding dimension {full}.",
            f"Pass a smaller --truncate-dim (1..{full - 1}), or none.",
        )


def _textset_entry(ts) -> dict:
    return {"name": ts.name, "sha256": ts.sha256, "n": len(ts.texts), "source": ts.source}


def _build_and_check(spec, ctx, stage: Path, probe_sha256: str, probe, ref_out, threshold, progress) -> dict:
    from exporter import kinds
    from exporter.builders import external_data
    from exporter.quality import parity, parity_replay, parity_run

    kspec = kinds.get(ctx.kind)
    truncate_dim = ctx.options.get("truncate_dim")
    entry = {
        "id": spec.id,
        "backend": spec.backend.value,
        "precision": spec.precision.value,
        "status": "error",
        "error": None,
        "files": [],
        "load": {**spec.load_kwargs(), **({"truncate_dim": truncate_dim} if truncate_dim else {})},
        "build": {},
        "parity": None,
        "bench": None,
    }
    try:
        with progress.step(f"Building {spec.id}"):
            if spec.backend.value == "onnx":  # onnx.load refuses hard-linked external data (the stage is a clone)
                external_data.unshare(stage)
            result = spec.build_fn()(ctx, spec)
            if spec.backend.value == "onnx":  # graphs over the limit keep their tensors in <graph>_data
                result.files = external_data.settle_all(result.files)
        entry["files"] = [r.to_dict() for r in record_files(stage, result.files)]
        entry["build"] = result.build
        model = load_variant_model(stage, spec, ctx.kind, truncate_dim)
        tape = parity_replay.record(model)  # the runtime path reuses this path's graph runs (same feeds)
        label = f"Running {spec.id} on the probe {kspec.unit}"
        run, lengths = parity_run.candidate_run(spec, kspec.outputs, model, kinds.PARITY_BATCH)
        out = parity_run.run_chunked(progress, label, run, probe.inputs)
        if tape is not None:
            tape.close()
        with progress.step(f"Checking parity of {spec.id}"):
            metrics = kspec.compare(ref_out, out, probe)
            verdict = parity.judge(metrics, threshold)
            entry["parity"] = parity_run.check_serving_paths(
                parity.to_manifest(metrics, threshold, verdict, probe_sha256),
                ref_out,
                out,
                stage,
                entry["load"],
                ctx.kind,
                probe.texts,
                threshold,
                tape=tape,
                lengths=lengths,
            )
        if ctx.options.get("consumers"):
            from exporter.quality import consumers

            with progress.step(f"Loading {spec.id} through {', '.join(ctx.options['consumers'])}"):
                names = ctx.options["consumers"]
                rows = consumers.rows_for(stage, entry, ctx.kind, names, probe, ref_out, threshold, entry["parity"])
            entry["parity"] = consumers.with_rows(entry["parity"], rows)
        entry["status"] = "passed" if entry["parity"]["passed"] else "failed"
    except UsageError:
        raise
    except FidelityError as exc:  # broken output (NaN, wrong shape) fails the gate, it is not a crash
        entry["status"] = "failed"
        entry["error"] = str(exc)
    except ExporterError as exc:
        entry["error"] = str(exc)
        log.debug("variant %s could not be built", spec.id, exc_info=True)  # shown by --verbose
    except Exception as exc:  # a backend crash fails this variant, not the others
        entry["error"] = f"{type(exc).__name__}: {exc}"
        log.debug("variant %s could not be built", spec.id, exc_info=True)
    return entry
