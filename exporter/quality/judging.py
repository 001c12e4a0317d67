"""The gate's verdict on one measurement: ``judge`` holds a metrics object (``exporter.quality.parity``) to a
threshold set (``exporter.quality.parity_gates``), every probe stratum included, and ``to_manifest`` writes
the manifest's ``variants[].parity`` entry. Re-exported by ``exporter.quality.parity``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from exporter.quality.parity_gates import UPPER_BOUNDS, VARIANT_METRICS


@dataclass(frozen=True)
class Verdict:
    passed: bool
    failures: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": list(self.failures)}


def judge(metrics, thresholds) -> Verdict:
    """Pass when every set threshold is met (minimums, and maximums for ``UPPER_BOUNDS``). Each failure
    names the metric, its value and the threshold.

    A threshold whose metric could not be computed (too few texts) fails: a gate that was asked for is
    never skipped silently. A metric the measurement skipped (``metrics.skipped``: the reference gives it
    nothing to measure, e.g. every probe text embeds alike) passes; the reason is recorded beside it. A
    ``VARIANT_METRICS`` metric is judged when measured (``exporter.quality.gate`` always measures it).

    Every stratum of the probe set (``metrics.strata``) is held to the same thresholds, for the metrics it
    reports (``exporter.quality.parity``'s module doc); each failure names the stratum and its worst text.
    """
    failures = []
    skipped = getattr(metrics, "skipped", None) or {}
    for name in (f.name for f in fields(thresholds)):
        limit = getattr(thresholds, name)
        if limit is None:
            continue
        value = getattr(metrics, name, None)
        if value is None and (name in skipped or name in VARIANT_METRICS):
            continue
        if value is None:
            failures.append(
                f"{name} could not be computed on {metrics.n} text(s) (threshold {limit}); "
                f"use more probe texts or switch the gate off with {name}=none."
            )
        elif name in UPPER_BOUNDS:
            if not value <= limit:  # also catches NaN
                failures.append(f"{name} {value:.6g} is above the threshold {limit}.")
        elif not value >= limit:  # also catches NaN
            failures.append(f"{name} {value:.6f} is below the threshold {limit}.")
    failures += _stratum_failures(getattr(metrics, "strata", None) or {}, thresholds)
    return Verdict(passed=not failures, failures=failures)


# Rank metrics are fractions of a stratum's neighbour slots (texts x 10): in a small stratum one swapped
# neighbour moves the value by more than the allowance can absorb. A stratum's rank metric is judged only
# when one swap moves it by at most a tenth of the allowance (1 - threshold): at least
# RANK_SWAP_SHARE / (10 * (1 - threshold)) texts (20 at int8's 0.95); the whole set's gate still holds.
RANK_METRICS = {"neighbour_agreement_at_10": 10}  # metric -> neighbour slots per text
RANK_SWAP_SHARE = 10
# A judged stratum's rank metric is the mean over its texts of a per-text agreement: an estimate of what the
# variant does on texts like them, with a standard error of sd / sqrt(n) (recorded as ``<metric>_se``). The
# stratum passes when its one-sided 95% lower confidence bound, mean - RANK_CONFIDENCE_Z * se, clears the
# threshold: a variant whose neighbours agree at 0.96 over 30 texts that disagree unevenly has not shown that
# it keeps 0.95 on the next 30. A variant that keeps every neighbour has se 0 and passes at its mean.
RANK_CONFIDENCE_Z = 1.645


def rank_bound(entry: dict, name: str) -> float | None:
    """A stratum entry's value of rank metric ``name`` at its lower confidence bound (the value itself when
    no standard error was recorded: an older manifest, or fewer than two informative texts)."""
    value, se = entry.get(name), entry.get(f"{name}_se")
    if value is None or name not in RANK_METRICS:
        return value
    return value if se is None else value - RANK_CONFIDENCE_Z * se


def rank_gate_min_texts(name: str, limit: float) -> float | None:
    """The smallest stratum whose ``name`` is judged at ``limit`` (None: not a rank metric; inf: never judged)."""
    import math

    slots = RANK_METRICS.get(name)
    if slots is None:
        return None
    allowance = 1.0 - limit
    return math.inf if allowance <= 0 else math.ceil(RANK_SWAP_SHARE / (slots * allowance) - 1e-9)


def _stratum_failures(strata: dict[str, dict], thresholds) -> list[str]:
    """One line per (stratum, metric) that misses its threshold, a rank metric by its lower confidence bound
    (``rank_bound``); a metric a stratum has no value for (no query of it was informative), or a rank metric
    of a stratum too small for it (``rank_gate_min_texts``), is left to the whole set's gate."""
    out = []
    for stratum, entry in strata.items():
        for name in (f.name for f in fields(thresholds)):
            limit, value = getattr(thresholds, name), entry.get(name)
            if limit is None or value is None:
                continue
            smallest = rank_gate_min_texts(name, limit)
            if smallest is not None and entry["n"] < smallest:
                continue
            judged = rank_bound(entry, name)
            bad = not judged <= limit if name in UPPER_BOUNDS else not judged >= limit  # NaN fails both
            if bad:
                side = "above" if name in UPPER_BOUNDS else "below"
                shown = f"{value:.6g}" if judged == value else f"{value:.6g} (95% lower bound {judged:.6g})"
                out.append(
                    f"stratum {stratum} ({entry['n']} texts): {name} {shown} is {side} the threshold {limit} "
                    f"(worst text #{entry['worst_text_index']})."
                )
    return out


def to_dict(metrics, thresholds, verdict: Verdict) -> dict[str, Any]:
    """JSON-ready: the metrics, ``threshold`` (dict), ``passed`` and ``failures``."""
    return {**metrics.to_dict(), "threshold": thresholds.to_dict(), **verdict.to_dict()}


def to_manifest(metrics, thresholds, verdict: Verdict, probe_sha256: str) -> dict:
    """The manifest's ``variants[].parity`` entry: ``to_dict`` plus the probe set's sha256."""
    return {**to_dict(metrics, thresholds, verdict), "probe_sha256": probe_sha256}
