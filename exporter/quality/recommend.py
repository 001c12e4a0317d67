"""Pick the variant to serve: the fastest one on this CPU that passes every gate threshold.

The rule (``RULE``, recorded in the manifest's ``recommended``): among variants whose status is
``passed`` (every threshold recorded in ``parity.threshold`` met: cosine_min and, where set,
neighbour_agreement_at_10 and spearman_pairwise) and that were benchmarked in the manifest's latest bench
run, take the highest throughput ratio to torch at batch 32 (the largest measured batch size if 32 was
not measured); a tie goes to the smaller variant on disk, then to the catalogue order.
"""

from __future__ import annotations

PREFERRED_BATCH = 32
RULE = (
    "fastest at batch {batch} (median throughput ratio to torch, same bench run) among variants that pass "
    "every gate threshold; ties: smaller on disk"
)


def rule_batch(manifest: dict) -> int | None:
    """The batch size the rule compares at: 32, else the largest one the bench measured."""
    sizes = (manifest.get("bench") or {}).get("batch_sizes") or []
    if not sizes:
        return None
    return PREFERRED_BATCH if PREFERRED_BATCH in sizes else max(sizes)


def eligible(variant: dict) -> bool:
    """Passes every gate threshold recorded for it."""
    parity = variant.get("parity") or {}
    return variant["status"] == "passed" and bool(parity.get("passed")) and not parity.get("failures")


def size_bytes(variant: dict) -> int:
    return sum(f["size"] for f in variant["files"])


def recommend(manifest: dict) -> dict | None:
    """The manifest's ``recommended`` entry, or None before any bench run.

    ``variant`` is None (with ``reason``) when no benchmarked variant passes its thresholds.
    """
    batch = rule_batch(manifest)
    if batch is None:
        return None
    key = str(batch)
    benched = [v for v in manifest["variants"] if (v.get("bench") or {}).get("ratio_to_torch", {}).get(key)]
    passing = [v for v in benched if eligible(v)]
    entry = {"variant": None, "rule": RULE.format(batch=batch), "batch_size": batch, "throughput_ratio": None}
    if not passing:
        failed = sorted(v["id"] for v in benched if not eligible(v))
        entry["reason"] = f"no benchmarked variant passes its gate (failed: {', '.join(failed)})"
        return entry
    order = {v["id"]: i for i, v in enumerate(manifest["variants"])}
    best = min(passing, key=lambda v: (-v["bench"]["ratio_to_torch"][key], size_bytes(v), order[v["id"]]))
    bench = best["bench"]
    entry.update(
        variant=best["id"],
        throughput_ratio=bench["ratio_to_torch"][key],
        throughput=bench["throughput"][key],
        reference_throughput=((manifest.get("bench") or {}).get("reference") or {}).get("throughput", {}).get(key),
        file_name=best["load"].get("file_name"),
        backend=best["backend"],
    )
    return entry
