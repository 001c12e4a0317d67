"""The start line of a written layout: the command that serves it, with what decides correctness (pooling,
normalisation, truncation) filled in."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from exporter.ship.layout_files import (
    OV_CONFIG_FILE,
    Layout,
)
from exporter.ship.triton_config import triton_model_name


def _start_st(out: Path, variant: dict) -> str:
    """The line that serves the st layout: sentence-transformers with the variant's load options (file,
    OpenVINO config), or the torch-free runtime (which reads the manifest, pools and truncates as the model)."""
    load_spec, where = variant["load"], out.resolve()
    st = "from sentence_transformers import SentenceTransformer as S"
    if load_spec["backend"] == "torch":
        return f'python -c \'{st}; print(S("{where}").encode(["hi"]).shape)\''
    kwargs = {"file_name": load_spec["file_name"]}
    if load_spec["backend"] == "openvino":
        kwargs["ov_config"] = str(where / posixpath.dirname(load_spec["file_name"]) / OV_CONFIG_FILE)
    runtime = f'from exporter import runtime; print(runtime.load("{where}").encode(["hi"]).shape)'
    return (
        f'python -c \'{st}; m = S("{where}", backend="{load_spec["backend"]}", '
        f"model_kwargs={json.dumps(kwargs)}); print(m.encode([\"hi\"]).shape)'  # torch-free: python -c '{runtime}'"
    )


def start_line(spec: Layout, out: Path, layout_manifest: dict) -> str:
    """The layout's start line with what decides correctness filled in: pooling, normalisation, truncation."""
    from exporter.source import st_modules

    entry = layout_manifest["variants"][0]
    if spec.name == "st":
        return _start_st(out, entry)
    model = layout_manifest["model"]
    facts = None
    try:
        facts = st_modules.read(out)
    except Exception:  # noqa: BLE001 - triton/ovms folders have no modules.json at their root
        pass
    mode = facts.pooling.modes[0] if facts and facts.pooling else "mean"
    where = {
        "dir": out,
        "abs": out.resolve(),
        "parent": out.resolve().parent,
        "name": out.name,
        "max_len": model.get("max_seq_length"),
        "pooling": {"mean": "MEAN", "cls": "CLS", "lasttoken": "LAST_TOKEN"}.get(mode, mode.upper()),
        "pooling_js": mode,
        "normalize": bool(facts.normalize) if facts else True,
        "normalize_js": str(bool(facts.normalize) if facts else True).lower(),
        "dim": (facts.pooling.dimension if facts and facts.pooling else None),
        "model": triton_model_name(layout_manifest),
    }
    return spec.start.format(**where)
