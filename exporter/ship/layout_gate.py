"""Gating a written layout: its folder run through the layout's consumers on the export's probe texts."""

from __future__ import annotations

from pathlib import Path

from exporter.errors import FidelityError
from exporter.ship.layout_files import (
    Layout,
)


def probe_texts(manifest: dict) -> list[str]:
    """The texts the export measured on (its probe file if unchanged, else the built-in set), with prompts."""
    from exporter.quality import probes, verify

    texts = probes.load_text_set(verify.export_probe(manifest), "probe")
    return probes.with_prompts(texts, manifest["model"].get("prompts")).texts


def gate_layout(folder: Path, spec: Layout, layout_manifest: dict, artifact: Path, manifest: dict) -> list[dict]:
    """Run the written folder through the layout's consumers on the probe set and judge each against the
    variant's reference (``exporter.quality.folder_gate.gate_folder``: one piece of code for the comparison);
    FidelityError when one differs or cannot run. Returns the rows (skipped ones say why)."""
    from exporter.quality import consumers, folder_gate

    rows = folder_gate.gate_folder(folder, layout_manifest, artifact, manifest, list(spec.gate), probe_texts(manifest))
    bad = consumers.failed_rows(rows)
    if bad:
        detail = "; ".join(f"{r['consumer']} ({r['runs']}): {r['message']}" for r in bad)
        raise FidelityError(
            f"the {spec.name} layout of {layout_manifest['variants'][0]['id']} does not serve what was gated: {detail}",
            "Nothing was written; serve the variant with another layout, or report this.",
        )
    return rows
