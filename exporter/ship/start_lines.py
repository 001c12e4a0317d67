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

# How each model kind's st layout is served in Python: the line, with {where}, {backend} and {kwargs} (the
# variant's load options) filled in. ColBERT and bge-m3 graphs have outputs of their own: their own runtime.
ST_SERVE_LINES = {
    "sentence-transformer": "from sentence_transformers import SentenceTransformer as M; "
    'm = M("{where}", backend="{backend}", model_kwargs={kwargs}); print(m.encode(["hi"]).shape)',
    "sparse-encoder": "from sentence_transformers import SparseEncoder as M; "
    'm = M("{where}", backend="{backend}", model_kwargs={kwargs}); print(m.encode(["hi"]).shape)',
    "cross-encoder": "from sentence_transformers import CrossEncoder as M; "
    'm = M("{where}", backend="{backend}", model_kwargs={kwargs}); print(m.predict([("hi", "hello")]))',
    "colbert": "from exporter.runtime import colbert; "
    'print(colbert.load("{where}", backend="{backend}").encode_queries(["hi"])[0].shape)',
    "bge-m3": "from exporter.runtime import bge_m3; "
    'print(sorted(bge_m3.load("{where}", backend="{backend}").encode(["hi"])))',
}
TORCH_FREE = ("sentence-transformer", "sparse-encoder")  # the kinds exporter.runtime.load serves


def _start_st(out: Path, variant: dict, kind: str) -> str:
    """The line that serves the st layout: the kind's own loader with the variant's load options (file,
    OpenVINO config), and for embedders the torch-free runtime (which reads the manifest, pools and truncates
    as the model)."""
    load_spec, where = variant["load"], out.resolve()
    if load_spec["backend"] == "torch":
        line = ST_SERVE_LINES[kind].replace(', backend="{backend}", model_kwargs={kwargs}', "")
        return f"python -c '{line.format(where=where)}'"
    kwargs = {"file_name": load_spec["file_name"]}
    if load_spec["backend"] == "openvino":
        kwargs["ov_config"] = str(where / posixpath.dirname(load_spec["file_name"]) / OV_CONFIG_FILE)
    filled = ST_SERVE_LINES[kind].format(where=where, backend=load_spec["backend"], kwargs=json.dumps(kwargs))
    line = f"python -c '{filled}'"
    if kind not in TORCH_FREE:
        return line
    runtime = f'from exporter import runtime; print(runtime.load("{where}").encode(["hi"]).shape)'
    return f"{line}  # torch-free: python -c '{runtime}'"


def start_line(spec: Layout, out: Path, layout_manifest: dict) -> str:
    """The layout's start line with what decides correctness filled in: pooling, normalisation, truncation."""
    from exporter.source import st_modules

    entry = layout_manifest["variants"][0]
    if spec.name == "st":
        return _start_st(out, entry, layout_manifest["model"]["kind"])
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
