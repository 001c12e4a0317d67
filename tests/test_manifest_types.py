"""The manifest's TypedDicts (exporter.manifest_types) against schema/manifest.schema.json: each typed section has the
schema object's keys, the same required ones and the same JSON types, and a nested typed section sits where the
schema nests that object, so neither can change without the other. No model, no files: milliseconds."""

from __future__ import annotations

import types
import typing

import pytest

from exporter import manifest as mf
from exporter import manifest_types as mt

SCHEMA = mf.schema()
DEFS = SCHEMA["$defs"]

# Each typed section -> its object in the schema.
SECTIONS: dict[type, dict] = {
    mt.Manifest: SCHEMA,
    mt.VariantEntry: DEFS["variant"],
    mt.LoadSpec: DEFS["variant"]["properties"]["load"],
    mt.FingerprintEntry: DEFS["variant"]["properties"]["fingerprint"],
    mt.FileEntry: DEFS["file"],
    mt.AdjustedFrom: DEFS["file"]["properties"]["adjusted_from"],
    mt.TextSetEntry: DEFS["textset"],
    mt.GeneratedProbes: DEFS["textset"]["properties"]["generated"],
    mt.SourceEntry: SCHEMA["properties"]["source"],
    mt.ModelFacts: SCHEMA["properties"]["model"],
    mt.Recommended: SCHEMA["properties"]["recommended"]["oneOf"][1],
    mt.Environment: SCHEMA["properties"]["environment"],
    mt.CpuInfo: DEFS["cpu"],
    mt.BenchRun: SCHEMA["properties"]["bench"]["oneOf"][1],
    mt.BenchMemory: SCHEMA["properties"]["bench"]["oneOf"][1]["properties"]["memory"],
    mt.RunnerBench: DEFS["bench"],
    mt.Layout: SCHEMA["properties"]["layout"],
}
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = DEFS[node["$ref"].removeprefix("#/$defs/")]
    return node


def _alternatives(node: dict) -> list[dict]:
    """The schema's alternatives for a value (``oneOf`` / ``anyOf`` flattened, references followed)."""
    node = _resolve(node)
    for key in ("oneOf", "anyOf"):
        if key in node and "type" not in node:  # a typed object's anyOf constrains its keys, not its type
            return [alt for sub in node[key] for alt in _alternatives(sub)]
    return [node]


def _schema_types(node: dict) -> set:
    """JSON types (and, for enum / const, the allowed values) the schema node accepts."""
    out: set = set()
    for alt in _alternatives(node):
        if "const" in alt:
            out.add(("value", alt["const"]))
        elif "enum" in alt:
            out.update(("value", v) for v in alt["enum"])
        else:
            declared = alt["type"]
            out.update([declared] if isinstance(declared, str) else declared)
    return out


def _hint_types(hint) -> set:
    """The same for a Python annotation."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_hint_types(a) for a in typing.get_args(hint)))
    if origin is typing.Literal:
        return {("value", v) for v in typing.get_args(hint)}
    if origin is list:
        return {"array"}
    if origin is dict or hint in SECTIONS or typing.is_typeddict(hint):
        return {"object"}
    return {_JSON_TYPES[hint]}


def _typed_sections(hint) -> list[tuple[type, str]]:
    """(TypedDict, where in the value) for a field typed with one: itself, in a union, or as list items."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [s for a in typing.get_args(hint) for s in _typed_sections(a)]
    if origin is list:
        return [(td, "items") for td, _ in _typed_sections(typing.get_args(hint)[0])]
    return [(hint, "")] if typing.is_typeddict(hint) else []


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_each_typed_section_has_the_schema_objects_keys_and_required_keys(section):
    node = SECTIONS[section]
    hints = typing.get_type_hints(section)
    assert set(hints) == set(node["properties"]), (
        f"{section.__name__}: only in the type {sorted(set(hints) - set(node['properties']))}, "
        f"only in the schema {sorted(set(node['properties']) - set(hints))}"
    )
    assert section.__required_keys__ == set(node.get("required", ())), section.__name__


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_each_field_has_the_schema_fields_json_types(section):
    node = SECTIONS[section]
    for name, hint in typing.get_type_hints(section).items():
        want = _schema_types(node["properties"][name])
        assert _hint_types(hint) == want, f"{section.__name__}.{name}: {hint} against the schema's {want}"


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_a_nested_typed_section_is_where_the_schema_nests_its_object(section):
    node = SECTIONS[section]
    for name, hint in typing.get_type_hints(section).items():
        for typed, where in _typed_sections(hint):
            assert typed in SECTIONS, f"{section.__name__}.{name}: {typed.__name__} is not held to the schema here"
            alts = _alternatives(node["properties"][name])
            objects = [_resolve(a["items"]) if where else a for a in alts if a.get("type") in ("object", "array")]
            assert any(o is SECTIONS[typed] for o in objects), f"{section.__name__}.{name} is not {typed.__name__}"


def test_a_manifest_the_code_assembles_is_valid_and_typed_alike(tmp_path):
    """The typed builders write what the schema accepts: a variant entry, a text set, a file record."""
    from exporter import variants
    from exporter.fsutil import record_files
    from exporter.quality import probes

    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"graph")
    entry = mf.variant_entry(variants.BY_ID["onnx"], truncate_dim=4)
    entry["files"] = [r.to_dict() for r in record_files(tmp_path)]
    probe = probes.load_text_set(None, "probe")
    manifest = mf.build(
        source={"repo": None, "revision": None, "pinned": False, "files": entry["files"]},
        model={"kind": "sentence-transformer", "embedding_dim": 8, "max_seq_length": 16, "pooling": "mean"}
        | {"normalize": True},
        environment={"python": "3.11", "packages": {}, "cpu": {"model": "x", "flags": []}},
        probe=probe,
        calibration=None,
        shared=[],
        variants=[entry],
        publishable=False,
    )
    mf.validate(manifest)
    assert manifest["variants"][0]["load"]["truncate_dim"] == 4
    assert set(manifest["probe"]) <= set(typing.get_type_hints(mt.TextSetEntry))


def test_the_kind_names_are_the_model_kinds():
    from exporter.kinds import ModelKind

    assert set(typing.get_args(mt.KindName)) == {k.value for k in ModelKind}
