"""Regression tests for bugs that came from deciding one thing in several places (issue 12): the dry run
planned every model as an embedder, ``ALL`` was case-sensitive for rerankers, errors crossing the verify
subprocess lost their class, and ``--verbose`` showed the summary's traceback instead of the backend's."""

from __future__ import annotations

import pytest

from exporter import errors, kinds, variants
from exporter.errors import ExporterError
from tests.cli_runner import invoke
from tests.tiny_models import build_tiny_cross_encoder


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny-ce")


def test_dry_run_plans_a_cross_encoder_with_its_own_gates(cross_encoder_dir):
    result = invoke(
        "export", str(cross_encoder_dir), "--dry-run", "--variants", "ALL", "--threshold", "score_spearman=0.99"
    )
    assert result.code == 0, result.err
    assert "kind         cross-encoder (from the model files)" in result.out
    assert "score_spearman>=0.99" in result.out and "cosine_min" not in result.out
    assert "score_max_abs_diff<=0.001" in result.out  # an upper bound is printed as one
    assert "quanto" not in result.out  # quanto applies to embedders only
    planned = {line.strip() for line in result.out.splitlines() if line.startswith("    ") and "file " not in line}
    assert planned == {s.id for s in variants.select_for_kind("all", "cross-encoder")}


def test_dry_run_refuses_an_embedder_metric_for_a_cross_encoder(cross_encoder_dir):
    result = invoke("export", str(cross_encoder_dir), "--dry-run", "--threshold", "cosine_min=0.99")
    assert result.code == 2
    assert "cosine_min" in result.err and "cross-encoder" in result.err


@pytest.mark.parametrize("spelling", ["all", "ALL", "All"])
def test_all_is_case_insensitive_for_every_kind(spelling):
    for kind in kinds.ModelKind:
        assert [s.id for s in variants.select_for_kind(spelling, kind)] == [
            s.id for s in variants.select_for_kind("all", kind)
        ]


def _all_error_classes():
    pending, found = [ExporterError], []
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_class_survives_the_verify_subprocess_boundary():
    import exporter.quality.bench  # noqa: F401 - modules that raise their own errors are loaded
    import exporter.source.resolve  # noqa: F401

    names = {cls.__name__ for cls in _all_error_classes()}
    assert {"HubError", "BenchError", "IntegrityError", "SourceError"} <= names
    for cls in _all_error_classes():
        assert errors.error_class(cls.__name__) is cls
    assert errors.error_class("NoSuchError") is ExporterError


def test_verbose_shows_the_traceback_of_the_backend_failure(tiny_model_dir, tmp_path, monkeypatch):
    from optimum.onnxruntime import ORTOptimizer

    def crash(self, *args, **kwargs):  # a backend failure, injected where ONNX Runtime's optimiser runs
        raise RuntimeError("fusion pass crashed")

    monkeypatch.setattr(ORTOptimizer, "optimize", crash)
    out = tmp_path / "art"
    result = invoke("--verbose", "export", str(tiny_model_dir), "--variants", "onnx-o2", "--out", str(out))
    assert result.code == 1, result.err
    assert "variant(s) could not be built: onnx-o2" in result.err
    assert "Traceback" in result.err and "in crash" in result.err and "fusion pass crashed" in result.err
    quiet = invoke("export", str(tiny_model_dir), "--variants", "onnx-o2", "--out", str(out))
    assert "Traceback" not in quiet.err


def test_plan_and_run_check_a_reranker_recipe_with_its_kind(tmp_path):
    """A reranker recipe with reranker thresholds plans; `all` expands to the reranker's variants only."""
    import json

    recipe = tmp_path / "rerank.yaml"
    recipe.write_text(
        "source: {repo: cross-encoder/ms-marco-MiniLM-L6-v2, revision: c5ee24cb16019beea0893ab7796b1df96625c6b8}\n"
        "kind: cross-encoder\nvariants: [ALL]\nthresholds: {fp32: {score_spearman: 0.99}}\n"
    )
    result = invoke("plan", str(recipe), "--format", "json", "--per-variant")
    assert result.code == 0, result.err
    planned = {e["variant"] for e in json.loads(result.out)}
    assert planned == {s.id for s in variants.select_for_kind("all", "cross-encoder")}
    assert not any(v.startswith("quanto") for v in planned)


def test_dry_run_narrows_the_plan_by_the_model_chain(tmp_path):
    """A static-embedding model exports onnx and openvino only: the dry run plans what the export builds."""
    from tests.tiny_models import build_tiny_static_embedding

    folder = build_tiny_static_embedding(tmp_path / "static")
    result = invoke("export", str(folder), "--dry-run", "--variants", "all")
    assert result.code == 0, result.err
    planned = {line.strip() for line in result.out.splitlines() if line.startswith("    ") and "file " not in line}
    assert planned == {"onnx", "openvino"}
    refused = invoke("export", str(folder), "--dry-run", "--variants", "onnx-o2")
    assert refused.code == 2 and "onnx-o2" in refused.err
