"""The policy verdicts are judged by (``exporter.quality.policy``): layers, digest, looser records, old manifests."""

from __future__ import annotations

import pytest

from exporter.errors import UsageError
from exporter.quality import parity
from exporter.quality.policy import Policy, kind_of_thresholds
from exporter.quality.verify import CaseResult, _judge_record

EMBED = "sentence-transformer"
RERANK = "cross-encoder"


def test_layers_merge_in_order_and_scope_by_class_and_id(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("thresholds:\n  int8: {cosine_min: 0.995}\n  '*': {neighbour_agreement_at_10: 0.97}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"source: {{repo: a/b, revision: '{'0' * 40}'}}\nthresholds:\n  int8: {{cosine_min: 0.993}}\n")
    p = Policy.load(path, recipe=recipe, flags=["onnx-qint8-fidelity:cosine_min=0.991"])
    assert p.thresholds_for(EMBED, "int8", "openvino-int8-weights").cosine_min == 0.993  # the recipe after the file
    assert p.thresholds_for(EMBED, "int8", "onnx-qint8-fidelity").cosine_min == 0.991  # a variant's flag: most specific
    assert p.thresholds_for(EMBED, "fp32", "onnx").neighbour_agreement_at_10 == 0.97
    assert p.thresholds_for(EMBED, "fp32", "onnx").cosine_min == parity.DEFAULT_THRESHOLDS["fp32"].cosine_min
    with pytest.raises(UsageError, match="does not apply to cross-encoder"):
        p.thresholds_for(RERANK, "fp32", "onnx")


def test_digest_covers_what_judges_and_nothing_else(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.yaml"
    a.write_text('{"thresholds": {"int8": {"cosine_min": 0.995}}}')
    b.write_text("# same policy, other file\nthresholds:\n  int8:\n    cosine_min: 0.995\n")
    assert Policy.load(a).digest == Policy.load(b).digest == Policy.load(flags=["int8:cosine_min=0.995"]).digest
    assert Policy.load(a).digest != Policy().digest and Policy().digest.startswith("sha256:")


def test_looser_records_are_named_and_retired_metrics_are_not_judged():
    p = Policy()
    forged = {"cosine_min": -1, "neighbour_agreement_at_10": 0.99, "spearman_pairwise": None, "norm_rel_err_max": 5}
    looser = p.looser_than(forged, EMBED, "fp32", "onnx")
    assert [line.split()[0] for line in looser] == ["cosine_min", "spearman_pairwise", "norm_rel_err_max"]
    assert p.looser_than(parity.DEFAULT_THRESHOLDS["fp32"].to_dict(), EMBED, "fp32") == []
    assert p.looser_than({"cosine_min": 0.99999}, EMBED, "fp32") == []  # stricter, and older (no other metric)
    # a reranker manifest written before issue 20: score_rel_err_max is shown, not judged, and not refused
    old = {**parity.SCORE_THRESHOLDS["fp32"].to_dict(), "score_rel_err_max": 1e-3}
    del old["score_spread_err_max"]
    assert kind_of_thresholds(old) == RERANK and kind_of_thresholds({"cosine_min": 0.9}) == EMBED
    assert p.looser_than(old, RERANK, "fp32") == []
    assert parity.thresholds_from_dict(RERANK, old, "fp32") == parity.SCORE_THRESHOLDS["fp32"]
    with pytest.raises(UsageError, match="retired"):
        Policy.load(flags=["score_rel_err_max=0.1"])


def test_a_passed_case_with_a_looser_record_fails():
    case = CaseResult("onnx", "passed")
    _judge_record(
        case, {"id": "onnx", "precision": "fp32", "parity": {"threshold": {"cosine_min": 0.5}}}, Policy(), EMBED
    )
    assert case.status == "failed" and "looser than the policy" in case.failures[0]


def test_a_policy_file_with_a_yaml_alias_is_refused(tmp_path):
    from exporter.errors import UsageError

    bomb = tmp_path / "policy.yaml"
    bomb.write_text('a: &a ["x", "x"]\nthresholds: {"*": {cosine_min: 0.99}}\nb: [*a, *a]\n')
    with pytest.raises(UsageError, match="aliases"):
        Policy.load(bomb)
