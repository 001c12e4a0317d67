"""The public Python API: what each command does, as a typed function. The CLI is a thin layer over these.

    import exporter

    outcome = exporter.export("sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41")
    report = exporter.verify(outcome.artifact)          # re-hash every file, re-run the gate in a fresh process
    result = exporter.bench(outcome.artifact)           # throughput side by side, in one run
    packaged = exporter.package(outcome.artifact)       # a deterministic tar of the recommended variant
    manifest = exporter.load_manifest(outcome.artifact)

Each function raises the library's typed errors (``exporter.errors``): ``UsageError`` for bad input,
``FidelityError`` when a variant misses the gate (with ``check=True``, the default), ``IntegrityError`` when a
file's hash does not match. Every import of a heavy library happens inside the call, so ``import exporter``
stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.pipeline import ExportOutcome, Progress
    from exporter.quality.bench import BenchResult
    from exporter.quality.policy import Policy
    from exporter.quality.verify import VerifyReport


def export(
    model: str,
    *,
    revision: str | None = None,
    variants: Sequence[str] | None = None,
    out: Path | None = None,
    probe: Path | None = None,
    calibration: Path | None = None,
    thresholds: Mapping[str, Mapping[str, float | None]] | None = None,
    max_seq_length: int | None = None,
    prompts: dict[str, str] | None = None,
    truncate_dim: int | None = None,
    kind: str | None = None,
    consumers: Sequence[str] = (),
    force: bool = False,
    allow_unpinned: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: Progress | None = None,
    check: bool = True,
) -> ExportOutcome:
    """Export ``model`` (``org/name@<40-hex sha>``, ``org/name`` with ``revision``, or a local folder) into
    gated variants, as ``exporter export`` does, and return the outcome (``.artifact``, ``.manifest``).

    ``variants`` are catalogue ids (``exporter list-variants``), ``["all"]`` or ``["best"]``; default ``onnx``.
    ``thresholds`` override the gate per precision class or variant id, e.g. ``{"int8": {"cosine_min": 0.985}}``.
    With ``check`` (the default) a variant that misses the gate raises ``FidelityError`` after the artifact
    is written, as the command exits 3; with ``check=False`` the outcome says so and nothing is raised.
    """
    from exporter.pipeline import ExportPlan, raise_for_failures, run_export

    plan = ExportPlan(
        model=model,
        revision=revision,
        variants=list(variants) if variants is not None else None,
        out=Path(out) if out is not None else None,
        probe=Path(probe) if probe is not None else None,
        calibration=Path(calibration) if calibration is not None else None,
        thresholds={scope: dict(metrics) for scope, metrics in (thresholds or {}).items()},
        force=force,
        allow_unpinned=allow_unpinned,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
        prompts=dict(prompts) if prompts else None,
        max_seq_length=max_seq_length,
        truncate_dim=truncate_dim,
        kind=kind,
        consumers=list(consumers),
    )
    outcome = run_export(plan, progress)
    if check:
        raise_for_failures(outcome)
    return outcome


def verify(
    artifact: Path,
    *,
    variants: Sequence[str] | None = None,
    probe: Path | None = None,
    consumers: Sequence[str] = (),
    integrity_only: bool = False,
    policy: Policy | Path | None = None,
    check: bool = True,
) -> VerifyReport:
    """Re-hash every file of ``artifact`` and re-run each variant's gate against the pinned torch reference in
    a fresh process (without torch: against the recorded reference vectors), as ``exporter verify`` does.

    ``policy`` is a ``exporter.quality.policy.Policy`` or a policy file; default: the kind's defaults. The
    artifact's recorded thresholds never judge it. With ``check`` a mismatch raises ``IntegrityError`` and a
    missed gate ``FidelityError``; otherwise read ``report.ok`` and ``report.cases``.
    """
    from exporter.quality.policy import Policy as _Policy
    from exporter.quality.verify import raise_for
    from exporter.quality.verify import verify as run_verify

    rules = policy if isinstance(policy, _Policy) else _Policy.load(Path(policy) if policy is not None else None)
    report = run_verify(
        Path(artifact),
        list(variants) if variants is not None else None,
        Path(probe) if probe is not None else None,
        list(consumers),
        integrity_only=integrity_only,
        policy=rules,
    )
    if check:
        raise_for(report)
    return report


def bench(
    artifact: Path,
    *,
    variants: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 8, 32),
    threads: int | None = None,
    texts: Path | None = None,
    max_texts: int = 256,
    rounds: int = 3,
) -> BenchResult:
    """Throughput at each batch size and batch-1 latency of each variant and the torch reference, timed side
    by side in one run, as ``exporter bench`` does (it does not write the manifest; the command does)."""
    from exporter.quality.bench import bench as run_bench

    return run_bench(
        Path(artifact),
        list(variants) if variants is not None else None,
        batch_sizes=tuple(batch_sizes),
        threads=threads,
        texts=Path(texts) if texts is not None else None,
        max_texts=max_texts,
        rounds=rounds,
    )


@dataclass(frozen=True)
class Packaged:
    """What ``package`` wrote: a tar (``sha256`` set) or a server's folder (``layout`` set, with the rows of
    its consumer gate and the command that starts it)."""

    variant: str
    path: Path
    files: int
    sha256: str | None = None
    layout: str | None = None
    gate: tuple[dict, ...] = field(default_factory=tuple)
    start: str | None = None


def package(
    artifact: Path,
    *,
    variant: str | None = None,
    out: Path | None = None,
    layout: str | None = None,
    allow_failed: bool = False,
    force: bool = False,
) -> Packaged:
    """Write one variant (default: the recommended or only one) as a deterministic tar, or with ``layout``
    (st, tei, fastembed, transformers.js, ovms, triton) as the folder that server loads, after running it
    through that consumer (a difference raises ``FidelityError`` and writes nothing)."""
    from exporter.errors import UsageError

    artifact = Path(artifact)
    if layout is None:
        from exporter.ship.package import build_package

        result = build_package(artifact, variant, out, allow_failed=allow_failed, replace=force)
        return Packaged(result.variant, result.path, result.files, sha256=result.sha256)
    if out is None:
        raise UsageError("a layout is a folder: give it with out=DIR (--out DIR).", "")
    from exporter.ship.layouts import write_layout

    written = write_layout(artifact, variant, layout, Path(out), allow_failed=allow_failed)
    return Packaged(
        written["variant"],
        Path(out),
        len(written["files"]),
        layout=written["layout"],
        gate=tuple(written["gate"]),
        start=written["start"],
    )


def load_manifest(artifact: Path) -> dict:
    """The artifact's ``manifest.json`` (``artifact`` is its folder or the file), validated against
    ``exporter/schema/manifest.schema.json``; its fields are described in ``docs/manifest.md``. Raises
    ``UsageError`` when there is none or it does not validate."""
    from exporter import manifest as mf

    return mf.load(Path(artifact))
