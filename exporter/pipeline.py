"""The export pipeline: resolve the pin, build each variant, check its parity, write the manifest.

One plan object drives it, whether it came from CLI flags or a recipe file. The pipeline raises typed
errors and reports progress through a ``Progress`` object; it never prints. What differs between model
kinds (embedders, cross-encoders, sparse encoders: probe inputs, outputs, metrics, facts) is looked up in
``exporter.kinds``; every model (the reference, each variant) is loaded by ``exporter.runners``, as verify
and bench load them; the manifest is assembled by ``exporter.manifest`` and the artifact folder's shared
files and re-run reuse are ``exporter.artifact``'s.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from exporter.errors import ExporterError, ExportFailed, FidelityError, UsageError
from exporter.fsutil import FileRecord, is_disk_full, record_files
from exporter.progress import NoProgress, Progress
from exporter.staging import staged_dir

if TYPE_CHECKING:
    from exporter.manifest_types import Environment, Manifest, ModelFacts, SourceEntry, VariantEntry
    from exporter.quality.probes import TextSet
    from exporter.source.resolve import ResolvedSource
    from exporter.support import Match
    from exporter.variants import VariantSpec

log = logging.getLogger(__name__)


@dataclass
class ExportPlan:
    """Everything one export needs; the CLI and recipe files both build this."""

    model: str
    revision: str | None = None
    variants: list[str] | None = None  # None: the default set
    out: Path | None = None
    probe: Path | None = None
    calibration: Path | None = None
    # precision class or variant id -> metric -> threshold (None switches a gate off)
    thresholds: dict[str, dict[str, float | None]] = field(default_factory=dict)
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
    manifest: Mapping[str, Any] | None  # None only when every variant was already published and none is here
    skipped: bool  # the artifact was already complete and nothing was rebuilt
    published: dict[str, str] = field(default_factory=dict)  # variant id -> where it is already published

    @property
    def failed(self) -> list[str]:
        return [v["id"] for v in (self.manifest or {"variants": []})["variants"] if v["status"] != "passed"]


def default_out(artifacts_root: Path, src) -> Path:
    """``artifacts/<org>--<name>/<sha12>/``; a local folder gets ``local--<name>/<hash12 of its files>``
    (the layout is ``exporter.outdir``'s)."""
    from exporter import outdir

    if src.repo_id and src.revision:
        return outdir.artifact_dir(artifacts_root, src.repo_id, src.revision)
    return outdir.local_artifact_dir(artifacts_root, src.local_path, src.files)


def run_export(plan: ExportPlan, progress: Progress | None = None) -> ExportOutcome:
    """Run one export plan end to end; failed variants are recorded, see ``raise_for_failures``.

    The plan flows down once: resolve the source, decide its kind, the variants that apply and their
    thresholds, then (holding the output folder) build, check and record each variant.

    The artifact is committed after each variant (built in a hard-linked clone beside it, then swapped
    in), so it is always complete for what its manifest lists: an interrupted run loses only the
    variant in flight, and re-running resumes by building only what is missing. A variant already in
    the manifest is kept when its files still match and its fingerprint (``exporter.fingerprint``) is
    the one this run computes; ``force`` rebuilds everything. With ``plan.publish`` (a fleet recipe's
    registry), a variant whose fingerprint is published there already is not built at all.
    """
    from exporter import outdir, plan_check, upstream_noise

    upstream_noise.quiet()

    progress = progress or NoProgress()
    plan_check.decide(plan)  # bad ids and thresholds (and, with a stated kind, its own) fail before resolving
    from exporter.quality import tokenizer_probes

    src, base_probes, calib_set = _resolve(plan, progress)
    kind = _kind_of(src, plan)
    decided = plan_check.decide(plan, kind=kind, folder=src.path, narrow=True)  # as the dry run decides
    probe_set = tokenizer_probes.for_model(
        base_probes,
        src.path,
        max_length=plan.max_seq_length,
        prompts=plan.prompts,
        trust_remote_code=plan.trust_remote_code,
    )
    specs, shape, thresholds = decided.specs, decided.shape, decided.thresholds
    assert shape is not None and thresholds is not None  # narrowed on the source's files, for its kind
    out = plan.out or default_out(plan.artifacts_root, src)
    outdir.check_out(out)  # before anything heavy: writable, and nothing there the tool did not write
    with outdir.claim(out) as cleaned:
        for line in cleaned:
            progress.note(line)
        job = _Export(plan, src, kind, specs, shape, thresholds, probe_set, calib_set, out, progress)
        return _export_into(job)


@dataclass
class _Export:
    """One export as ``run_export`` decided it, before anything is built: what the later steps read."""

    plan: ExportPlan
    src: ResolvedSource
    kind: str
    specs: list[VariantSpec]  # the variants to have in the artifact
    shape: Match  # the model's support rule and the facts read to match it (exporter.support)
    thresholds: dict  # variant id -> parity thresholds
    probe_set: TextSet
    calib_set: TextSet | None
    out: Path
    progress: Progress


def _resolve(plan: ExportPlan, progress: Progress) -> tuple[ResolvedSource, TextSet, TextSet | None]:
    """The resolved source and the probe / calibration text sets (bad files refused before resolving; the
    probes derived from the model's tokenizer are added once the plan is decided)."""
    from exporter.quality import probes
    from exporter.source import resolve as source

    ref = source.parse_model_ref(plan.model, plan.revision)
    base = probes.load_text_set(plan.probe, "probe")
    calib_set = probes.load_text_set(plan.calibration, "calibration") if plan.calibration else None
    with progress.step("Resolving source"):
        src = source.resolve(
            ref,
            allow_unpinned=plan.allow_unpinned,
            trust_remote_code=plan.trust_remote_code,
            allow_pickle=plan.allow_pickle,
        )
    if src.skipped:  # recorded in the manifest too (source.skipped)
        shown = ", ".join(src.skipped[:5]) + (f" and {len(src.skipped) - 5} more" if len(src.skipped) > 5 else "")
        progress.note(f"Not copied (the model does not load them): {shown}")
    return src, base, calib_set


def _kind_of(src: ResolvedSource, plan: ExportPlan) -> str:
    """The kind the source is exported as; UsageError for options that do not apply to it."""
    from exporter import kinds

    kind = kinds.resolve_kind(src, plan.kind).value
    for option, verb in (("prompts", "apply"), ("truncate_dim", "applies")):  # KindSpec flags of the same name
        if getattr(plan, option) and not getattr(kinds.get(kind), option):
            takers = ", ".join(s.kind.value for s in kinds.KINDS.values() if getattr(s, option))
            raise UsageError(f"{src} is a {kind} model; {option} {verb} to {takers} models only.", "")
    return kind


def _export_into(job: _Export) -> ExportOutcome:
    """The part of ``run_export`` that runs holding the lock of ``job.out``: reuse, build, check, record."""
    from exporter import artifact, fingerprint
    from exporter import manifest as mf
    from exporter.environment import environment
    from exporter.quality import recorded_reference

    env = environment()
    source_entry: SourceEntry = {**job.src.to_dict(), "trust_remote_code": job.plan.trust_remote_code}
    prints = fingerprint.ExportPrints.of(
        job, source_entry, env, batching=_batching(), calibration_sha256=_calibration(job).sha256
    )
    kept = artifact.kept_variants(job.out, source_entry, prints.asked, prints.inputs_of, force=job.plan.force)
    published = _published(job, prints.asked, kept)
    todo = [s for s in job.specs if s.id not in kept and s.id not in published]
    if not todo:
        listed = (job.out / mf.MANIFEST_NAME).is_file()
        return ExportOutcome(job.out, mf.load(job.out) if listed else None, skipped=True, published=published)

    ctx = _build_context(job)
    ctx.reference_key = prints.base.reference_key  # builders derive their caches and memos from it
    reference, gate = _open_gate(job, ctx, prints.base.reference_key)
    fresh = not kept
    entries: dict[str, VariantEntry] = dict(kept)
    manifest: Manifest | None = None
    for spec in todo:
        with staged_dir(job.out, replace=True, clone=not fresh) as stage:
            ctx.stage_dir = stage
            if fresh:
                shared = artifact.copy_shared(job.src, stage, job.plan.max_seq_length)
                written = recorded_reference.write(
                    stage, gate.probe.texts, job.probe_set.labels(), gate.reference, job.kind
                )
                shared += record_files(stage, written)
                fresh = False
            else:
                shared = [FileRecord(**f) for f in mf.load(stage)["shared_files"]]
            entries[spec.id] = _build_and_check(spec, ctx, stage, gate, job.progress, prints.asked[spec.id])
            artifact.remove_stale_files(stage, entries)
            manifest = _record(job, stage, entries, shared, source_entry, env, reference)
    assert manifest is not None  # todo holds at least one variant
    return ExportOutcome(artifact=job.out, manifest=manifest, skipped=False, published=published)


def _batching() -> dict:
    """The batching part of the fingerprint: the gate's batch size and batching, batch invariance's sizes."""
    from exporter import kinds
    from exporter.quality import gate

    return {"batch": kinds.PARITY_BATCH, "batching": gate.BATCHING, "invariance_batch_sizes": gate.bench_batch_sizes()}


def _calibration(job: _Export):
    """The calibration set the calibrating builders use: the plan's, else the built-in one."""
    from exporter.quality import probes

    return job.calib_set or probes.load_text_set(None, "calibration")


def _published(job: _Export, asked: Mapping[str, Any], kept: Mapping[str, Any]) -> dict[str, str]:
    """Variant id -> where the plan's registry already holds it with this run's fingerprint (none unpinned)."""
    from exporter.ship.published import already_published

    wanted = {s.id: asked[s.id].digest for s in job.specs if s.id not in kept}
    revision = job.src.revision if job.src.pinned else None
    return already_published(job.plan.publish, revision, wanted, job.progress.note)


def _build_context(job: _Export):
    from exporter.builders.context import BuildContext, BuildSettings

    plan = job.plan
    return BuildContext(
        source_dir=job.src.path,
        stage_dir=job.out,
        calibration_texts=lambda: _calibration(job).texts,
        probe_texts=lambda: job.probe_set.texts,
        settings=BuildSettings(
            trust_remote_code=plan.trust_remote_code,
            max_seq_length=plan.max_seq_length,
            truncate_dim=plan.truncate_dim,
        ),
        kind=job.kind,
        rule=job.shape.rule,
    )


def _open_gate(job: _Export, ctx, reference_key: str):
    """The torch reference (shared with the builders) and the gate every variant is judged by: the probe,
    the reference's outputs on it (from the cache under ``reference_key``, the export fingerprint's reference
    parts, when an export with the same ones ran them before) and the plan's thresholds."""
    from exporter import kinds
    from exporter.quality import gate, refcache

    kspec, plan, progress = kinds.get(job.kind), job.plan, job.progress
    with progress.step(f"Loading the torch reference ({kspec.label})"):
        reference = ctx.reference_model()
        _check_truncate_dim(plan.truncate_dim, reference)
    probe = kspec.probe(job.probe_set.texts, job.probe_set.labels())
    label = f"Running the reference on {len(probe.inputs)} probe {kspec.unit}"
    run_ref = lambda: gate.reference_outputs(job.kind, reference, probe.inputs, progress, label)  # noqa: E731
    ref_out, hit = refcache.cached(reference_key, run_ref)
    if hit:
        progress.note(f"{label}: reused the cached reference outputs ({refcache.cache_dir()})")
    the_gate = gate.Gate(
        kind=job.kind,
        probe=probe,
        probe_sha256=job.probe_set.sha256,
        reference=ref_out,
        thresholds=lambda variant: job.thresholds[variant["id"]],
        consumers=tuple(plan.consumers or ()),
        reference_model=reference,
        reference_key=reference_key,
    )
    return reference, the_gate


def _record(
    job: _Export,
    stage: Path,
    entries: dict[str, VariantEntry],
    shared,
    source_entry: SourceEntry,
    env: Environment,
    reference,
) -> Manifest:
    """Write the manifest of what ``stage`` holds now (variants in catalogue order) and return it."""
    from exporter import kinds, variants
    from exporter import manifest as mf
    from exporter.quality import probes

    ordered = [entries[s.id] for s in variants.CATALOGUE if s.id in entries]
    uses_calibration = any(e["build"].get("calibration") for e in ordered)
    calibration = job.calib_set or (probes.load_text_set(None, "calibration") if uses_calibration else None)
    manifest = mf.build(
        source=source_entry,
        # a kind's facts: its keys of the section (the schema, which tests/test_manifest_types.py holds ModelFacts to)
        model=cast(
            "ModelFacts",
            {**kinds.get(job.kind).facts(reference), "prompts": job.plan.prompts, "shape": job.shape.to_dict()},
        ),
        environment=env,
        probe=job.probe_set,
        calibration=calibration,
        shared=shared,
        variants=ordered,
        publishable=all(e["status"] == "passed" for e in ordered) and job.src.pinned,
    )
    mf.save(stage, manifest)
    return manifest


def raise_for_failures(outcome: ExportOutcome) -> None:
    """FidelityError if a variant missed its thresholds; ExportFailed if one could not be built."""
    listed = (outcome.manifest or {"variants": []})["variants"]
    by_status = {s: [v["id"] for v in listed if v["status"] == s] for s in ("failed", "error")}
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


def _build_and_check(spec, ctx, stage: Path, gate, progress, fingerprint) -> VariantEntry:
    """Build one variant into ``stage`` and judge it with ``gate`` (``exporter.quality.gate``); its entry records
    ``fingerprint`` (``exporter.fingerprint``: what a re-run compares)."""
    from exporter import manifest as mf
    from exporter.builders import external_data
    from exporter.fingerprint import twin_key
    from exporter.runners.variant import load_variant

    entry = mf.variant_entry(spec, ctx.settings.truncate_dim)
    entry["fingerprint"] = fingerprint.to_dict()
    try:
        with progress.step(f"Building {spec.id}"):
            if spec.backend.value == "onnx":  # onnx.load refuses hard-linked external data (the stage is a clone)
                external_data.unshare(stage)
            result = spec.build_fn()(ctx, spec)
            if spec.backend.value == "onnx":  # graphs over the limit keep their tensors in <graph>_data
                result.files = external_data.settle_all(result.files)
        entry["files"] = [r.to_dict() for r in record_files(stage, result.files)]
        entry["build"] = result.build
        checked = ctx.memo("parity-checked", dict)  # fingerprint.twin_key -> (variant id, its parity entry)
        key = twin_key(entry["fingerprint"], entry)
        if key in checked:  # the same bytes loaded the same way, judged alike: the same check
            twin, parity = checked[key]
            entry["parity"] = same = {**copy.deepcopy(parity), "same_files_as": twin}
            entry["status"] = "passed" if same["passed"] else "failed"
            progress.note(f"{spec.id}: the same files as {twin}, whose gate verdict applies unchanged")
            return entry
        model = load_variant(stage, entry, ctx.kind)  # as verify loads it, by the same function
        entry["parity"] = checked_parity = gate.check(stage, entry, model, progress)
        entry["status"] = "passed" if checked_parity["passed"] else "failed"
        checked[key] = (spec.id, copy.deepcopy(checked_parity))
    except UsageError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise  # a full disk is not this variant's verdict: the export stops, staged_dir says where
        if isinstance(exc, FidelityError):  # broken output (NaN, wrong shape) fails the gate, it is not a crash
            entry["status"] = "failed"
            entry["error"] = str(exc)
        else:  # a backend crash fails this variant, not the others
            entry["error"] = str(exc) if isinstance(exc, ExporterError) else f"{type(exc).__name__}: {exc}"
            log.debug("variant %s could not be built", spec.id, exc_info=True)  # shown by --verbose
    return entry
