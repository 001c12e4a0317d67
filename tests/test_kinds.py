"""The kinds table (``exporter.kinds.KINDS``) is the one owner of what a model kind is: the recipe schema,
the manifest schema and the resolver agree with it, every name it gives resolves, and every metric a
printer shows for a kind is one the kind's comparison measures."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter import kinds
from exporter import manifest as mf
from exporter.fleet import recipe
from exporter.fleet import runs as fleet
from exporter.kinds import KINDS, ModelKind
from exporter.quality import parity, report
from exporter.variants import Precision

SPECS = list(KINDS.values())
IDS = [s.kind.value for s in SPECS]


def test_the_table_has_one_entry_per_kind_keyed_by_its_own_kind():
    assert list(KINDS) == list(ModelKind) and all(k is s.kind for k, s in KINDS.items())
    assert kinds.get(None) is KINDS[kinds.DEFAULT_KIND]


def test_recipe_kind_is_the_tables_enum_and_its_schema_lists_the_table():
    assert recipe.Kind is ModelKind
    prop = recipe.Recipe.model_json_schema()["$defs"]["ModelKind"]
    assert prop["enum"] == [k.value for k in KINDS]


def test_manifest_schema_kind_enum_matches_the_table():
    assert mf.schema()["properties"]["model"]["properties"]["kind"]["enum"] == [k.value for k in KINDS]


def test_detection_reads_the_tables_model_types():
    for spec in SPECS:
        assert kinds.from_model_type(spec.st_type) is spec.kind
    assert kinds.from_model_type("SomethingElse") is None and kinds.from_model_type(None) is None


def test_the_resolver_states_each_kind_from_the_files(tmp_path):
    from exporter.source import resolve

    for spec in SPECS:
        root = tmp_path / spec.kind.value
        root.mkdir()
        (root / "config_sentence_transformers.json").write_text(json.dumps({"model_type": spec.st_type}))
        assert kinds.kind_of_folder(root) is spec.kind and kinds.stated_kind(root)
    assert resolve.ResolvedSource.__dataclass_fields__["kind"].default == kinds.DEFAULT_KIND


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_name_in_the_table_resolves(spec):
    for ref in (spec.probe_fn, spec.outputs_fn, spec.compare_fn, spec.facts_fn, spec.onnx_builder):
        assert callable(kinds._resolve(ref)), ref
    assert set(spec.thresholds()) == set(Precision)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_metric_a_printer_shows_is_measured_for_the_kind(spec):
    """Run the kind's own probe and comparison on real arrays: each shown key is in its metrics (a metric the
    gate measures on the variant, ``parity.VARIANT_METRICS``, is a field the gate fills), the primary one is a
    gate that cannot be switched off (so every judged variant has it)."""
    probe = spec.probe([f"text number {i}" for i in range(40)])
    rng = np.random.default_rng(0)
    # per input: a score, a vector, (ColBERT) a few token vectors or (bge-m3) the packed dense row + token rows
    shape = {ModelKind.CROSS_ENCODER: (1,), ModelKind.COLBERT: (5, 16), ModelKind.BGE_M3: (5, 16)}.get(spec.kind, (16,))
    ref = np.abs(rng.normal(size=(len(probe.inputs), *shape)))
    measured = spec.compare(ref, ref + 1e-4 * rng.normal(size=ref.shape), probe).to_dict()
    for metric in (*spec.summary, *spec.verify, *spec.report, spec.primary):
        assert metric.key in measured, (spec.kind, metric.key)
        assert metric.format(measured[metric.key]) != "-" or metric.key in parity.VARIANT_METRICS
    assert spec.primary.key in parity.MANDATORY
    assert spec.primary.key in spec.thresholds()[Precision.FP32].to_dict()


def test_a_threshold_of_another_kind_names_the_kind_from_the_table():
    with pytest.raises(Exception, match="does not apply to cross-encoder"):
        parity.defaults("cross-encoder").override(cosine_min=0.9)


def _reranker_manifest(tmp_path: Path) -> dict:
    from tests.artifact_factory import make_artifact

    manifest = json.loads((make_artifact(tmp_path / "art") / "manifest.json").read_text())
    manifest["model"] = {"kind": "cross-encoder", "embedding_dim": None, "max_seq_length": 32, "pooling": None}
    for i, v in enumerate(manifest["variants"]):
        v["parity"] = {"score_spearman": 0.999 - i / 10, "top1_agreement": 1.0, "top3_agreement": 0.95, "n": 40}
        v["bench"] = {"ratio_to_torch": {"32": 2.0 + i}}
    manifest["bench"] = {"batch_sizes": [32]}
    return manifest


def test_a_reranker_report_row_and_plot_use_its_own_metrics(tmp_path):
    manifest = _reranker_manifest(tmp_path)
    spec = kinds.of_manifest(manifest)
    pts = report.points(manifest)
    assert [round(p["loss"], 6) for p in pts] == [0.001, 0.101]  # 1 - score_spearman, not 1 - cosine_min
    text = report.render_markdown({**manifest, "bench": None})
    assert f"| variant | backend | precision | size MB | {' | '.join(m.label for m in spec.report)} |" in text
    assert "score spearman | score err/spread | max diff | top-1 | top-3 |" in text and "cos min" not in text
    assert "| onnx | onnx | fp32 | 0.0 | 0.999000 | - | - | 1.0000 | 0.9500 |" in text


def test_fleet_rows_carry_each_kinds_primary_metric(tmp_path, capsys):
    from exporter.cli.output import print_summary_table
    from tests.artifact_factory import make_artifact

    embedder = json.loads((make_artifact(tmp_path / "emb") / "manifest.json").read_text())
    runs = [
        fleet.ModelRun(Path("e.yaml"), "e", "acme/e@x", 0, 1.0, tmp_path / "e.log", tmp_path / "emb", embedder),
        fleet.ModelRun(
            Path("r.yaml"), "r", "acme/r@x", 0, 1.0, tmp_path / "r.log", tmp_path, _reranker_manifest(tmp_path)
        ),
    ]
    rows = fleet.summary_rows(runs)
    assert [(r["metric"], r[r["metric"]]) for r in rows] == [
        ("cosine_min", 0.9999),
        ("cosine_min", 0.9999),
        ("score_spearman", 0.999),
        ("score_spearman", pytest.approx(0.899)),
    ]
    print_summary_table(rows)
    out = capsys.readouterr().out
    assert "fidelity" in out and "score spearman 0.999000" in out and "cosine min 0.999900" in out
    print_summary_table(rows[:2])  # one kind: the metric is the column
    assert "cosine min" in capsys.readouterr().out


def test_the_table_imports_nothing_heavy():
    """Module-level imports of exporter.kinds: only exporter.errors (everything else is a "module:name"
    string), and importing the table, the catalogue and the recipe schema loads no model library."""
    tree = ast.parse(Path(kinds.__file__).read_text("utf-8"))
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("exporter")}
    assert top == {"exporter.errors"}
    code = (
        "import sys, exporter.kinds, exporter.variants, exporter.fleet.recipe, exporter.quality.parity_gates;"
        "print(sorted(m for m in ('numpy', 'torch', 'sentence_transformers', 'onnx', 'openvino') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
