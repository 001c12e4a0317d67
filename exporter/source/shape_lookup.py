"""Questions asked of the support table (exporter.source.shapes): the rows and refusals for a model, the families and
exportable model types (for messages), and the table as rows and Markdown."""

from __future__ import annotations

import re

from exporter.source.shapes import SHAPES, Shape


def _first_module(row: Shape) -> str:
    """The class name a row's chain starts with ("Router (query: ...)" -> "Router")."""
    return re.split(r"[\s\[(]", row.chain[0].lstrip("["), maxsplit=1)[0] if row.chain else ""


def rows_for(kind: str, model_type: str | None, first_module: str | None = None) -> list[Shape]:
    """The rows of ``kind`` whose family has ``model_type`` (rows without model types: whose chain starts
    with ``first_module``)."""
    return [
        s
        for s in SHAPES
        if s.kind == kind and (model_type in s.model_types if s.model_types else first_module == _first_module(s))
    ]


def refusals_for(kind: str, model_type: str | None, first_module: str | None = None) -> dict[str, str]:
    """Variant id (or "*") -> reason, for a model of ``kind``, ``model_type`` and first module class."""
    out: dict[str, str] = {}
    for row in rows_for(kind, model_type, first_module):
        out.update(row.refusals())
    return out


def families() -> dict[str, tuple[str, ...]]:
    """model_type -> the families (for messages)."""
    out: dict[str, tuple[str, ...]] = {}
    for s in SHAPES:
        for mt in s.model_types:
            out[mt] = tuple(dict.fromkeys((*out.get(mt, ()), s.family)))
    return out


def exportable_model_types(kind: str) -> list[str]:
    """The model types of ``kind`` some row exports (remote-code rows excluded), sorted (for messages)."""
    return sorted({mt for s in SHAPES if s.kind == kind and not s.remote_code for mt in s.model_types})


def table_rows() -> list[dict]:
    return [s.to_dict() for s in SHAPES]


def _route_cell(row: dict) -> str:
    """``optimum-intel``, ``traced graph: <why>``, or ``-`` where no openvino variant is allowed."""
    if not any(v.startswith("openvino") for v in row["allowed"]):
        return "-"
    why = row["openvino_via_traced_graph"]
    return f"{row['openvino_route']}: {why}" if why else row["openvino_route"]


def markdown_table() -> str:
    """The support table in the Markdown form README.md reproduces (``exporter list-architectures --markdown``)."""
    lines = [
        "| id | family | kind | model_type | chain | OpenVINO route | allowed variants | refused variants | examples |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table_rows():
        by_reason: dict[str, list[str]] = {}
        for variant, why in r["refused"].items():
            by_reason.setdefault(why, []).append(variant)
        refused = "; ".join(f"{', '.join(vs)}: {why}" for why, vs in by_reason.items()) or "-"
        allowed = ", ".join(r["allowed"]) or "-"
        lines.append(
            f"| {r['id']} | {r['family']} | {r['kind']} | {', '.join(r['model_types'])} | {r['chain']} | "
            f"{_route_cell(r)} | {allowed} | {refused} | {', '.join(r['examples'])} |"
        )
    return "\n".join(lines)
