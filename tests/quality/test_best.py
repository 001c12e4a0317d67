"""Host capabilities as data, the CPU-aware catalogue (``best``, ``requires``), the bf16 variant and
``export --variants best`` end to end on the tiny model."""

from __future__ import annotations

import json

import pytest

from exporter import variants
from exporter.errors import UsageError
from exporter.hostcaps import INT8_UNITS, CpuFlag, Host, parse_flags, this_host
from exporter.quality import best
from tests.cli_runner import run_cli

HAS_BF16 = this_host().has_any((CpuFlag.AVX512_BF16, CpuFlag.AMX_BF16))
BF16_VARIANTS = ("openvino-bf16", "openvino-qint8-fidelity-bf16")
EXERCISED_VARIANTS = BF16_VARIANTS if HAS_BF16 else ()

X86_CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile
"""
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\n"


def test_parse_flags_keeps_the_known_flags_of_either_spelling():
    assert parse_flags(X86_CPUINFO) == {CpuFlag.AVX2, CpuFlag.AVX512F, CpuFlag.AVX512_VNNI, CpuFlag.AVX512_BF16}
    assert parse_flags(ARM_CPUINFO) == {CpuFlag.ASIMD}
    assert parse_flags("") == frozenset()


# where int8 dot-product units make OpenVINO's static int8 pay (weight-only int8, float activations, never: a size
# variant)
STATIC_INT8 = {"openvino-qint8", "openvino-qint8-fidelity"}
BEST_BY_HOST = [
    (
        Host.of("avx2", "avx512f", "avx512_vnni", "avx512_bf16"),
        {"onnx-qint8-avx512-vnni", *BF16_VARIANTS, *STATIC_INT8},
    ),
    (
        Host.of("avx2", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8"),
        {"onnx-qint8-avx512-vnni", *BF16_VARIANTS, *STATIC_INT8},
    ),
    (Host.of("avx2", "avx_vnni"), {"onnx-quint8-avx2", *STATIC_INT8}),
    (Host.of("avx2", "avx512f"), {"onnx-qint8-avx512"}),
    (Host.of("avx2"), {"onnx-quint8-avx2"}),
    (Host.of("asimd", arch="aarch64"), {"onnx-qint8-arm64"}),
]
ALWAYS_BEST = {"onnx", "openvino"}


@pytest.mark.parametrize(("host", "specific"), BEST_BY_HOST, ids=lambda x: x.describe() if isinstance(x, Host) else "")
def test_best_builds_only_the_candidates_that_fit_the_cpu(host, specific):
    assert {s.id for s in variants.select("best", host)} == ALWAYS_BEST | specific


def test_all_leaves_out_static_int8_and_what_the_host_cannot_run():
    avx2 = {s.id for s in variants.select("all", Host.of("avx2"))}
    bf16 = {s.id for s in variants.select("all", Host.of("avx512_bf16"))}
    assert "onnx-qint8-static" not in avx2 | bf16  # 0.73 cosine on the default: on request only
    assert not avx2 & set(BF16_VARIANTS) and set(BF16_VARIANTS) <= bf16
    assert {s.id for s in variants.select("onnx-qint8-static", Host.of("avx2"))} == {"onnx", "onnx-qint8-static"}


def test_naming_bf16_on_a_host_without_bf16_units_is_refused_naming_the_flags():
    with pytest.raises(UsageError) as err:
        variants.select("openvino-bf16", Host.of("avx2", "avx512f"))
    assert "avx512_bf16 or amx_bf16" in err.value.message and "avx2 avx512f" in err.value.message
    assert [s.id for s in variants.select("openvino-bf16", Host.of("amx_bf16"))] == ["openvino", "openvino-bf16"]


def test_bf16_keeps_the_f32_pin_of_the_fp32_variants():
    for spec in variants.CATALOGUE:
        if spec.backend is variants.Backend.OPENVINO:
            hint = spec.model_kwargs["ov_config"]["INFERENCE_PRECISION_HINT"]
            assert hint == ("bf16" if spec.id in BF16_VARIANTS else "f32"), spec.id


def test_list_variants_says_what_applies_here(capsys):
    res = run_cli(capsys, "list-variants", "--json")
    rows = {r["id"]: r for r in json.loads(res.out)}
    assert rows["onnx-qint8-static"]["in_all"] is False
    assert rows["openvino-bf16"]["requires_any_of"] == ["avx512_bf16", "amx_bf16"]
    assert (rows["openvino-bf16"]["not_applicable_here"] is None) == HAS_BF16
    assert {i for i, r in rows.items() if r["best_candidate_here"]} == {s.id for s in variants.select("best")}


def _entry(vid: str, status: str) -> dict:
    return {"id": vid, "status": status, "files": [{"path": f"{vid}.bin"}]}


def test_best_does_not_time_an_fp32_variant_whose_bf16_twin_passed_too():
    """The catalogue's bf16 twins are the same files run with the bf16 hint. Where both twins passed, only the bf16
    one is timed (the faster on every host that can build it); where the bf16 twin failed, the fp32 one is timed.
    All-int8 is timed even when it fails, for the share column."""
    assert best.bf16_twins() == {
        "openvino": "openvino-bf16",
        "openvino-qint8-fidelity": "openvino-qint8-fidelity-bf16",
    }
    statuses = {
        "onnx": "passed",
        "openvino": "passed",
        "openvino-bf16": "passed",
        "openvino-qint8": "failed",
        "openvino-qint8-fidelity": "passed",
        "openvino-qint8-fidelity-bf16": "failed",
    }
    manifest = {"variants": [_entry(v, s) for v, s in statuses.items()]}
    assert set(best.not_timed(manifest)) == {"openvino"} and "openvino-bf16" in best.not_timed(manifest)["openvino"]
    assert best.bench_ids(manifest) == ["onnx", "openvino-bf16", "openvino-qint8", "openvino-qint8-fidelity"]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units (avx512_bf16 / amx_bf16)")
def test_export_best_gates_benches_and_recommends_in_one_command(default_best_export):
    """On the session's ``--variants best`` export of the real default (no second best run on a tiny model):
    every candidate of this CPU built, the bf16 variants share their base's files, every passing one and
    all-int8 benched, and the JSON summary's recommendation is the manifest's."""
    res, out = default_best_export.result, default_best_export.out
    assert res.code == 0, res.err[-2000:]
    summary = json.loads(res.out)
    manifest = json.loads((out / "manifest.json").read_text())
    built = {v["id"]: v for v in manifest["variants"]}
    assert set(built) == {s.id for s in variants.select("best")}
    bf16, fp32 = built["openvino-bf16"], built["openvino"]
    assert bf16["status"] == "passed", bf16["error"]
    assert bf16["precision"] == "fp16" and bf16["build"]["precision"] == "bf16"
    assert bf16["load"]["model_kwargs"] == {"ov_config": {"INFERENCE_PRECISION_HINT": "bf16"}}
    assert bf16["build"]["runs_as"] == "bf16" and "BF16" in bf16["build"]["cpu_capabilities"]
    assert bf16["files"] == fp32["files"]  # the same IR, no copy
    fid, fid16 = built["openvino-qint8-fidelity"], built["openvino-qint8-fidelity-bf16"]
    assert fid16["files"] == fid["files"] and fid16["build"]["float_compute"] == "bf16"
    assert fid16["status"] in ("passed", "failed") and fid16["parity"]["cosine_min"] > 0.9
    assert fp32["load"]["model_kwargs"] == {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}
    benched, passed = set(manifest["bench"]["variants"]), {i for i, v in built.items() if v["status"] == "passed"}
    not_timed = manifest["bench"]["not_timed"]  # fp32 variants whose bf16 twin passed too
    assert set(not_timed) == {f for f, b in best.bf16_twins().items() if {f, b} <= passed}
    assert benched == (passed - set(not_timed)) | {"openvino-qint8"}
    rec = summary["recommended"]
    assert rec["variant"] in benched and built[rec["variant"]]["status"] == "passed"
    assert rec == manifest["recommended"]


@pytest.mark.slow
def test_best_on_the_embedded_default_recommends_a_passing_variant_and_explains_the_searched_int8(default_best_export):
    """The real default (``default_best_export``: ~3 min on 2 cores, shared with the other tests of the real
    default): exit 0, a recommendation that passes every probe stratum, the searched int8's float ops each
    with its measured reason, narrowed to outlier channels when the search reached its goal, and its held-out
    calibration texts above the gate; no speed assertion (speed lives in benchmarks/)."""
    res, out = default_best_export.result, default_best_export.out
    assert res.code == 0, res.err[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    built = {v["id"]: v for v in manifest["variants"]}
    assert "onnx-qint8-static" not in built
    recommended = built[manifest["recommended"]["variant"]]
    assert recommended["status"] == "passed" and recommended["parity"]["failures"] == []
    limit = recommended["parity"]["threshold"]["cosine_min"]
    assert all(st["cosine_min"] >= limit for st in recommended["parity"]["strata"].values())  # every stratum
    if not this_host().has_any(INT8_UNITS):  # OpenVINO's int8 is no candidate where it cannot outrun fp32
        assert not {"openvino-qint8", "openvino-qint8-fidelity"} & set(built)
        return
    fidelity = built["openvino-qint8-fidelity"]
    ops = fidelity["build"]["ops_in_float"] + fidelity["build"]["ops_split"]  # whole ops / outlier channels
    search = fidelity["build"]["search"]
    tried = [s["narrowed"] for s in search["steps"] if "narrowed" in s]
    split = [o["op"] for o in fidelity["build"]["ops_split"]]
    if search["stopped_by"] and search["stopped_by"].startswith("out of reach"):  # even every candidate in float
        # misses the goal (a stratum's nn@10 at its lower bound included): no screen, every candidate kept
        assert search["sensitivity"] == {} and len(ops) == search["candidates"] and not split and not tried
        assert all("out of reach" in o["why"] for o in ops)
    else:
        assert ops and all("measured sensitivity" in o["why"] for o in ops)
        if search["reached"]:  # MiniLM's kept FFN ops have outlier channels: each kept op tried split
            assert tried and set(split) <= set(tried)
        else:  # out of reach within the cap: whole ops up to it
            assert search["stopped_by"].startswith("max_float_fraction") and not split and not tried
    out_of_reach = (search["stopped_by"] or "").startswith("out of reach")  # settled by a scan: no held-out texts
    if not out_of_reach:  # the kept model's held-out calibration texts clear the int8 gate, not the recommended one's
        assert search["heldout_result"]["cosine_min"] >= fidelity["parity"]["threshold"]["cosine_min"]


@pytest.mark.parametrize("as_json", [False, True])
def test_best_with_nothing_to_bench_prints_the_summary_and_fails_the_gate_without_benching(
    tiny_model_dir, tmp_path, capsys, as_json
):
    """No candidate passed and no all-int8 built: no bench runs (an empty list is not "every variant"), the
    export summary is printed and the gate failure is raised (exit 3)."""
    from exporter import manifest as mf
    from exporter.cli.output import bench_best
    from exporter.errors import ExitCode, FidelityError
    from exporter.pipeline import ExportPlan, run_export
    from exporter.quality.parity import parse_threshold_overrides

    out = tmp_path / "strict"
    strict = parse_threshold_overrides(["cosine_min=1.0"])  # fp32 ONNX differs from torch in the last bits
    outcome = run_export(ExportPlan(model=str(tiny_model_dir), variants=["onnx"], out=out, thresholds=strict))
    assert outcome.failed == ["onnx"]
    with pytest.raises(FidelityError) as err:
        bench_best(outcome, as_json)
    assert err.value.exit_code == ExitCode.FIDELITY
    printed = capsys.readouterr().out
    assert (json.loads(printed)["variants"][0]["status"] == "failed") if as_json else ("FAILED" in printed)
    assert mf.load(out)["bench"] is None and mf.load(out)["recommended"] is None


@pytest.mark.skipif(not HAS_BF16, reason="the bf16 artifact is built for real here: this CPU has no bf16 units")
def test_bf16_variants_are_not_applicable_to_verify_or_bench_on_a_host_without_bf16(
    tiny_model_dir, tmp_path, monkeypatch
):
    """On a CPU without bf16 units OpenVINO silently runs a bf16 hint in f32: verify skips such a variant (one
    line naming the missing flags, never "passed") and bench leaves it out, instead of reporting f32 figures
    under the bf16 name."""
    from exporter.pipeline import ExportPlan, run_export
    from exporter.quality import bench, verify

    with monkeypatch.context() as mp:  # built as on a host with the units
        mp.setattr(variants, "this_host", lambda: Host.of("avx512_bf16"))
        out = run_export(ExportPlan(model=str(tiny_model_dir), variants=["openvino-bf16"], out=tmp_path / "a")).artifact
    no_bf16 = Host.of("avx2", "avx512f")
    report = verify.verify(out, host=no_bf16)
    cases = {c.name: c for c in report.variants}
    assert cases["openvino"].status == "passed"
    skipped = cases["openvino-bf16"]
    assert skipped.status == "skipped" and skipped.parity is None, skipped.message
    assert "needs avx512_bf16 or amx_bf16" in skipped.message and "\n" not in skipped.message
    verify.raise_for(report)  # not judged here is not a failure of the artifact
    result = bench.bench(out, threads=1, max_texts=4, rounds=1, batch_sizes=[2], host=no_bf16)
    assert set(result.variants) == {"openvino"}
    assert "avx512_bf16 or amx_bf16" in result.config["not_applicable"]["openvino-bf16"]
    with pytest.raises(UsageError, match="no built variant to benchmark on this CPU.*avx512_bf16"):
        bench.bench(out, ["openvino-bf16"], host=no_bf16)
