"""Meta-tests of the support registry (``exporter.support``): every rule is exercised by a test that builds a tiny
model of its shape and exports + verifies it (or checks its refusal), and docs/support.md reproduces the table
exactly as ``exporter list-architectures`` prints it.

A test module declares the row ids it exercises in a module-level tuple ``EXERCISED_SHAPES`` (as
``EXERCISED_VARIANTS`` declares catalogue ids, ``tests/test_catalogue.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from exporter import support, variants
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


def test_support_doc_reproduces_the_command_output():
    text = SUPPORT.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"docs/support.md needs the support table between {BEGIN} and {END}"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == invoke("list-architectures").out.strip(), (
        "docs/support.md's support table differs from `exporter list-architectures`: paste the command's output."
    )
