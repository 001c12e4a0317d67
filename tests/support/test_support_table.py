"""Meta-tests of the support registry (``exporter.support``): every rule is exercised by a test that builds a tiny
model of its shape and exports + verifies it (or checks its refusal), and docs/support.md reproduces the table
exactly as ``exporter list-architectures`` prints it.

A test module declares the row ids it exercises in a module-level tuple ``EXERCISED_SHAPES`` (as
``EXERCISED_VARIANTS`` declares catalogue ids, ``tests/test_catalogue.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter import support, variants
from exporter.errors import UsageError
from tests import declarations
from tests.cli_runner import invoke

SUPPORT = Path(__file__).resolve().parents[2] / "docs" / "support.md"
BEGIN, END = "<!-- support-table:begin -->", "<!-- support-table:end -->"


def exercised() -> dict[str, list[str]]:
    """row id -> test modules that declare they build a tiny model of it and export + verify it."""
    return declarations.exercised("EXERCISED_SHAPES")


def test_every_row_is_exercised_by_a_test():
    covered = exercised()
    missing = [s.id for s in support.RULES if s.id not in covered]
    assert not missing, (
        f"support-table rows without a test: {', '.join(missing)}. Build a tiny model of the shape, export and "
        "verify it in a test module, and declare EXERCISED_SHAPES = (...row ids...) in it."
    )


def test_declared_rows_are_in_the_table():
    unknown = {i: mods for i, mods in exercised().items() if i not in support.BY_ID}
    assert not unknown, f"tests declare rows that are not in the support table: {unknown}"


def test_rows_are_consistent():
    assert len(support.BY_ID) == len(support.RULES), "row ids must be unique"
    for row in support.RULES:
        refused = row.refusals()
        assert set(refused) <= set(variants.BY_ID) | {"*"}, row.id
        assert not set(refused) & set(row.allowed()), row.id
        assert all(why and "\n" not in why for why in refused.values()), row.id
        assert row.examples and row.chain.text and row.family, row.id
        assert (row.kind is None) == ("*" in refused and not row.model_types), row.id  # kind-less: refusals only


def test_list_architectures_prints_the_table_and_json():
    text = invoke("list-architectures")
    assert text.code == 0 and text.out.strip() == support.markdown_table()
    rows = json.loads(invoke("list-architectures", "--json").out)
    assert [r["id"] for r in rows] == [s.id for s in support.RULES]
    assert rows[0].keys() >= {"id", "family", "kind", "model_types", "chain", "allowed", "refused", "examples"}
    assert rows[0].keys() >= {"onnx_route", "openvino_route"}


def test_support_doc_reproduces_the_command_output():
    text = SUPPORT.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"docs/support.md needs the support table between {BEGIN} and {END}"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == invoke("list-architectures").out.strip(), (
        "docs/support.md's support table differs from `exporter list-architectures`: paste the command's output."
    )


def _folder(root: Path, types: list[str], model_type: str | None) -> Path:
    root.mkdir()
    entries = [{"idx": i, "name": str(i), "path": "", "type": t} for i, t in enumerate(types)]
    (root / "modules.json").write_text(json.dumps(entries))
    if model_type:
        (root / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": ["X"]}))
    return root


def test_every_family_rule_is_matched_from_the_files_alone_and_routes_to_builders(tmp_path):
    """Each dense family rule is found by its model_type (any of them) from modules.json and config.json, and its
    ONNX and OpenVINO routes name functions that exist: adding a family is one rule."""
    chain = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"]
    for rule in support.RULES:
        if rule.allowed():
            assert callable(rule.onnx_build_fn()), rule.id
            assert rule.openvino_build_fn() is None or callable(rule.openvino_build_fn()), rule.id
        if rule.kind is not support.ST or rule.remote_code or not rule.model_types:
            continue
        for model_type in rule.model_types:
            found = support.match(_folder(tmp_path / f"{rule.id}-{model_type}", chain, model_type), rule.kind)
            assert found.rule is rule and found.to_dict()["support_rows"] == [rule.id]


def test_chain_refusals_name_the_first_module_out_of_place(tmp_path):
    types = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Dense"]
    with pytest.raises(UsageError, match=r"module 1 \(after Transformer\) is sentence_transformers.models.Dense"):
        support.match(_folder(tmp_path / "a", types, "bert"), "sentence-transformer")
    with pytest.raises(UsageError, match="end early"):
        support.match(_folder(tmp_path / "b", types[:1], "bert"), "sentence-transformer")
    with pytest.raises(UsageError, match=r"X \(model_type funnel\) is outside every support rule"):
        support.match(
            _folder(tmp_path / "c", [types[0], "sentence_transformers.models.Pooling"], "funnel"),
            "sentence-transformer",
        )
