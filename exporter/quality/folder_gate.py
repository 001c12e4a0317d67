"""Gating a serving folder: each named consumer (real or emulated) run on it, judged against the variant as the
artifact serves it."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.quality.consumers import BY_NAME, CONSUMERS, EMBEDDER, SKIPPED, Consumer, Target, check
from exporter.quality.emulated_servers import EMULATED_CONSUMERS

GATES: dict[str, Consumer] = {c.name: c for c in (*CONSUMERS, *EMULATED_CONSUMERS)}


def gate_folder(folder: Path, layout_manifest: dict, artifact: Path, manifest: dict, names: list[str], texts):
    """Rows for a serving folder (a layout) run through ``names`` on ``texts``, each judged with the variant's
    thresholds against the variant as the artifact serves it (the runtime on the artifact's own file: the
    path the export gated against torch). A consumer not installed here gives a skipped row saying so."""
    from exporter import kinds
    from exporter import manifest as mf
    from exporter.quality import parity
    from exporter.source import st_modules

    entry = layout_manifest["variants"][0]
    source = mf.get_variant(manifest, entry["id"])
    kind = manifest["model"]["kind"]
    if source["load"]["backend"] not in BY_NAME["runtime"].backends or kind != EMBEDDER:
        why = "its reference needs torch (gated by sentence-transformers at export)"
        return [
            {"consumer": n, "runs": GATES[n].runs, "status": SKIPPED, "message": f"not gated here: {why}."}
            for n in names
        ]
    threads = os.cpu_count() or 1
    own = Target(Path(artifact), source, st_modules.read(Path(artifact)), threads)
    reference = BY_NAME["runtime"].encode(own, texts)
    recorded = (source.get("parity") or {}).get("threshold")
    precision = source.get("precision")
    threshold = parity.thresholds_from_dict(kind, recorded, precision) if recorded else parity.defaults(kind, precision)
    try:
        facts = st_modules.read(folder)
    except Exception:  # noqa: BLE001 - server folders (triton, ovms) keep the model files elsewhere
        facts = own.facts
    target = Target(folder, entry, facts, threads)
    probe = kinds.get(kind).probe(texts)
    return [
        {**check(GATES[n], target, texts, reference, probe, kind, threshold), "reference": "runtime on the artifact"}
        for n in names
    ]
