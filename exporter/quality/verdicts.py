"""One verification case and its statuses: what ``verify`` reports per integrity check and per variant, and
what the torch-free check against recorded reference vectors reports too."""

from __future__ import annotations

from dataclasses import dataclass, field

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


@dataclass
class CaseResult:
    """One verification case: ``integrity`` or a variant id."""

    name: str
    status: str  # passed | failed | error | skipped
    message: str = ""
    failures: list[str] = field(default_factory=list)  # one line per failed check
    parity: dict | None = None  # the fresh parity (manifest ``parity`` format), judged under the policy
    recorded: dict | None = None  # the parity recorded at export time
    looser: list[str] = field(default_factory=list)  # recorded thresholds looser than the policy's
    seconds: float = 0.0

    @property
    def ok(self) -> bool:  # skipped: not judged here (files failed integrity, or this CPU cannot run it)
        return self.status in (PASSED, SKIPPED)


def worst_stratum(parity: dict, kind: str | None) -> tuple[str, dict] | None:
    """The probe stratum where a variant came closest to failing: the worst by the kind's first stratum metric
    (the lowest, or the highest for an upper-bound metric), with its entry; None without strata. ``kind`` None:
    an embedder, as ``kinds.get`` reads it."""
    from exporter import kinds
    from exporter.quality import parity_gates

    if not parity.get("strata"):
        return None
    first = kinds.get(kind).strata[0]
    pick = min if first.key not in parity_gates.UPPER_BOUNDS else max
    return pick(parity["strata"].items(), key=lambda kv: kv[1].get(first.key) or 0.0)


def summary(parity: dict, manifest: dict, probe: dict | None) -> str:
    """One line per variant: the metrics the model's kind shows in verify (``KindSpec.verify``), and more."""
    from exporter import kinds

    kspec = kinds.of_manifest(manifest)
    parts = [f"{m.label} {m.format(parity[m.key])}" for m in kspec.verify if parity.get(m.key) is not None]
    if worst := worst_stratum(parity, kspec.kind):
        parts.append(f"worst stratum {worst[0]} ({kspec.strata_label()} {kspec.stratum_cell(worst[1])})")
    runtime = (parity.get("serving_paths") or {}).get("runtime") or {}
    if runtime.get("cosine_min") is not None:
        parts.append(f"runtime path cosine_min {runtime['cosine_min']:.6f}")
    if parity.get("skipped"):
        parts.append(f"skipped (no variance in the reference): {', '.join(parity['skipped'])}")
    if probe and probe.get("sha256") != manifest["probe"]["sha256"]:
        parts.append("(probe set differs from the one used at export)")
    return ", ".join(parts)
