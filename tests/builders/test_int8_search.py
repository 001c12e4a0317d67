"""The fidelity search's held-out rule (exporter.builders.fidelity_search): a candidate counts only when texts the
ranking never saw clear the goal, with a margin derived from the measured ranking/held-out gap.

The search runs for real; the "models" are exact embeddings of a chosen cosine per text (a candidate is the set
of ops kept in float, and what each op fixes is stated below), so the rule is tested on numbers it cannot round
its way past, in milliseconds.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from exporter.builders import fidelity_search, search_record, search_scorer
from exporter.builders.options import SearchOptions

N, DIM = 48, 16
TEXTS = [f"calibration text number {i} " + "word " * (i % 7) for i in range(N)]


class _Ops:
    """Backend: the candidates are op names; a model is the frozenset of ops kept in float."""

    def __init__(self, candidates):
        self.candidates = list(candidates)

    def quantize_all(self):
        return frozenset()

    def keep_in_float(self, names):
        return frozenset(names)


class _Exact(search_scorer.Scorer):
    """Each text's row has exactly the cosine ``cosine(model, text index)`` to the reference."""

    def __init__(self, cosine):
        rng = np.random.default_rng(7)
        ref = rng.normal(size=(N, DIM))
        super().__init__(TEXTS, ref)
        other = rng.normal(size=(N, DIM))
        other -= (np.einsum("ij,ij->i", other, ref) / np.einsum("ij,ij->i", ref, ref))[:, None] * ref
        self.ortho = other / np.linalg.norm(other, axis=1, keepdims=True) * np.linalg.norm(ref, axis=1, keepdims=True)
        self.cosine = cosine
        self.encoded = 0

    def encode(self, model, idx):
        self.encoded += len(idx)
        c = np.array([self.cosine(model, int(i)) for i in idx])
        t = np.sqrt(np.maximum(1 / c**2 - 1, 0))
        return self.reference[idx] + t[:, None] * self.ortho[idx]


OPTS = SearchOptions(target_cosine_min=0.99, margin=0.003, target_nn10=0.0, nn10_margin=0.0, holdout_fraction=0.25)
RANKING, HELD = fidelity_search.holdout_split(TEXTS, OPTS.holdout_fraction)


def test_the_split_is_deterministic_order_free_and_keeps_both_sides():
    assert len(HELD) == 12 and len(RANKING) == N - 12 and not set(HELD) & set(RANKING)
    shuffled = TEXTS[:]
    random.Random(3).shuffle(shuffled)
    _, held = fidelity_search.holdout_split(shuffled, OPTS.holdout_fraction)
    assert {shuffled[i] for i in held} == {TEXTS[i] for i in HELD}
    assert [len(s) for s in fidelity_search.holdout_split(["a", "b"], 0.0)] == [1, 1]  # never empty, never all
    assert [len(s) for s in fidelity_search.holdout_split(["a", "b"], 1.0)] == [1, 1]


def test_a_candidate_reaching_the_goal_only_on_the_ranking_texts_is_rejected():
    """``overfit`` lifts every ranking text to 0.9999 and leaves the held-out ones at all-int8's 0.98: it ranks
    first (the screen sees ranking texts only) and reaches the goal there, but does not count. ``general`` lifts
    every text to 0.998: only the prefix holding it counts."""
    held = set(HELD.tolist())

    def cosine(model, i):
        c = 0.98
        if "general" in model:
            c = 0.998
        if "overfit" in model and i not in held:
            c = 0.9999
        return c

    model, result = fidelity_search.search(_Ops(["general", "overfit", "idle", "spare"]), _Exact(cosine), OPTS)
    assert list(result.screened)[0] == "overfit"  # ranked first on the ranking texts
    first = next(s for s in result.steps if s["kept_float"] == 1)
    assert first["ranking"]["cosine_min"] >= OPTS.goal_cosine_min and not first["counts"]
    assert first["heldout"]["cosine_min"] == pytest.approx(0.98) and "held-out" in first["why"]
    assert result.reached and result.kept_float == ["overfit", "general"] and model == frozenset(result.kept_float)


def test_the_margin_is_the_measured_gap_when_wider_than_the_floor_and_is_recorded():
    """A held-out minimum above gate + floor (0.993) but below gate + gap does not count; the recorded margin is
    max(floor, ranking - held-out) on the search's model, beside both sides' metrics and the rule."""
    held = set(HELD.tolist())
    cuts = {"a": (0.9995, 0.9940), "b": (0.9995, 0.9960), "c": (0.97, 0.97), "d": (0.97, 0.97)}  # (ranking, held-out)

    def cosine(model, i):
        best = 0.97
        for op in model:
            best = max(best, cuts[op][i in held])
        return best

    _, result = fidelity_search.search(_Ops(["a", "b", "c", "d"]), _Exact(cosine), OPTS)
    steps = {s["kept_float"]: s for s in result.steps}
    assert result.screened and steps[1]["added"] == list(result.screened)[0]
    rejected = next(s for s in result.steps if s["heldout"] and s["heldout"]["cosine_min"] == pytest.approx(0.994))
    assert rejected["heldout"]["cosine_min"] > OPTS.goal_cosine_min and not rejected["counts"]
    assert rejected["margin"]["cosine_min"] == pytest.approx(0.9995 - 0.994, abs=1e-6)
    record = search_record.search_record(result, OPTS)
    gap = record["ranking_result"]["cosine_min"] - record["heldout_result"]["cosine_min"]
    assert record["margin"]["cosine_min"] == pytest.approx(max(OPTS.margin, gap), abs=1e-6)
    assert record["margin"]["cosine_min"] == pytest.approx(0.0035, abs=1e-6)  # b: 0.9995 - 0.996
    assert record["heldout_result"]["cosine_min"] >= OPTS.target_cosine_min + record["margin"]["cosine_min"]
    assert (
        record["split"]["heldout_texts"] == len(HELD) and record["goal"]["margin_rule"] == fidelity_search.MARGIN_RULE
    )
    assert result.reached and result.kept_float == ["a", "b"]


def test_a_goal_out_of_reach_even_with_every_candidate_in_float_stops_before_the_screen():
    """Nothing lifts the texts enough: with all four candidates in float the model still misses the goal, so no
    prefix can reach it. The search ends on that model without screening a candidate; its scan stops at the
    first batch, which already holds a text below the goal (no held-out texts encoded for a verdict the ranking
    side settles), and the record says why each op is in float."""
    scorer = _Exact(lambda model, i: 0.95 + 0.001 * len(model))
    _, result = fidelity_search.search(_Ops(["p", "q", "r", "s"]), scorer, OPTS)
    assert not result.reached and result.stopped_by.startswith("out of reach: all 4 candidates")
    assert [s["kept_float"] for s in result.steps] == [0, 4] and result.screened == {}
    assert result.kept_float == ["p", "q", "r", "s"]
    record = search_record.search_record(result, OPTS)
    assert record["ranking_result"]["cosine_min"] == pytest.approx(0.954) and record["heldout_result"] is None
    assert record["ranking_result"]["texts_scored"] == search_scorer.BATCH < len(RANKING)
    kept = search_record.kept_records(result, "op")
    assert [k["op"] for k in kept] == result.kept_float and all("out of reach" in k["why"] for k in kept)


def test_a_goal_out_of_reach_within_the_cap_is_known_after_the_top_candidate_and_the_cap():
    """Eight candidates, a cap of four. All eight in float count, so the screen runs; then after the top one
    fails the cap is tried next, and when it fails too the search ends there (prefixes 1 and 4, not 1, 2, 4).
    A goal in reach at three costs the cap's model once and is then galloped and bisected as before."""
    ops = [f"op{i}" for i in range(8)]
    beyond_cap = _Exact(lambda model, i: 0.985 + 0.0015 * len(model))  # 4 in float: 0.991; 8: 0.997 (goal 0.993)
    _, result = fidelity_search.search(_Ops(ops), beyond_cap, OPTS)
    assert not result.reached and result.stopped_by.startswith("max_float_fraction: 4 of 8")
    assert [s["kept_float"] for s in result.steps] == [0, 8, 1, 4] and len(result.kept_float) == 4
    assert len(result.screened) == 8

    in_reach = _Exact(lambda model, i: min(0.9999, 0.98 + 0.006 * len(model)))  # counts from 3 in float (0.998)
    _, result = fidelity_search.search(_Ops(ops), in_reach, OPTS)
    assert result.reached and len(result.kept_float) == 3
    assert [s["kept_float"] for s in result.steps] == [0, 8, 1, 4, 2, 3]


def test_tokenizer_derived_calibration_samples_share_no_text_with_the_tokenizer_probes(tiny_model_dir):
    """The search's samples come from the probes' generator with a seed of its own: the same texts each time,
    none of them a probe text."""
    from exporter.builders.context import BuildContext
    from exporter.quality import tokenizer_probes, tokenizer_texts

    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=tiny_model_dir)
    texts = tokenizer_texts.calibration_samples(ctx)
    assert texts and texts == tokenizer_texts.calibration_samples(ctx)
    probes, _, _ = tokenizer_probes.generate(tiny_model_dir)
    assert not set(texts) & set(probes)


def test_an_all_int8_model_that_counts_encodes_each_text_once():
    """The all-int8 model's ranking texts give both the scan order (cosines) and the gate's metrics: one
    encode each, then the held-out texts once; nothing screened."""
    scorer = _Exact(lambda model, i: 0.999)
    _, result = fidelity_search.search(_Ops(["a", "b"]), scorer, OPTS)
    assert result.reached and not result.screened and result.kept_float == []
    assert scorer.encoded == len(RANKING) + len(HELD)


def test_narrow_keeps_a_cheaper_unit_only_where_the_model_still_counts_and_records_each_trial():
    """``a`` in the split unit still lifts every text enough; ``b`` split does not: only ``a`` is swapped, the
    trial of ``b`` is a recorded step that did not count, and the record's final step is the model kept."""
    lift = {"a": 0.007, "a:split": 0.0065, "b": 0.007, "b:split": 0.001}

    def cosine(model, i):
        return 0.98 + sum(lift.get(op, 0.0) for op in model)

    scorer = _Exact(cosine)
    model, result = fidelity_search.search(_Ops(["a", "b", "c", "d"]), scorer, OPTS)
    assert result.reached and sorted(result.kept_float) == ["a", "b"]

    def model_for(swapped):
        return frozenset(f"{op}:split" if op in swapped else op for op in result.kept_float)

    encoded = scorer.encoded
    narrowed, swapped = fidelity_search.narrow(scorer, OPTS, result, model, ["a", "b"], model_for)
    assert swapped == ["a"] and narrowed == frozenset({"a:split", "b"})
    # the search's model is not built nor encoded again: only the two trials are scored
    assert scorer.encoded - encoded <= 2 * (len(RANKING) + len(HELD))
    trials = {s["narrowed"]: s for s in result.steps if "narrowed" in s}
    assert trials["a"]["counts"] and not trials["b"]["counts"]
    record = search_record.search_record(result, OPTS)
    assert record["ranking_result"] == trials["a"]["ranking"]  # the model kept, not the last trial


def test_the_scorer_reports_the_worst_strata_nn10_and_a_stratum_below_the_gate_does_not_count():
    """With strata labelled, a model's record names the stratum with the lowest nn@10 at the gate's lower
    confidence bound (of those with enough texts); the rule counts a model only when that stratum clears the
    gate, whatever the whole set gives."""
    from exporter.quality import judging, parity

    scorer = _Exact(lambda model, i: 0.9 + 0.09 * (i % 3 == 0))
    assert "nn10_worst_stratum" not in scorer.metrics(frozenset())
    scorer.strata = ["tok_random" if i % 4 == 0 else "calibration" for i in range(N)]  # as search_texts labels
    scored = scorer.metrics(frozenset())
    m = parity.compare(scorer.reference, scorer.encode_all(frozenset(), np.arange(N)), strata=scorer.strata)
    by_stratum = {name: round(judging.rank_bound(s, "neighbour_agreement_at_10"), 4) for name, s in m.strata.items()}
    assert all(by_stratum[n] < s["neighbour_agreement_at_10"] for n, s in m.strata.items())  # uneven: a wide bound
    worst = scored["nn10_worst_stratum"]
    assert worst["value"] == min(by_stratum.values()) and by_stratum[worst["stratum"]] == worst["value"]
    good = {"cosine_min": 0.999, "cosine_mean": 0.9995, "neighbour_agreement_at_10": 0.99}
    opts = SearchOptions(target_cosine_min=0.99, margin=0.003, target_nn10=0.95, nn10_margin=0.01)
    assert fidelity_search.judge(good, good, opts)["counts"]
    low = {**good, "nn10_worst_stratum": {"stratum": "tok_random", "value": 0.94}}
    assert not fidelity_search.judge(low, good, opts)["counts"] and not fidelity_search.judge(good, low, opts)["counts"]


def test_a_ranking_stratum_below_the_gate_settles_a_model_without_its_held_out_texts():
    """Every text clears the cosine goal and the ranking texts' nn@10 (0.9944) clears its goal of 0.99, but their
    one stratum's nn@10 at its lower confidence bound (0.9881) does not: each model is settled on its ranking
    texts. All-int8 is scored in full for the record; every other model is never encoded on its held-out texts,
    whose verdict could not change."""
    opts = SearchOptions(target_cosine_min=0.99, margin=0.003, target_nn10=0.99, nn10_margin=0.0, holdout_fraction=0.25)
    scorer = _Exact(lambda model, i: 0.9999)
    scorer.strata = ["calibration"] * N
    _, result = fidelity_search.search(_Ops(["p", "q"]), scorer, opts)
    assert result.stopped_by.startswith("out of reach: all 2 candidates")
    first, every = result.steps
    assert (
        first["ranking"]["neighbour_agreement_at_10"]
        >= opts.goal_nn10
        > first["ranking"]["nn10_worst_stratum"]["value"]
    )
    assert first["heldout"] is not None
    assert every["heldout"] is None and every["why"].startswith("ranking texts")
    assert scorer.encoded == N + len(RANKING)  # all-int8 on every text, then the ranking texts once more
