"""One decision of which variants and thresholds a plan gets (``exporter.plan_check``), shared by the export,
its dry run, ``exporter run``'s up-front check and ``exporter plan``; and one owner of the artifact folder
layout (``exporter.outdir.artifact_dir``). Regression tests for a reviewer's findings: a reranker recipe
without ``kind:`` was checked as an embedder by ``run`` and ``plan`` (its score_spearman threshold refused,
``all`` expanded to embedder variants) while the export itself accepted it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from exporter import outdir, variants
from exporter.fleet import runs as fleet
from tests.cli_runner import invoke
from tests.hub_fixtures import TINY_SHA, seed_tiny
from tests.tiny_models import build_tiny_cross_encoder

RERANKER = "rerank-org/tiny-reranker"
ABSENT = "rerank-org/not-in-the-cache"
RERANK_GATE = {"*": {"score_spearman": 0.99}}


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory):
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("rr") / "tiny-reranker")


@pytest.fixture
def seeded_reranker(reranker_dir):
    """The tiny reranker as a Hub repo in the (test-isolated) local Hub cache."""
    seed_tiny(reranker_dir, repo_id=RERANKER, sha=TINY_SHA)
    return RERANKER


def _recipe(folder: Path, name: str, repo: str, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"source": {"repo": repo, "revision": TINY_SHA}, **extra}))
    return path


def _planned(result) -> list[dict]:
    assert result.code == 0, result.err
    return json.loads(result.out)


# ------------------------------------------------------------------- a reranker recipe with no kind:
def test_run_accepts_a_reranker_recipe_without_kind_and_exports_it(tmp_path, seeded_reranker):
    """`exporter run` (its up-front check and the worker) accepts what the export accepts."""
    recipes = tmp_path / "recipes"
    _recipe(recipes, "rerank", seeded_reranker, variants=["onnx"], thresholds=RERANK_GATE)
    result = invoke("run", str(recipes), "--json", "--artifacts", str(tmp_path / "out"))
    assert result.code == 0, result.err
    (row,) = json.loads(result.out)["rows"]
    assert (row["variant"], row["verdict"]) == ("onnx", "passed")
    manifest = json.loads((Path(row["artifact"]) / "manifest.json").read_text())
    assert manifest["variants"][0]["parity"]["threshold"]["score_spearman"] == 0.99
    assert Path(row["artifact"]) == outdir.artifact_dir(tmp_path / "out", seeded_reranker, TINY_SHA).resolve()


def test_run_checks_a_recipe_without_kind_by_the_kind_of_its_cached_files(tmp_path, seeded_reranker, monkeypatch):
    """The kind read from the cached snapshot is the one checked: an embedder metric is refused up front."""
    recipes = tmp_path / "recipes"
    _recipe(recipes, "rerank", seeded_reranker, thresholds={"*": {"cosine_min": 0.99}})
    monkeypatch.setattr(fleet, "run_fleet", lambda *a, **k: pytest.fail("a model started"))
    result = invoke("run", str(recipes))
    assert result.code == 2
    assert "cosine_min" in result.err and "cross-encoder" in result.err


def test_run_leaves_the_kind_of_a_recipe_whose_files_are_not_here_to_the_export(tmp_path, monkeypatch):
    """No kind and no cached files: nothing kind-specific is refused up front (the worker's export decides)."""
    recipes = tmp_path / "recipes"
    _recipe(recipes, "rerank", ABSENT, variants=["all"], thresholds=RERANK_GATE)
    started = []
    monkeypatch.setattr(fleet, "run_fleet", lambda loaded, **k: started.append(loaded) or [])
    result = invoke("run", str(recipes), "--json")
    assert result.code == 0, result.err
    assert [p.name for p, _ in started[0]] == ["rerank.yaml"]
    refused = invoke("run", str(_recipe(tmp_path / "st", "st", ABSENT, kind="sentence-transformer", **_gate())))
    assert refused.code == 2 and "score_spearman" in refused.err and "sentence-transformer" in refused.err


def _gate() -> dict:
    return {"thresholds": RERANK_GATE}


def test_plan_per_variant_expands_all_for_the_kind_of_the_cached_files(tmp_path, seeded_reranker):
    path = _recipe(tmp_path, "rerank", seeded_reranker, variants=["all"], thresholds=RERANK_GATE)
    entries = _planned(invoke("plan", str(path), "--format", "json", "--per-variant"))
    assert [e["variant"] for e in entries] == [s.id for s in variants.select_for_kind("all", "cross-encoder")]
    assert {e["kind"] for e in entries} == {"cross-encoder"}
    assert not any(e["variant"].startswith("quanto") for e in entries)


def test_plan_per_variant_does_not_expand_all_while_the_kind_is_unknown(tmp_path):
    path = _recipe(tmp_path, "rerank", ABSENT, variants=["onnx-o2", "all"], thresholds=RERANK_GATE)
    result = invoke("plan", str(path), "--format", "json", "--per-variant")
    entries = _planned(result)
    assert [(e["variant"], e["variants"]) for e in entries] == [
        ("onnx", "onnx"),
        ("onnx-o2", "onnx-o2"),
        ("all", "all"),
    ]
    assert {e["kind"] for e in entries} == {""}
    assert "rerank.yaml: no kind" in result.err and "all is left for its job" in result.err
    # the whole-model entry passes the recipe's own words on, as before
    (entry,) = _planned(invoke("plan", str(path), "--format", "json"))
    assert entry["variants"] == "onnx-o2,all"


def test_plan_refuses_what_run_refuses(tmp_path):
    path = _recipe(tmp_path, "st", ABSENT, kind="sentence-transformer", thresholds=RERANK_GATE)
    result = invoke("plan", str(path))
    assert result.code == 2 and "score_spearman" in result.err


def test_dry_run_of_a_hub_model_whose_files_are_not_here_leaves_the_kind_open():
    result = invoke("export", f"{ABSENT}@{TINY_SHA}", "--dry-run", "--threshold", "score_spearman=0.99")
    assert result.code == 0, result.err
    assert "kind         not stated: read from the model files when the export runs" in result.out
    assert "gate: score_spearman>=0.99 over the defaults of the model's kind" in result.out


def test_dry_run_of_a_cached_reranker_uses_its_files(seeded_reranker):
    result = invoke("export", f"{seeded_reranker}@{TINY_SHA}", "--dry-run", "--threshold", "score_spearman=0.99")
    assert result.code == 0, result.err
    assert "kind         cross-encoder (from the model files)" in result.out
    assert "score_spearman>=0.99" in result.out and "score_max_abs_diff<=0.001" in result.out


# ------------------------------------------------------------------------------- the artifact layout
def test_one_layout_for_the_export_the_dry_run_and_the_plan(tmp_path, seeded_reranker, reranker_dir):
    from exporter.pipeline import default_out
    from exporter.source import resolve as source

    root = tmp_path / "art"
    expected = root / "rerank-org--tiny-reranker" / TINY_SHA[:12]
    assert outdir.artifact_dir(root, seeded_reranker, TINY_SHA) == expected
    src = source.resolve(source.parse_model_ref(f"{seeded_reranker}@{TINY_SHA}", None))
    assert default_out(root, src) == expected
    dry = invoke("export", f"{seeded_reranker}@{TINY_SHA}", "--dry-run")
    assert (
        f"  output       {outdir.artifact_dir(Path('artifacts'), seeded_reranker, TINY_SHA).as_posix()}/\n" in dry.out
    )
    (entry,) = _planned(invoke("plan", str(_recipe(tmp_path / "r", "rr", seeded_reranker)), "--format", "json"))
    assert entry["artifact"] == outdir.artifact_dir(Path("artifacts"), seeded_reranker, TINY_SHA).as_posix()

    local = source.resolve(source.parse_model_ref(str(reranker_dir), None))
    assert default_out(root, local).parent == root / "local--tiny-reranker"
    assert len(default_out(root, local).name) == 12
    assert outdir.local_artifact_dir(root, reranker_dir, local.files) == default_out(root, local)


def test_the_dry_run_names_an_unresolved_folder_as_before(reranker_dir):
    unpinned = invoke("export", f"{ABSENT}@main", "--allow-unpinned", "--dry-run")
    assert "output       artifacts/rerank-org--not-in-the-cache/<sha12 of the resolved commit>/\n" in unpinned.out
    local = invoke("export", str(reranker_dir), "--dry-run")
    assert "output       artifacts/local--tiny-reranker/<first 12 hex of the hash of its files>/\n" in local.out
