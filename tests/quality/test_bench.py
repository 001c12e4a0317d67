"""bench and recommend on a real tiny artifact: figures present and positive, the rule holds.

Timings are never asserted (the machine is noisy); speed claims live in benchmarks/bench_targets.py.
"""

from __future__ import annotations

import json

import pytest

from exporter import manifest as mf
from exporter.errors import ExitCode, ExporterError, IntegrityError
from tests.cli_runner import invoke
from tests.quality.test_verify import VARIANTS, _artifact_template, artifact  # noqa: F401 - fixtures

SIZES = [1, 4]


@pytest.fixture
def benched(artifact):  # noqa: F811 - the fixture imported above
    from exporter.quality import bench

    steps = []  # what a progress display is told, in order
    result = bench.bench(artifact, batch_sizes=SIZES, threads=1, max_texts=12, rounds=2, on_step=steps.append)
    return artifact, result, bench.record(artifact, result), steps


def test_figures_present_and_positive(benched):
    art, result, manifest, _ = benched
    assert set(result.runners) == {"torch", *VARIANTS}
    for name, s in result.runners.items():
        for b in SIZES:
            assert s["throughput"][str(b)] > 0, name
            assert len(s["throughput_rounds"][str(b)]) == 2
            assert s["ratio_to_torch"][str(b)] > 0
        assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p95"]
        assert s["latency_ms"]["n"] == 2 * 12
        assert s["runtime"]["threads"] == 1
    assert result.reference["ratio_to_torch"] == {"1": 1.0, "4": 1.0}
    for vid in VARIANTS:
        assert result.runners[vid]["runtime"]["provider"] == "CPUExecutionProvider"


def test_recorded_in_manifest(benched):
    art, result, manifest, _ = benched
    on_disk = mf.load(art)  # schema-valid after the atomic write
    assert on_disk == manifest
    top = on_disk["bench"]
    assert top["threads"] == 1 and top["batch_sizes"] == SIZES and top["rounds"] == 2
    assert top["cpu"]["model"] and isinstance(top["cpu"]["flags"], list)
    assert top["reference"]["throughput"]["4"] > 0
    assert top["variants"] == list(VARIANTS)
    for v in on_disk["variants"]:
        assert v["bench"]["ratio_to_torch"]["4"] > 0
    assert not list(art.glob(".manifest.json.*"))  # no temp file left behind
    mf.require_intact(art, on_disk)  # bench wrote nothing a manifest check would flag


def test_recommended_satisfies_its_rule(benched):
    from exporter.quality.recommend import eligible, rule_batch

    _, _, manifest, _ = benched
    rec = manifest["recommended"]
    assert rule_batch(manifest) == 4  # 32 was not measured: the largest measured batch size
    assert "batch 4" in rec["rule"]
    chosen = mf.get_variant(manifest, rec["variant"])
    assert eligible(chosen)
    passing = [v for v in manifest["variants"] if eligible(v) and v["bench"]]
    assert rec["throughput_ratio"] == max(v["bench"]["ratio_to_torch"]["4"] for v in passing)
    assert rec["throughput_ratio"] == chosen["bench"]["ratio_to_torch"]["4"]


def test_progress_per_runner_and_round(benched):
    """Every runner of every round is announced (load first) and closed with its figures, one at a time."""
    _, result, _, steps = benched
    runners, rounds = list(result.runners), 2
    done = [s for s in steps if s.done]
    assert [(s.round, s.runner) for s in steps if s.stage == "load"] == [(s.round, s.runner) for s in done]
    assert len(done) == rounds * len(runners)
    for r in range(1, rounds + 1):
        assert sorted(s.runner for s in done if s.round == r) == sorted(runners)
    assert [s.position for s in done] == list(range(1, len(done) + 1))
    assert all(s.total == len(done) and s.rounds == rounds for s in steps)
    assert [s.runner for s in done[: len(runners)]] != [s.runner for s in done[len(runners) :]]  # rotated
    for s in done:
        assert set(s.figures) == set(SIZES) and all(v > 0 for v in s.figures.values())
        assert s.figures[4] == result.runners[s.runner]["throughput_rounds"]["4"][s.round - 1]
        assert f"round {s.round}/2" in str(s) and s.runner in str(s)
    stages = [s.stage for s in steps[: 2 + len(SIZES) + 1]]
    assert stages == ["load", "warm-up", *(f"batch {b}" for b in SIZES), "done"]  # one runner at a time
    fractions = [s.fraction for s in steps[: len(stages)]]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0


def test_record_states_batching_and_memory(benched):
    from exporter.quality.bench import BATCHING, WARMUP, sort_by_length

    art, result, manifest, steps = benched
    top = mf.load(art)["bench"]
    assert top["batching"] == BATCHING and top["batching"].startswith("sorted by length")
    assert top["warmup"] == WARMUP and "warmup_rounds" not in top  # warmed on every load, not in one round
    assert len([s for s in steps if s.stage == "warm-up"]) == 2 * len(result.runners)
    idle = top["torch_idle_threads"]  # PASSIVE, unless torch was loaded before the bench (then as it was)
    assert idle in ("OMP_WAIT_POLICY=PASSIVE", "as torch loaded (spinning allowed)") or "POLICY=" in idle, idle
    mem = top["memory"]
    assert mem["runners_resident"] == 1
    assert 0 < mem["peak_rss_mb_before"] <= mem["peak_rss_mb"]
    assert set(mem["rss_mb_by_runner"]) == set(result.runners)
    for name, rss in mem["rss_mb_by_runner"].items():
        assert 0 < rss <= mem["peak_rss_mb"], name
        assert result.runners[name]["rss_mb"] == rss
    from exporter.quality.report import render_markdown

    assert f"Batches {BATCHING}" in render_markdown(manifest)  # REPORT.md says it too
    assert f"peak resident memory {mem['peak_rss_mb']:.0f} MiB" in render_markdown(manifest)
    texts = ["a", "abcd", "ab", "abc"]
    assert sort_by_length(texts) == ["abcd", "abc", "ab", "a"]
    assert sort_by_length([("q", "long passage"), ("query", "p")]) == [("q", "long passage"), ("query", "p")]


def test_recommend_skips_failed_variants():
    """The rule on hand-set figures: a faster variant that fails a threshold is never chosen."""
    from exporter.quality.recommend import recommend

    def variant(vid, ratio, passed, size):
        return {
            "id": vid,
            "backend": "onnx",
            "status": "passed" if passed else "failed",
            "files": [{"path": f"onnx/{vid}.onnx", "size": size, "sha256": "0" * 64}],
            "load": {"backend": "onnx", "file_name": f"onnx/{vid}.onnx"},
            "parity": {"passed": passed, "failures": [] if passed else ["cosine_min 0.97 is below 0.99"]},
            "bench": {"ratio_to_torch": {"32": ratio}, "throughput": {"32": 100 * ratio}},
        }

    manifest = {
        "bench": {"batch_sizes": [1, 32], "reference": {"throughput": {"32": 100.0}}},
        "variants": [variant("a", 1.4, True, 90), variant("b", 2.2, False, 20), variant("c", 1.4, True, 80)],
    }
    rec = recommend(manifest)
    assert rec["variant"] == "c"  # a and c tie on speed; c is smaller; b is faster but fails
    assert rec["batch_size"] == 32 and rec["throughput_ratio"] == 1.4
    manifest["variants"] = [variant("b", 2.2, False, 20)]
    rec = recommend(manifest)
    assert rec["variant"] is None and "b" in rec["reason"]
    assert recommend({"bench": None, "variants": []}) is None


def test_bench_refuses_tampered_files(artifact):  # noqa: F811
    from exporter.quality import bench

    (artifact / "onnx" / "model.onnx").write_bytes(b"swapped")
    with pytest.raises(IntegrityError) as err:
        bench.bench(artifact, ["onnx"], batch_sizes=[1], threads=1, max_texts=2, rounds=1)
    assert err.value.exit_code == ExitCode.INTEGRITY
    assert "onnx/model.onnx" in str(err.value)


def test_bench_resolves_the_source_once(artifact, monkeypatch):  # noqa: F811
    """The pinned source is resolved (Hub listing, re-hash of every file) once per bench, not once per round."""
    from exporter.quality import bench
    from exporter.source import resolve as source

    calls = []
    real = source.resolve

    def spy(*args, **kwargs):  # calls through: the real resolve runs
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(source, "resolve", spy)
    result = bench.bench(artifact, ["onnx"], batch_sizes=[1], threads=1, max_texts=2, rounds=3)
    assert len(result.reference["throughput_rounds"]["1"]) == 3  # the reference was loaded in each round
    assert len(calls) == 1


@pytest.mark.parametrize("text", ["", "0", "a,b", "8,-1"])
def test_bad_batch_sizes(text):
    from exporter.quality.bench import parse_batch_sizes

    with pytest.raises(ExporterError) as err:
        parse_batch_sizes(text)
    assert err.value.exit_code == ExitCode.USAGE


def test_cli_bench_json(artifact, tmp_path):  # noqa: F811
    texts = tmp_path / "texts.txt"
    texts.write_text("hello world\nthe quick brown fox\nwhat is a vector search\n", encoding="utf-8")
    args = ["bench", str(artifact), "--variants", "onnx", "--batch-sizes", "1,2", "--threads", "1"]
    result = invoke(*args, "--texts", str(texts), "--rounds", "1", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["bench"]["texts"]["n"] == 3 and data["bench"]["texts"]["source"] == str(texts)
    assert data["recommended"]["variant"] == "onnx"
    assert (artifact / "REPORT.md").is_file() and (artifact / "report.png").is_file()
    manifest = mf.load(artifact)
    assert mf.get_variant(manifest, "onnx-o1")["bench"] is None  # not in this run: no stale ratio kept


def test_bench_consumers_times_each_consumer_beside_the_bare_runtime(artifact):  # noqa: F811 - fixture
    from exporter.cli.output import print_consumer_bench
    from exporter.quality.bench_consumers import ConsumerBench

    before = mf.load(artifact)
    names = "runtime,sentence-transformers,fastembed,transformers.js"
    args = ["--variants", "onnx", "--batch-sizes", "1,4", "--rounds", "1", "--max-texts", "6", "--threads", "1"]
    result = invoke("bench", str(artifact), "--consumers", names, *args, "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    rows = {r["runner"]: r for r in out["rows"]}
    assert [r["variant"] for r in out["rows"]] == ["onnx"] * 5
    assert list(rows) == ["bare runtime", "sentence-transformers", "fastembed", "transformers.js", "runtime"]
    timed = [n for n, r in rows.items() if r["status"] == "timed"]
    assert {"bare runtime", "runtime", "sentence-transformers"} <= set(timed)  # in-process, always here
    for name in timed:
        assert set(rows[name]["throughput"]) == set(rows[name]["ratio_to_bare"]) == {"1", "4"}
        assert all(v > 0 for v in (*rows[name]["throughput"].values(), *rows[name]["ratio_to_bare"].values()))
    assert rows["bare runtime"]["ratio_to_bare"] == {"1": 1.0, "4": 1.0}
    assert rows["transformers.js"]["status"] == "not run" and "node subprocess" in rows["transformers.js"]["message"]
    assert all(r["message"] for r in rows.values() if r["status"] == "not run")  # says why it cannot run
    assert out["config"]["cpu"]["model"] and out["config"]["batch_sizes"] == [1, 4]
    assert mf.load(artifact) == before  # nothing recorded

    import contextlib
    import io

    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        print_consumer_bench(ConsumerBench(out["config"], out["rows"]))
    assert "× bare @4" in shown.getvalue() and "not run" in shown.getvalue()
