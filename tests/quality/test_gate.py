"""The fidelity gate end to end, through the real CLI entry point, on real exports of tiny models.

- Degenerate probe sets (duplicates, texts the model reads alike) never fail a perfect export: a metric the
  reference gives nothing to measure is skipped and the reason recorded in the manifest.
- A norm-only fault in a copy of a real artifact (an ONNX ``Mul`` scaling a graph output by 1.5, as a buggy
  build would write it, with the manifest's file hashes updated so integrity passes) fails ``verify`` with
  exit 3 naming the norm metric, although every cosine is still 1.
- One gate (``exporter.quality.gate``): export and verify measure a variant with the same batches and the
  same metrics. Batch invariance is one of them: exact fp32 passes, and a graph that attends to padding (an
  export that dropped the attention mask), whose output for a text depends on its batch mates, fails it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter import manifest as mf
from tests import hub_fixtures as hf
from tests.artifact_faults import copy_artifact, ignore_attention_mask, scale_outputs
from tests.cli_runner import invoke
from tests.tiny_models import build_tiny_sentence_transformer

PINNED = f"{hf.TINY_REPO}@{hf.TINY_SHA}"
DOT_REPO = "tests-org/tiny-dot"  # the tiny model without Normalize: users score it with the dot product
DOT_PINNED = f"{DOT_REPO}@{hf.OTHER_SHA}"
RANK_METRICS = {"neighbour_agreement_at_10", "spearman_pairwise"}

# id -> (probe lines, metrics the gate must record as skipped, also run verify)
DEGENERATE = {
    "20 identical texts": (["the same text"] * 20, RANK_METRICS, True),
    "case and spacing variants an uncased model reads alike": (
        ["Hello World", "hello world", "HELLO WORLD", "  hello   world  "] * 5,
        RANK_METRICS,
        False,
    ),
    "texts that differ only after max_seq_length (truncated alike)": (
        [("river " * 40) + f"tail {i}" for i in range(20)],
        RANK_METRICS,
        False,
    ),
    "19 copies of one text and one other": (["the same text"] * 19 + ["a cat sat on the mat"], set(), False),
    "two texts, ten copies each": (["the same text", "a cat sat on the mat"] * 10, set(), False),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_probe_sets_never_fail_a_perfect_export(case, tiny_model_dir, tmp_path):
    lines, skipped, run_verify = DEGENERATE[case]
    hf.seed_tiny(tiny_model_dir)
    probe = tmp_path / "probe.txt"
    probe.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "art"
    res = invoke("export", PINNED, "--out", str(out), "--probe", str(probe), "--json")
    assert res.code == 0, res.err
    parity = mf.load(out)["variants"][0]["parity"]
    assert parity["passed"] and parity["failures"] == []
    assert set(parity["skipped"]) == skipped
    assert all(parity[name] is None for name in skipped)
    assert all(parity[name] is not None for name in RANK_METRICS - skipped)
    assert all("tie" in reason for reason in parity["skipped"].values())
    assert parity["cosine_min"] >= 0.9999 and parity["norm_rel_err_max"] <= 0.01
    assert parity["serving_paths"]["runtime"]["passed"] and parity["serving_paths"]["agreement"]["passed"]
    if run_verify:
        res = invoke("verify", str(out))
        assert res.code == 0, res.out + res.err
        if skipped:
            assert "skipped (no variance in the reference): neighbour_agreement_at_10, spearman_pairwise" in res.out


# ------------------------------------------------------------------------------------ norm faults
def _export(model: str, out: Path) -> None:
    res = invoke("export", model, "--out", str(out), "--json")
    assert res.code == 0, res.err


@pytest.fixture(scope="module")
def dot_model_dir(tmp_path_factory) -> Path:
    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny-dot") / "tiny-dot", normalize=False)


@pytest.fixture(scope="module")
def good_artifacts(tiny_model_dir, dot_model_dir, tmp_path_factory) -> dict[str, Path]:
    """One real export each of the normalised tiny model and of the one without Normalize."""
    home = tmp_path_factory.mktemp("hf-gate")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(home))
        mp.setenv("HF_HUB_CACHE", str(home / "hub"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        hf.seed_tiny(tiny_model_dir)
        hf.seed_tiny(dot_model_dir, repo_id=DOT_REPO, sha=hf.OTHER_SHA)
        root = tmp_path_factory.mktemp("gate-art")
        arts = {"cos": root / "cos", "dot": root / "dot"}
        _export(PINNED, arts["cos"])
        _export(DOT_PINNED, arts["dot"])
    return arts


@pytest.fixture
def seeded_both(tiny_model_dir, dot_model_dir):
    hf.seed_tiny(tiny_model_dir)
    hf.seed_tiny(dot_model_dir, repo_id=DOT_REPO, sha=hf.OTHER_SHA)


# id -> (model, graph outputs scaled by 1.5, failure lines verify must print)
NORM_FAULTS = {
    "normalised model, sentence_embedding (the runtime path)": (
        "cos",
        ("sentence_embedding",),
        ["runtime path: norm_rel_err_max 0.5", "serving paths disagree: norm_rel_err_max"],
    ),
    "dot model, both outputs (every path)": (
        "dot",
        ("last_hidden_state", "sentence_embedding"),
        ["norm_rel_err_max 0.5", "runtime path: norm_rel_err_max 0.5"],
    ),
}


def test_good_dot_artifact_passes_verify_with_both_paths_recorded(good_artifacts, seeded_both):
    """Also: one gate. verify's fresh process measures the exported variant in the same batches, with the same
    metrics and batch compositions, as the export did; exact fp32 passes the batch-invariance gate."""
    from exporter.quality import batch_invariance

    res = invoke("verify", str(good_artifacts["dot"]), "--json")
    assert res.code == 0, res.out + res.err
    parity = json.loads(res.out)["variants"][0]["parity"]
    assert parity["serving_paths"]["runtime"]["output"] == "sentence_embedding"
    assert parity["norm_rel_err_max"] <= 1e-5 and parity["serving_paths"]["runtime"]["norm_rel_err_max"] <= 1e-5
    assert parity["serving_paths"]["agreement"]["passed"]
    recorded = mf.load(good_artifacts["dot"])["variants"][0]["parity"]
    assert set(parity) == set(recorded) and parity["threshold"] == recorded["threshold"]
    assert _numbers(parity) == pytest.approx(_numbers(recorded), abs=1e-6)  # the same batches: the same numbers
    invariance = recorded["batch_invariance"]
    assert parity["batch_invariance"]["compositions"] == invariance["compositions"]
    assert invariance["compositions"] == ["alone", "long neighbours", "bench batch 8", batch_invariance.GATE_BATCHES]
    assert invariance["texts"] == batch_invariance.SUBSET
    assert recorded["threshold"]["batch_cosine_min"] == 0.99999  # the fp32 class rule (parity_gates)
    assert recorded["batch_cosine_min"] == invariance["cosine_min"] >= 1 - 1e-9  # exact fp32: batch-invariant


def _numbers(parity: dict) -> dict[str, float]:
    return {k: v for k, v in parity.items() if isinstance(v, float)}


@pytest.mark.parametrize("case", list(NORM_FAULTS))
def test_norm_only_fault_fails_verify_naming_the_norm_metric(case, good_artifacts, seeded_both, tmp_path):
    model, outputs, expected = NORM_FAULTS[case]
    art = copy_artifact(good_artifacts[model], tmp_path / "faulty")
    scale_outputs(art, "onnx", outputs, 1.5)
    assert mf.check_files(art, mf.load(art)).ok  # integrity cannot see it: the hashes match the new file
    res = invoke("verify", str(art), "--json")
    assert res.code == 3, res.out + res.err
    assert "norm_rel_err_max" in res.err
    case_ = json.loads(res.out)["variants"][0]
    assert case_["status"] == "failed"
    for line in expected:
        assert any(f.startswith(line) for f in case_["failures"]), (line, case_["failures"])
    assert all("norm_rel_err_max" in f and "above the threshold 0.01" in f for f in case_["failures"])
    # a norm-only change: every direction is intact, so the cosine gate alone would have passed it
    parity = case_["parity"]
    assert parity["cosine_min"] >= 0.9999 and parity["serving_paths"]["runtime"]["cosine_min"] >= 0.9999


# ------------------------------------------------------------------------- one gate, batch invariance
def test_a_graph_that_attends_to_padding_fails_the_batch_invariance_gate(good_artifacts, seeded_both, tmp_path):
    art = copy_artifact(good_artifacts["cos"], tmp_path / "faulty")
    ignore_attention_mask(art, "onnx")
    res = invoke("verify", str(art))
    assert res.code == 3, res.out + res.err
    assert "batch cos min" in res.out  # shown in the verdict line
    assert "batch_cosine_min 0.99" in res.out and "below the threshold 0.99999" in res.out  # the verdict's failures
    error = res.err.strip().splitlines()[-1]
    assert error.startswith("Error: variant(s) failed verification: onnx: ") and len(error) < 400, error


def test_batch_compositions_pad_short_texts_and_cover_every_subset_text():
    import numpy as np

    from exporter.quality import batch_invariance as bi

    texts = [("word " * n).strip() for n in range(1, 101)]  # lengths 4..499 characters
    chosen = bi.subset(texts)
    assert len(chosen) == bi.SUBSET and 99 not in chosen  # the very longest only pads
    assert 0 in chosen and max(chosen) == round(100 * bi.SUBSET_SPAN) - 1  # the shortest and the longest kept
    plan = bi.compositions(texts, chosen, (1, 8, 32), gate_batch=32)
    assert list(plan) == ["alone", "long neighbours", "bench batch 8"]
    assert plan["alone"] == [[i] for i in chosen] and plan["long neighbours"] == [sorted(chosen)[:4][::-1] + [99]]
    assert sorted(i for b in plan["bench batch 8"] for i in b) == sorted(chosen)

    def padded_mean(batch):  # a model whose output moves with the batch's padded length, as a mask bug does
        width = max(len(t) for t in batch)
        return np.array([[len(t), width - len(t) + 1.0] for t in batch])

    gate_run = padded_mean(texts)
    bad = bi.measure(padded_mean, texts, (1, 8, 32), gate_run, 32)
    assert bad.cosine_min < 0.9 and bad.worst["between"][0] == "alone"
    exact = bi.measure(
        lambda batch: np.array([[len(t), 1.0] for t in batch]),
        texts,
        (1, 8, 32),
        np.array([[len(t), 1.0] for t in texts]),
        32,
    )
    assert exact.cosine_min == pytest.approx(1.0, abs=1e-12)
    assert exact.compositions == ["alone", "long neighbours", "bench batch 8", bi.GATE_BATCHES]


# ------------------------------------------------------------------------------------- progress
class _Recorder:
    def __init__(self):
        self.labels: list[str] = []

    def step(self, label: str):
        import contextlib

        self.labels.append(label)
        return contextlib.nullcontext()


def test_long_runs_report_progress_per_chunk_and_keep_row_order():
    import numpy as np

    from exporter.quality.parity_run import PROGRESS_CHUNK, run_chunked

    n = 2 * PROGRESS_CHUNK + 5
    progress = _Recorder()
    out = run_chunked(progress, "Running the reference", lambda part: np.array(part)[:, None] * 2, list(range(n)))
    assert progress.labels == [
        f"Running the reference ({PROGRESS_CHUNK}/{n})",
        f"Running the reference ({2 * PROGRESS_CHUNK}/{n})",
        f"Running the reference ({n}/{n})",
    ]
    np.testing.assert_array_equal(out[:, 0], 2 * np.arange(n))
    small = _Recorder()
    run_chunked(small, "Running the reference", lambda part: np.array(part), list(range(10)))
    assert small.labels == ["Running the reference"]


# ------------------------------------------------------------------------------ the real default
@pytest.mark.slow
def test_norm_fault_in_a_real_minilm_artifact_fails_verify(default_best_export, tmp_path, monkeypatch):
    """all-MiniLM-L6-v2 normalises in torch on the sentence-transformers path, so a x1.5 build hides there;
    the runtime path (the graph's sentence_embedding, what torch-free servers read) must catch it. The good
    ``onnx`` is the session's ``--variants best`` export of the default (``default_best_export``)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(default_best_export.hub_cache))  # verify resolves the pinned source
    good = default_best_export.out
    onnx = mf.get_variant(mf.load(good), "onnx")
    parity = onnx["parity"]
    assert onnx["status"] == "passed"
    assert parity["norm_rel_err_max"] < 1e-5 and parity["serving_paths"]["runtime"]["norm_rel_err_max"] < 1e-5
    assert parity["serving_paths"]["agreement"]["cosine_min"] > 0.999999
    art = copy_artifact(good, tmp_path / "faulty")
    scale_outputs(art, "onnx", ("last_hidden_state", "sentence_embedding"), 1.5)
    res = invoke("verify", str(art), "--variants", "onnx")
    assert res.code == 3, res.out + res.err
    assert "runtime path: norm_rel_err_max 0.5" in res.out and "serving paths disagree: norm_rel_err_max" in res.out
    assert "cosine_min 1.000000" in res.out


# ------------------------------------------------------------------------------------------ strata
def test_strata_reach_every_verdict(good_artifacts, seeded_both, tmp_path):
    """The built-in probes and the tokenizer-derived ones, in named strata, reach the manifest, the export
    table and --json, REPORT.md and JUnit; verify re-makes the same set from the artifact's tokenizer."""
    from exporter.quality import junit, probes, report, tokenizer_probes
    from exporter.quality.verify import CaseResult, VerifyReport

    art = copy_artifact(good_artifacts["cos"], tmp_path / "art")
    m = mf.load(art)
    names = set(probes.STRATA) - {probes.USER_STRATUM}
    assert set(m["probe"]["strata"]) == names and sum(m["probe"]["strata"].values()) == m["probe"]["n"]
    assert m["probe"]["generated"]["counts"] == tokenizer_probes.COUNTS
    again = tokenizer_probes.for_model(probes.load_text_set(None, "probe"), art, record=m["probe"]["generated"])
    assert again.sha256 == m["probe"]["sha256"]  # what verify re-runs on, from the artifact's own files
    for v in m["variants"]:
        strata = v["parity"]["strata"]
        assert set(strata) == names
        assert all(
            {"n", "cosine_min", "neighbour_agreement_at_10", "worst_text_index"} <= set(e) for e in strata.values()
        )
        assert min(e["cosine_min"] for e in strata.values()) == v["parity"]["cosine_min"]

    md = report.render_markdown(m)
    assert "## Worst case per probe stratum" in md
    assert f"| uncovered_script ({m['probe']['strata']['uncovered_script']}) |" in md and "tok_unknown" in md

    table = invoke("export", PINNED, "--out", str(art))  # every variant kept: nothing rebuilt
    assert table.code == 0, table.err
    assert "worst case per probe stratum" in table.out and "tok_max_length" in table.out
    summary = json.loads(invoke("export", PINNED, "--out", str(art), "--json").out)
    assert all(set(v["strata"]) == names for v in summary["variants"])

    v = m["variants"][0]
    line = "stratum one_word (30 texts): cosine_min 0.5 is below the threshold 0.9999 (worst text #200)."
    case = CaseResult(v["id"], "failed", "x", failures=[line], parity=v["parity"])
    xml = junit.to_xml(VerifyReport(art, CaseResult("integrity", "passed"), [case]))
    assert xml.count('classname="exporter.verify.stratum"') == len(names)
    assert f'name="{v["id"]}[one_word]"' in xml and xml.count("<failure") == 2  # the variant and its stratum
