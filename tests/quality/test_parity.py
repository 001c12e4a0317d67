"""Parity metrics, thresholds and verdicts (pure numpy; fast)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from exporter.errors import ExitCode, FidelityError, UsageError
from exporter.quality import parity
from exporter.quality.parity import DEFAULT_THRESHOLDS, ParityMetrics, PrecisionClass, Thresholds
from exporter.variants import Precision, VariantSpec


def _clustered(n: int = 120, dim: int = 32, clusters: int = 12, seed: int = 0) -> np.ndarray:
    """Unit embeddings with cluster structure (so nearest neighbours mean something)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.4 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------ compare


def test_identical_embeddings_are_perfect():
    ref = _clustered()
    m = parity.compare(ref, ref.copy())
    assert m.n == len(ref)
    assert m.cosine_min == pytest.approx(1.0, abs=1e-12)
    assert m.cosine_mean == pytest.approx(1.0, abs=1e-12)
    assert m.cosine_p01 == pytest.approx(1.0, abs=1e-12)
    assert m.max_abs_diff == 0.0
    assert m.neighbour_agreement_at_10 == 1.0
    assert m.spearman_pairwise == pytest.approx(1.0)
    assert parity.judge(m, DEFAULT_THRESHOLDS[PrecisionClass.FP32]).passed


def test_hand_computed_example():
    # rows 0 and 1 only change scale (cosine 1); row 2 turns from (3,4) to (4,3): cosine 24/25.
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    cand = np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 3.0]])
    m = parity.compare(ref, cand, k=1)
    assert m.cosine_min == pytest.approx(0.96)
    assert m.cosine_mean == pytest.approx((1 + 1 + 0.96) / 3)
    assert m.cosine_p01 == pytest.approx(0.96 + 0.02 * 0.04)  # linear: position 0.01 * (3 - 1) = 0.02
    assert m.max_abs_diff == pytest.approx(1.0)
    # pairwise cosines (01, 02, 12): reference (0, .6, .8), candidate (0, .8, .6): ranks (1,2,3) vs (1,3,2)
    assert m.spearman_pairwise == pytest.approx(1 - 6 * 2 / (3 * (3**2 - 1)))  # 0.5
    # nearest other text: ref 0->2, 1->2, 2->1; cand 0->2, 1->2, 2->0: two of three agree
    assert m.neighbour_agreement_at_10 == pytest.approx(2 / 3)
    # k is clipped to n - 1 = 2: every text's neighbours are all the others, so they always agree
    assert parity.compare(ref, cand).neighbour_agreement_at_10 == 1.0


def test_permuted_rows_reduce_agreement():
    ref = _clustered(n=200, clusters=20)
    perm = np.random.default_rng(1).permutation(len(ref))
    m = parity.compare(ref, ref[perm])
    assert m.neighbour_agreement_at_10 < 0.3
    assert m.spearman_pairwise < 0.5
    assert m.cosine_min < 0.5
    verdict = parity.judge(m, DEFAULT_THRESHOLDS[PrecisionClass.INT8])
    assert not verdict.passed and len(verdict.failures) == 3


def test_swapping_two_rows_is_caught():
    ref = _clustered()
    cand = ref.copy()
    cand[[0, 1]] = cand[[1, 0]]
    m = parity.compare(ref, cand)
    assert m.neighbour_agreement_at_10 < 1.0
    assert m.cosine_min < 0.99


def test_small_noise_passes_fp32_defaults():
    # fp32-level differences (~1e-6) must pass the fp32 gate, duplicates (exact ties) included
    ref = _clustered(n=320, dim=64, clusters=30)
    ref[1] = ref[0]  # the same text twice (e.g. whitespace variants that tokenise identically)
    ref[5] = ref[4]
    rng = np.random.default_rng(2)
    cand = ref + rng.normal(scale=1e-6, size=ref.shape).astype(np.float32)
    m = parity.compare(ref, cand)
    assert m.neighbour_agreement_at_10 >= 0.999
    verdict = parity.judge(m, DEFAULT_THRESHOLDS[PrecisionClass.FP32])
    assert verdict.passed, verdict.failures


def test_larger_noise_degrades_metrics_monotonically():
    ref = _clustered(n=150)
    rng = np.random.default_rng(3)
    noise = rng.normal(size=ref.shape)
    ms = [parity.compare(ref, ref + s * noise) for s in (0.001, 0.03, 0.3)]
    for a, b in zip(ms, ms[1:], strict=False):
        assert a.cosine_mean > b.cosine_mean
        assert a.spearman_pairwise > b.spearman_pairwise
        assert a.neighbour_agreement_at_10 >= b.neighbour_agreement_at_10
        assert a.max_abs_diff < b.max_abs_diff


def test_zero_vectors_do_not_poison_metrics():
    ref = _clustered(n=30)
    cand = ref.copy()
    cand[3] = 0.0
    m = parity.compare(ref, cand)
    values = [v for v in m.to_dict().values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in values)
    assert m.cosine_min == pytest.approx(0.0)  # zero vs non-zero: cosine 0
    assert m.cosine_mean == pytest.approx(29 / 30, abs=1e-6)


def test_zero_vector_in_both_counts_as_reproduced():
    ref = _clustered(n=30)
    ref[7] = 0.0
    m = parity.compare(ref, ref.copy())
    assert m.cosine_min == pytest.approx(1.0)
    assert m.neighbour_agreement_at_10 == 1.0
    assert m.spearman_pairwise == pytest.approx(1.0)


@pytest.mark.parametrize(
    "ref_shape, cand_shape",
    [((10, 8), (10, 4)), ((10, 8), (9, 8)), ((10, 8), (80,)), ((10, 8), (10, 8, 1))],
)
def test_shape_mismatch_is_a_fidelity_error(ref_shape, cand_shape):
    with pytest.raises(FidelityError) as info:
        parity.compare(np.ones(ref_shape), np.ones(cand_shape))
    assert info.value.exit_code == ExitCode.FIDELITY
    assert str(ref_shape) in info.value.message and str(cand_shape) in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_candidate_is_a_fidelity_error(bad):
    ref = _clustered(n=10)
    cand = ref.copy()
    cand[2, 0] = bad
    with pytest.raises(FidelityError, match="candidate embeddings contain NaN or inf in 1 of 10 rows"):
        parity.compare(ref, cand)


def test_empty_input_is_refused():
    with pytest.raises(FidelityError, match="0 texts"):
        parity.compare(np.zeros((0, 4)), np.zeros((0, 4)))


def test_too_few_texts_for_rank_metrics():
    one = parity.compare(np.ones((1, 4)), np.ones((1, 4)))
    assert one.neighbour_agreement_at_10 is None and one.spearman_pairwise is None
    two = parity.compare(np.eye(2), np.eye(2))
    assert two.spearman_pairwise is None and "spearman_pairwise" not in two.skipped  # too few: not skipped
    # two texts: each one's only neighbour is the other, so there is no order to compare
    assert two.neighbour_agreement_at_10 is None and "no neighbour order" in two.skipped["neighbour_agreement_at_10"]
    assert not parity.judge(two, DEFAULT_THRESHOLDS[PrecisionClass.FP32]).passed  # spearman still fails it


def test_compare_accepts_float16_and_lists():
    ref = _clustered(n=20)
    m = parity.compare(ref.tolist(), ref.astype(np.float16))
    assert 0.999 < m.cosine_min <= 1.0


# --------------------------------------------------------------------------------------- thresholds


def test_default_thresholds_by_precision_class():
    assert DEFAULT_THRESHOLDS[PrecisionClass.FP32].cosine_min == 0.9999
    assert DEFAULT_THRESHOLDS[PrecisionClass.FP16].cosine_min == 0.999
    assert DEFAULT_THRESHOLDS[PrecisionClass.INT8].cosine_min == 0.99
    assert set(DEFAULT_THRESHOLDS) == set(PrecisionClass)
    order = [DEFAULT_THRESHOLDS[p] for p in (PrecisionClass.FP32, PrecisionClass.FP16, PrecisionClass.INT8)]
    for stricter, looser in zip(order, order[1:], strict=False):  # fp32 is the strictest on every metric
        for name in parity.METRIC_NAMES:
            a, b = getattr(stricter, name), getattr(looser, name)
            assert a <= b if name in parity.UPPER_BOUNDS else a >= b
    # the catalogue's precision enum and plain strings index the table too
    assert DEFAULT_THRESHOLDS[Precision.INT8] is DEFAULT_THRESHOLDS["int8"]


def test_threshold_override():
    base = DEFAULT_THRESHOLDS[PrecisionClass.INT8]
    t = base.override(cosine_min=0.985, spearman_pairwise=None)
    assert t == Thresholds(
        cosine_min=0.985,
        neighbour_agreement_at_10=0.95,
        spearman_pairwise=None,
        norm_rel_err_max=0.1,
        batch_cosine_min=0.999,
    )
    assert base.cosine_min == 0.99  # the default is untouched


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"cosine_max": 0.9}, "unknown gate threshold 'cosine_max'"),
        ({"cosine_min": 1.5}, "out of range"),
        ({"neighbour_agreement_at_10": -0.1}, "out of range"),
        ({"cosine_min": None}, "cannot be switched off"),
        ({"spearman_pairwise": "high"}, "out of range"),
    ],
)
def test_bad_threshold_override(kw, fragment):
    with pytest.raises(UsageError, match=fragment) as info:
        DEFAULT_THRESHOLDS[PrecisionClass.FP32].override(**kw)
    assert info.value.exit_code == ExitCode.USAGE and info.value.hint


def test_parse_threshold_overrides():
    got = parity.parse_threshold_overrides(
        [
            "cosine_min=0.995",
            "int8:cosine_min = 0.985",
            "int8:spearman_pairwise=none",
            "onnx-qint8-avx2:neighbour_agreement_at_10=0.9",
            "cosine_min=0.996",  # later wins
        ]
    )
    assert got == {
        "*": {"cosine_min": 0.996},
        "int8": {"cosine_min": 0.985, "spearman_pairwise": None},
        "onnx-qint8-avx2": {"neighbour_agreement_at_10": 0.9},
    }
    assert parity.parse_threshold_overrides([]) == {}


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("cosine_min", "malformed"),
        ("=0.9", "malformed"),
        (":cosine_min=0.9", "malformed"),
        ("cosine_min=abc", "not a number"),
        ("cosine_min=nan", "not finite"),
        ("cosine_min=2", "out of range"),
        ("cosine_min=off", "cannot be switched off"),
        ("recall=0.9", "unknown gate threshold"),
    ],
)
def test_parse_threshold_overrides_refuses(item, fragment):
    with pytest.raises(UsageError, match=fragment) as info:
        parity.parse_threshold_overrides([item])
    assert info.value.hint


def _spec(id_: str, precision: Precision) -> VariantSpec:
    return VariantSpec(id=id_, backend="onnx", precision=precision, file_name="x", summary="", builder="m:f")


def test_thresholds_for_applies_most_specific_override_last():
    specs = [_spec("onnx", Precision.FP32), _spec("int8-a", Precision.INT8), _spec("int8-b", Precision.INT8)]
    overrides = {
        "int8-a": {"cosine_min": 0.97},
        "int8": {"cosine_min": 0.985, "spearman_pairwise": None},
        "*": {"cosine_min": 0.5, "neighbour_agreement_at_10": 0.9},
    }
    got = parity.thresholds_for(specs, overrides)
    assert got["onnx"] == Thresholds(0.5, 0.9, DEFAULT_THRESHOLDS[Precision.FP32].spearman_pairwise, 0.01, 0.99999)
    assert got["int8-b"] == Thresholds(0.985, 0.9, None, 0.1, 0.999)
    assert got["int8-a"] == Thresholds(0.97, 0.9, None, 0.1, 0.999)
    assert parity.thresholds_for(specs) == {
        "onnx": DEFAULT_THRESHOLDS[Precision.FP32],
        "int8-a": DEFAULT_THRESHOLDS[Precision.INT8],
        "int8-b": DEFAULT_THRESHOLDS[Precision.INT8],
    }


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"int4": {"cosine_min": 0.9}}, "scope 'int4'"),
        ({"int8": {"cosine_min": 7}}, "out of range"),  # e.g. from a recipe file, not the parser
        ({"*": {"cosin_min": 0.9}}, "unknown gate threshold"),
    ],
)
def test_thresholds_for_refuses(overrides, fragment):
    with pytest.raises(UsageError, match=fragment):
        parity.thresholds_for([_spec("onnx", Precision.FP32)], overrides)


# -------------------------------------------------------------------------------------------- judge


def _metrics(**kw) -> ParityMetrics:
    base = dict(
        cosine_min=0.9995,
        cosine_mean=0.9999,
        cosine_p01=0.9996,
        max_abs_diff=0.001,
        n=320,
        neighbour_agreement_at_10=0.97,
        spearman_pairwise=0.996,
        norm_rel_err_max=2e-4,
    )
    return ParityMetrics(**{**base, **kw})


def test_judge_lists_every_failure_with_value_and_threshold():
    verdict = parity.judge(_metrics(), DEFAULT_THRESHOLDS[PrecisionClass.FP32])
    assert not verdict.passed
    assert verdict.failures == [
        "cosine_min 0.999500 is below the threshold 0.9999.",
        "neighbour_agreement_at_10 0.970000 is below the threshold 0.99.",
        "spearman_pairwise 0.996000 is below the threshold 0.999.",
    ]


def test_judge_passes_and_skips_switched_off_gates():
    assert parity.judge(_metrics(), DEFAULT_THRESHOLDS[PrecisionClass.INT8]).passed
    t = Thresholds(cosine_min=0.99, neighbour_agreement_at_10=None, spearman_pairwise=None)
    verdict = parity.judge(_metrics(neighbour_agreement_at_10=0.1, spearman_pairwise=0.1), t)
    assert verdict.passed and verdict.failures == []


def test_judge_boundary_is_inclusive_and_nan_fails():
    t = Thresholds(cosine_min=0.99)
    assert parity.judge(_metrics(cosine_min=0.99), t).passed
    assert not parity.judge(_metrics(cosine_min=float("nan")), t).passed


def test_judge_fails_a_gate_it_cannot_compute():
    m = parity.compare(np.ones((1, 4)), np.ones((1, 4)))
    verdict = parity.judge(m, DEFAULT_THRESHOLDS[PrecisionClass.FP32])
    assert not verdict.passed
    assert any("neighbour_agreement_at_10 could not be computed on 1 text" in f for f in verdict.failures)
    assert parity.judge(m, Thresholds(cosine_min=0.9999)).passed


# ------------------------------------------------------------------------------------------ to_dict

MANIFEST_KEYS = {
    "cosine_min",
    "cosine_mean",
    "cosine_p01",
    "max_abs_diff",
    "n",
    "neighbour_agreement_at_10",
    "spearman_pairwise",
    "norm_rel_err_max",
    "norm_rel_err_mean",
    "dot_rel_err_max",
    "neighbour_queries",
    "spearman_pairs",
    "skipped",
    "strata",
    "batch_cosine_min",
    "threshold",
    "passed",
    "failures",
}


def test_to_dict_has_the_manifest_keys_and_is_json():
    m = parity.compare(_clustered(n=40), _clustered(n=40) * 1.0001)
    t = DEFAULT_THRESHOLDS[PrecisionClass.INT8]
    v = parity.judge(m, t)
    d = parity.to_dict(m, t, v)
    assert set(d) == MANIFEST_KEYS
    assert d["threshold"] == {
        "cosine_min": 0.99,
        "neighbour_agreement_at_10": 0.95,
        "spearman_pairwise": 0.98,
        "norm_rel_err_max": 0.1,
        "batch_cosine_min": 0.999,
    }
    assert d["passed"] is True and d["failures"] == []
    assert isinstance(d["n"], int) and all(type(d[k]) is float for k in ("cosine_min", "max_abs_diff"))
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_to_manifest_validates_against_the_schema():
    m = parity.compare(_clustered(n=40), _clustered(n=40))
    t = DEFAULT_THRESHOLDS[PrecisionClass.FP32]
    entry = parity.to_manifest(m, t, parity.judge(m, t), "ab" * 32)
    assert set(entry) == MANIFEST_KEYS | {"probe_sha256"}
    schema = json.loads((Path(parity.__file__).parent.parent / "schema" / "manifest.schema.json").read_text())
    jsonschema.validate(entry, {**schema["$defs"]["parity"], "$defs": schema["$defs"]})


# ----------------------------------------------------------------------------- degenerate input
def _fp32_noise(ref: np.ndarray, seed: int = 5) -> np.ndarray:
    return ref + np.random.default_rng(seed).normal(scale=1e-7, size=ref.shape)


DEGENERATE_REFERENCES = {
    "20 identical texts": np.tile(_clustered(n=1), (20, 1)),
    "20 identical non-unit vectors (a dot model)": np.tile(3.0 * _clustered(n=1), (20, 1)),
    "20 zero vectors": np.zeros((20, 8)),
}


@pytest.mark.parametrize("case", list(DEGENERATE_REFERENCES))
def test_degenerate_reference_skips_rank_metrics_and_passes(case):
    ref = DEGENERATE_REFERENCES[case]
    m = parity.compare(ref, _fp32_noise(ref) if ref.any() else ref.copy())
    assert m.neighbour_agreement_at_10 is None and m.spearman_pairwise is None
    assert set(m.skipped) == {"neighbour_agreement_at_10", "spearman_pairwise"}
    assert "no neighbour order" in m.skipped["neighbour_agreement_at_10"]
    assert "190 pair similarities all tie" in m.skipped["spearman_pairwise"]
    verdict = parity.judge(m, DEFAULT_THRESHOLDS[PrecisionClass.FP32])
    assert verdict.passed, verdict.failures


def test_partly_duplicated_reference_is_measured_not_skipped():
    ref = np.concatenate([np.tile(_clustered(n=1, seed=1), (19, 1)), _clustered(n=1, seed=2)])
    m = parity.compare(ref, _fp32_noise(ref))
    assert m.skipped == {}
    assert m.neighbour_agreement_at_10 == 1.0 and m.spearman_pairwise == pytest.approx(1.0)
    assert m.neighbour_queries == 19  # the odd one out is equally far from all others: no order to check


@pytest.mark.parametrize(
    "name, broken",
    [("constant output", lambda r: np.ones_like(r)), ("zero output", lambda r: np.zeros_like(r))],
)
def test_a_collapsed_candidate_never_skips_its_own_gate(name, broken):
    """Skipping is decided on the reference only: a variant that loses all variance fails."""
    ref = _clustered(n=60)
    m = parity.compare(ref, broken(ref))
    assert m.skipped == {}
    assert m.spearman_pairwise == 0.0
    verdict = parity.judge(m, DEFAULT_THRESHOLDS[PrecisionClass.INT8])
    assert not verdict.passed and any(f.startswith("spearman_pairwise") for f in verdict.failures)


def test_tie_ranks_chain_values_within_the_tolerance():
    from exporter.quality.parity_rank import tie_ranks

    x = np.array([0.5, 0.5 + 4e-7, 0.5 + 8e-7, 0.9, 0.1])
    np.testing.assert_allclose(tie_ranks(x), [3, 3, 3, 5, 1])
    np.testing.assert_allclose(tie_ranks(x, tol=0.0), [2, 3, 4, 5, 1])


# ------------------------------------------------------------------------------------------ norms
def test_a_norm_only_change_fails_only_the_norm_gate():
    ref = 2.0 * _clustered(n=80)
    m = parity.compare(ref, 1.5 * ref)
    assert m.cosine_min == pytest.approx(1.0) and m.spearman_pairwise == pytest.approx(1.0)
    assert m.norm_rel_err_max == pytest.approx(0.5) and m.norm_rel_err_mean == pytest.approx(0.5)
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    cos = np.abs((unit @ unit.T)[np.triu_indices(len(ref), k=1)])
    assert m.dot_rel_err_max == pytest.approx(1.25 * cos.max())  # every dot product scales by 1.5 ** 2
    for precision in PrecisionClass:
        verdict = parity.judge(m, DEFAULT_THRESHOLDS[precision])
        assert verdict.failures == [
            f"norm_rel_err_max 0.5 is above the threshold {DEFAULT_THRESHOLDS[precision].norm_rel_err_max}."
        ]


def test_norm_error_of_zero_rows():
    ref = _clustered(n=10)
    ref[3] = 0.0
    cand = ref.copy()
    assert parity.compare(ref, cand).norm_rel_err_max == 0.0  # both zero: reproduced
    cand[3, 0] = 0.5
    assert parity.compare(ref, cand).norm_rel_err_max == 1.0  # zero reference, non-zero candidate


# -------------------------------------------------------------------------------- bounded cost
def test_samples_are_capped_seeded_and_close_to_the_full_value(monkeypatch):
    from exporter.quality import parity_rank

    ref = _clustered(n=300, clusters=15)
    cand = ref + np.random.default_rng(4).normal(scale=0.02, size=ref.shape)
    full = parity.compare(ref, cand)
    assert (full.neighbour_queries, full.spearman_pairs) == (300, 300 * 299 // 2)
    monkeypatch.setattr(parity_rank, "NN_MAX_QUERIES", 100)
    monkeypatch.setattr(parity_rank, "SPEARMAN_MAX_TEXTS", 120)
    monkeypatch.setattr(parity_rank, "BLOCK_ELEMENTS", 3000)  # blocks of 10 query rows
    sampled = parity.compare(ref, cand)
    assert (sampled.neighbour_queries, sampled.spearman_pairs) == (100, 120 * 119 // 2)
    assert sampled == parity.compare(ref, cand)  # the same sample every run
    assert sampled.neighbour_agreement_at_10 == pytest.approx(full.neighbour_agreement_at_10, abs=0.05)
    assert sampled.spearman_pairwise == pytest.approx(full.spearman_pairwise, abs=0.02)


def test_blockwise_neighbour_search_equals_one_block(monkeypatch):
    from exporter.quality import parity_rank

    ref = _clustered(n=150)
    cand = ref + np.random.default_rng(6).normal(scale=0.05, size=ref.shape)
    one_block = parity.compare(ref, cand).neighbour_agreement_at_10
    monkeypatch.setattr(parity_rank, "BLOCK_ELEMENTS", 1)  # one query row per block
    assert parity.compare(ref, cand).neighbour_agreement_at_10 == one_block


# ----------------------------------------------------------------------------- sparse and scores
def test_sparse_weights_are_gated_not_only_top_terms():
    rng = np.random.default_rng(7)
    ref = np.where(rng.random((40, 200)) < 0.1, rng.random((40, 200)) * 3, 0.0)
    m = parity.compare_sparse(ref, 1.1 * ref)  # same terms, same order, heavier weights
    assert m.top_terms_overlap_at_10 == 1.0 and m.cosine_min == pytest.approx(1.0)
    assert m.weights_rel_l2_max == pytest.approx(0.1 / 1.1)
    fp32 = parity.judge(m, parity.SPARSE_THRESHOLDS[PrecisionClass.FP32])
    assert any(f.startswith("weights_rel_l2_max 0.0909") for f in fp32.failures)
    same = parity.compare_sparse(ref, ref.copy())
    assert same.weights_rel_l2_max == 0.0 and parity.judge(same, parity.SPARSE_THRESHOLDS[PrecisionClass.FP32]).passed


def test_score_error_relative_to_the_reference_spread():
    ref = np.linspace(-4.0, 4.0, 40)  # raw logits
    lists = [list(range(i, i + 10)) for i in range(0, 40, 10)]
    m = parity.compare_scores(ref, ref + 0.08, lists)
    spread = np.percentile(ref, 99) - np.percentile(ref, 1)
    assert m.score_spread_err_max == pytest.approx(0.08 / spread) and m.score_spearman == pytest.approx(1.0)
    verdict = parity.judge(m, parity.SCORE_THRESHOLDS[PrecisionClass.INT8])
    assert verdict.passed
    assert any(
        f.startswith("score_spread_err_max 0.01") for f in parity.judge(m, parity.SCORE_THRESHOLDS["fp32"]).failures
    )


def test_tied_reference_scores_skip_the_rank_gates():
    ref = np.full(20, 0.5)
    lists = [list(range(0, 10)), list(range(10, 20))]
    m = parity.compare_scores(ref, ref + 1e-8, lists)
    assert set(m.skipped) == {"score_spearman", "top1_agreement", "top3_agreement"}
    assert m.score_spread_err_max == pytest.approx(1e-8 / parity.SCORE_SCALE_FLOOR)  # the floor, not 0 spread
    verdict = parity.judge(m, parity.SCORE_THRESHOLDS[PrecisionClass.FP32])
    assert verdict.passed, verdict.failures


def test_recorded_thresholds_get_defaults_for_metrics_they_predate():
    old = {"cosine_min": 0.99, "neighbour_agreement_at_10": None, "spearman_pairwise": 0.98}  # before the norm gate
    t = parity.thresholds_from_dict("sentence-transformer", old, "int8")
    assert t == Thresholds(0.99, None, 0.98, DEFAULT_THRESHOLDS[PrecisionClass.INT8].norm_rel_err_max, 0.999)
    assert parity.thresholds_from_dict("sentence-transformer", old) == Thresholds(0.99, None, 0.98, None)


# ------------------------------------------------------------------------------------------- strata
def test_strata_report_each_worst_case_and_a_failing_stratum_is_named():
    ref = _clustered(n=60)
    cand = ref.copy()
    cand[57] = ref[3]  # one text of the small stratum "c" embeds as another
    strata = ["a"] * 30 + ["b"] * 25 + ["c"] * 5
    m = parity.compare(ref, cand, strata=strata)
    assert list(m.strata) == ["a", "b", "c"] and [e["n"] for e in m.strata.values()] == [30, 25, 5]
    assert m.strata["c"]["worst_text_index"] == 57 and m.strata["c"]["cosine_min"] == pytest.approx(m.cosine_min)
    assert m.strata["a"]["cosine_min"] == pytest.approx(1.0) and m.strata["a"]["norm_rel_err_max"] == 0.0
    verdict = parity.judge(m, DEFAULT_THRESHOLDS[PrecisionClass.INT8])
    named = [f for f in verdict.failures if f.startswith("stratum ")]
    assert named and all(f.startswith("stratum c (5 texts): ") for f in named)
    assert any("cosine_min" in f and "#57" in f for f in named)


def test_stratum_neighbour_agreement_is_the_whole_sets_attributed_to_each_stratum():
    ref = _clustered(n=80)
    cand = ref + 0.05 * np.random.default_rng(1).normal(size=ref.shape)
    strata = ["x", "y"] * 40
    m = parity.compare(ref, cand, strata=strata)
    per = [m.strata[s]["neighbour_agreement_at_10"] for s in ("x", "y")]
    assert np.mean(per) == pytest.approx(m.neighbour_agreement_at_10)  # equal halves: the mean of the two
    assert parity.compare(ref, cand).strata is None  # no labels: no strata


def test_a_stratum_alone_can_fail_the_gate_the_whole_set_passes():
    ref = _clustered(n=200)
    cand = ref.copy()
    rng = np.random.default_rng(2)
    cand[190:] = ref[190:] + 0.3 * rng.normal(size=(10, ref.shape[1]))  # only the last stratum moves
    strata = ["big"] * 190 + ["small"] * 10
    thresholds = Thresholds(cosine_min=-1.0, neighbour_agreement_at_10=0.9)  # only the rank gate
    m = parity.compare(ref, cand, strata=strata)
    assert m.neighbour_agreement_at_10 >= 0.9  # the whole set passes...
    verdict = parity.judge(m, thresholds)
    assert not verdict.passed  # ...the stratum does not
    assert len(verdict.failures) == 1
    assert verdict.failures[0].startswith("stratum small (10 texts): neighbour_agreement_at_10 ")


def test_score_strata_attribute_each_pair():
    ref = np.linspace(-2, 2, 40)
    cand = ref.copy()
    cand[33] += 0.5
    strata = ["p"] * 30 + ["q"] * 10
    m = parity.compare_scores(ref, cand, [list(range(0, 10)), list(range(10, 20))], strata)
    assert m.strata["p"]["score_max_abs_diff"] == 0.0 and m.strata["q"]["worst_text_index"] == 33
    assert m.strata["q"]["score_spread_err_max"] == pytest.approx(
        0.5 / (np.percentile(ref, 99) - np.percentile(ref, 1))
    )
    verdict = parity.judge(m, parity.SCORE_THRESHOLDS[PrecisionClass.FP32])
    assert any(f.startswith("stratum q (10 texts): score_max_abs_diff") for f in verdict.failures)


def test_stratum_neighbour_agreement_is_exact_at_the_threshold():
    """95 of 100 agreeing neighbours is 0.95, not 0.9499999: a stratum exactly at its threshold passes."""
    ref = _clustered(n=40)
    m = parity.compare(ref, ref.copy(), strata=["s"] * 40)
    assert m.strata["s"]["neighbour_agreement_at_10"] == 1.0
    hits = np.array([9.0] * 10 + [10.0] * 10)  # 190 of 200
    assert (
        parity.strata_summary(
            ["s"] * 20, ("cosine_min", np.ones(20), True), nn=(hits, lambda h: int(h.sum()) / (len(h) * 10))
        )["s"]["nn"]
        == 0.95
    )


def test_a_stratum_too_small_for_its_rank_gate_is_left_to_the_whole_set():
    """One swapped neighbour moves a 10-text stratum's nn@10 by 0.01, a fifth of int8's 0.05 allowance: its
    rank gate is not judged (at least 20 texts are), its cosine still is."""
    from exporter.quality.judging import _stratum_failures, rank_gate_min_texts

    int8 = parity.DEFAULT_THRESHOLDS[PrecisionClass.INT8]
    assert rank_gate_min_texts("neighbour_agreement_at_10", int8.neighbour_agreement_at_10) == 20
    entry = {"neighbour_agreement_at_10": 0.94, "cosine_min": 0.999, "worst_text_index": 3}
    assert _stratum_failures({"long": {**entry, "n": 10}}, int8) == []
    assert len(_stratum_failures({"code": {**entry, "n": 40}}, int8)) == 1
    assert len(_stratum_failures({"long": {**entry, "n": 10, "cosine_min": 0.98}}, int8)) == 1


def test_a_stratums_rank_metric_is_judged_at_its_lower_confidence_bound():
    """A stratum whose texts agree at 0.96 on average, unevenly, has not shown it keeps 0.95 on texts like them:
    mean - 1.645 standard errors is judged. Every text agreeing fully has no error and passes at its mean."""
    from exporter.quality import parity_rank
    from exporter.quality.judging import RANK_CONFIDENCE_Z, _stratum_failures, rank_bound

    int8 = parity.DEFAULT_THRESHOLDS[PrecisionClass.INT8]
    per_text = np.array([1.0] * 18 + [0.9] * 12)  # 30 texts: mean 0.96
    se = parity_rank.standard_error(per_text)
    assert se == pytest.approx(np.std(per_text, ddof=1) / np.sqrt(30))
    assert parity_rank.standard_error(per_text[:1]) is None
    entry = {"n": 30, "worst_text_index": 7, "neighbour_agreement_at_10": 0.96, "neighbour_agreement_at_10_se": se}
    bound = rank_bound(entry, "neighbour_agreement_at_10")
    assert bound == pytest.approx(0.96 - RANK_CONFIDENCE_Z * se) and bound < 0.95
    [line] = _stratum_failures({"one_word": entry}, int8)
    assert line.startswith("stratum one_word (30 texts): neighbour_agreement_at_10 0.96 (95% lower bound 0.94")
    assert _stratum_failures({"one_word": {**entry, "neighbour_agreement_at_10_se": 0.0}}, int8) == []
    assert _stratum_failures({"one_word": {k: v for k, v in entry.items() if not k.endswith("_se")}}, int8) == []


def test_compare_records_each_stratums_rank_standard_error():
    ref = _clustered(n=80)
    cand = ref + 0.05 * np.random.default_rng(1).normal(size=ref.shape)
    m = parity.compare(ref, cand, strata=["x", "y"] * 40)
    assert all(e["neighbour_agreement_at_10_se"] > 0 for e in m.strata.values())
    exact = parity.compare(ref, ref.copy(), strata=["x", "y"] * 40)
    assert all(e["neighbour_agreement_at_10_se"] == 0.0 for e in exact.strata.values())
    assert parity.judge(exact, parity.DEFAULT_THRESHOLDS[PrecisionClass.FP32]).passed
