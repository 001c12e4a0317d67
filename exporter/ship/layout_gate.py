"""Gating a written layout: its folder run through the layout's consumers, judged by the export's gate.

The gate is ``exporter.quality.gate.Gate`` over the reference the export recorded in the artifact
(``exporter.quality.recorded_reference.open_gate``: the torch reference's vectors of the whole probe set,
strata included), with the policy's thresholds for the variant: each consumer row carries the metrics,
per-stratum worst cases and verdict a variant's own gate gives, so a layout passes only where the variant
it serves holds against torch. An artifact that records no reference (one exported before they were
recorded) is judged against the variant as the artifact serves it instead (the runtime on its own file:
the path the export gated against torch), on the export's probe texts; each row names its reference.
"""

from __future__ import annotations

import os
from pathlib import Path

from exporter.errors import FidelityError
from exporter.ship.layout_files import (
    Layout,
)

RUNTIME_REFERENCE = "runtime on the artifact"  # the reference of an artifact that records none


def probe_texts(manifest: dict) -> list[str]:
    """The texts the export measured on (its probe file if unchanged, else the built-in set), with prompts."""
    from exporter.quality import probes, verify

    texts = probes.load_text_set(verify.export_probe(manifest), "probe")
    return probes.with_prompts(texts, manifest["model"].get("prompts")).texts


def gates() -> dict:
    """Every consumer a layout can be gated by: the real ones and the emulated servers, by name."""
    from exporter.quality.consumers import CONSUMERS
    from exporter.quality.emulated_servers import EMULATED_CONSUMERS

    return {c.name: c for c in (*CONSUMERS, *EMULATED_CONSUMERS)}


def gate_rows(folder: Path, layout_manifest: dict, artifact: Path, manifest: dict, names: list[str], policy=None):
    """Rows for a serving folder (a layout) run through ``names``, each judged by the export's gate
    (``open_gate``) with ``policy``'s thresholds (default: the kind's defaults) for the variant it serves.
    A consumer not installed here gives a skipped row saying so."""
    from exporter import kinds
    from exporter import manifest as mf
    from exporter.quality import consumers, gate, recorded_reference
    from exporter.quality.policy import DEFAULT
    from exporter.source import st_modules

    by_name = gates()
    entry = layout_manifest["variants"][0]
    source = mf.get_variant(manifest, entry["id"])
    kind = manifest["model"]["kind"]
    if source["load"]["backend"] not in consumers.BY_NAME["runtime"].backends or kind != consumers.EMBEDDER:
        why = "its reference needs torch (gated by sentence-transformers at export)"
        return [
            {"consumer": n, "runs": by_name[n].runs, "status": consumers.SKIPPED, "message": f"not gated here: {why}."}
            for n in names
        ]
    policy = policy or DEFAULT
    thresholds = lambda v: policy.thresholds_for(kind, v["precision"], v["id"])  # noqa: E731
    threads = os.cpu_count() or 1
    artifact = Path(artifact)
    own = consumers.Target(artifact, source, st_modules.read(artifact), threads)
    the_gate, reference = recorded_reference.open_gate(artifact, manifest, thresholds), recorded_reference.REFERENCE
    if the_gate is None:
        texts = probe_texts(manifest)
        the_gate = gate.Gate(
            kind=kind,
            probe=kinds.get(kind).probe(texts),
            probe_sha256=manifest["probe"]["sha256"],
            reference=consumers.BY_NAME["runtime"].encode(own, texts),
            thresholds=thresholds,
            threads=threads,
        )
        reference = RUNTIME_REFERENCE
    try:
        facts = st_modules.read(folder)
    except Exception:  # noqa: BLE001 - server folders (triton, ovms) keep the model files elsewhere
        facts = own.facts
    target = consumers.Target(folder, entry, facts, threads)
    return [{**the_gate.consumer_row(by_name[n], target, source), "reference": reference} for n in names]


def gate_layout(
    folder: Path, spec: Layout, layout_manifest: dict, artifact: Path, manifest: dict, policy=None
) -> list[dict]:
    """Run the written folder through the layout's consumers (``gate_rows``); FidelityError when one fails
    or cannot run. Returns the rows (skipped ones say why)."""
    from exporter.quality import consumers

    rows = gate_rows(folder, layout_manifest, artifact, manifest, list(spec.gate), policy)
    bad = consumers.failed_rows(rows)
    if bad:
        detail = "; ".join(f"{r['consumer']} ({r['runs']}): {r['message']}" for r in bad)
        raise FidelityError(
            f"the {spec.name} layout of {layout_manifest['variants'][0]['id']} does not serve what was gated: {detail}",
            "Nothing was written; serve the variant with another layout, or report this.",
        )
    return rows
