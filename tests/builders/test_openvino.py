"""OpenVINO builders on the tiny model: files, build records, and loading through the user's path.

Each variant is loaded in a fresh process the way a user loads it
(``SentenceTransformer(dir, backend="openvino", model_kwargs={"file_name": ...})``) and compared with
the torch model on a few texts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter.builders.context import BuildContext
from exporter.builders.export_openvino import BASE_FILE, read_base
from exporter.builders.export_openvino_int8 import calibration_samples, query_tails
from exporter.builders.options import NncfStaticOptions
from exporter.errors import ExportFailed
from exporter.quality.tokenizer_probes import COUNTS as TOKENIZER_STRATA
from exporter.variants import CATALOGUE, Backend, Precision

# The bf16 variants write no file of their own (their base's IR with a bf16 hint): tests/quality/test_best.py.
OV_MODULES = (
    "exporter.builders.export_openvino:",
    "exporter.builders.export_openvino_int8:",
    "exporter.builders.export_openvino_fidelity:",
)
OPENVINO_VARIANTS = tuple(s for s in CATALOGUE if s.builder.startswith(OV_MODULES) and not s.builder.endswith("_bf16"))
EXERCISED_VARIANTS = tuple(s.id for s in OPENVINO_VARIANTS)  # each built and loaded below (test_catalogue)

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world",
    "what is the cosine of a vector",
    "a cat sat on the mat in the rain",
    "export the model to onnx and read the graph",
    "why does the river run fast near the city",
    "x",
]
CALIBRATION = [
    "the train from the city is slow",
    "read a book when it rains",
    "query and passage embed a sentence",
    "one small model has a large vocab",
    "where is the brown dog",
    "open the data file and write code",
    "who was at the river",
    "a token is not a number",
]
MIN_COSINE = {Precision.FP32: 0.9999, Precision.FP16: 0.999, Precision.INT8: 0.9}
SPECS = {spec.id: spec for spec in OPENVINO_VARIANTS}


def make_stage(model_dir: Path, dest: Path) -> Path:
    """An artifact stage as the pipeline prepares it: the model's files without the torch weights."""
    shutil.copytree(model_dir, dest, ignore=shutil.ignore_patterns("*.safetensors"))
    return dest


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    """Build all four OpenVINO variants once into one stage dir."""
    stage = make_stage(tiny_model_dir, tmp_path_factory.mktemp("ov") / "artifact")
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=stage, calibration_texts=lambda: list(CALIBRATION))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        results = {spec.id: spec.build_fn()(ctx, spec) for spec in OPENVINO_VARIANTS}
    return stage, results


def test_catalogue_entries_follow_sentence_transformers_naming():
    assert list(SPECS) == [
        "openvino",
        "openvino-fp16",
        "openvino-int8-weights",
        "openvino-qint8",
        "openvino-qint8-fidelity",
    ]
    for spec in OPENVINO_VARIANTS:
        assert spec.backend is Backend.OPENVINO
        path = Path(spec.file_name)
        assert path.parent.as_posix() == "openvino" and path.suffix == ".xml"
        assert path.name.startswith("openvino")  # sentence-transformers globs openvino*.xml
        assert callable(spec.build_fn())
        assert spec.id == "openvino" or spec.derives_from == "openvino"
        assert spec.options is None or json.dumps(spec.options.to_dict())  # typed options, plain values


def test_each_builder_writes_its_xml_and_bin(built):
    stage, results = built
    for variant_id, result in results.items():
        spec = SPECS[variant_id]
        xml = stage / spec.file_name
        assert sorted(result.files) == sorted([xml, xml.with_suffix(".bin")])
        for path in result.files:
            assert path.is_file() and path.stat().st_size > 0
        assert result.build["precision"] == spec.precision.value
        assert result.build["inputs"] == ["attention_mask", "input_ids", "token_type_ids"]
        assert result.build["outputs"] == ["last_hidden_state"]
        json.dumps(result.build)
    # no temp folders left behind
    assert sorted(p.name for p in (stage / "openvino").iterdir() if p.is_dir()) == []


def test_build_records(built):
    _, results = built
    assert results["openvino"].build["export_source"] == "torch"
    for derived in ("openvino-fp16", "openvino-int8-weights", "openvino-qint8"):
        assert results[derived].build["export_source"] == BASE_FILE
    q = results["openvino-qint8"].build
    assert q["model_type"] == "transformer" and q["preset"] == "mixed"
    opts = SPECS["openvino-qint8"].options
    assert q["activation_range"] == opts.activation_range and q["overflow_fix"] == opts.overflow_fix
    assert q["smooth_quant_alpha_matmul"] == opts.smooth_quant_alpha
    assert q["fast_bias_correction"] == opts.fast_bias_correction
    tails = query_tails(CALIBRATION) if opts.query_tails else []
    assert q["query_tails"] == opts.query_tails
    assert q["calibration"]["subset_size"] == min(len(CALIBRATION) + len(tails), opts.subset_size)
    assert q["calibration"]["query_tail_samples"] == q["calibration"]["subset_size"] - len(CALIBRATION)
    assert results["openvino-int8-weights"].build["calibration"] is None


def test_query_tails_add_short_samples_within_the_subset(built, tiny_model_dir):
    """Traffic-like calibration: each longer text's last 1-3 words become a sample of their own."""
    stage, _ = built
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=stage, calibration_texts=lambda: list(CALIBRATION))
    base = read_base(ctx)
    tails = query_tails(CALIBRATION)
    assert tails[:3] == ["slow", "it rains", "embed a sentence"] and len(tails) == len(CALIBRATION)
    assert query_tails(["a b c", "ok!"]) == []  # 3 words or fewer: already short
    off = calibration_samples(ctx, base, NncfStaticOptions(query_tails=False))
    on = calibration_samples(ctx, base, NncfStaticOptions(query_tails=True))
    assert len(off) == len(CALIBRATION) and len(on) == len(CALIBRATION) + len(tails)
    assert len(calibration_samples(ctx, base, NncfStaticOptions(query_tails=True, subset_size=10))) == 10
    assert on[len(CALIBRATION)]["input_ids"].shape[1] < on[0]["input_ids"].shape[1]  # a tail, tokenised alone


def test_every_activation_range_is_an_nncf_range_estimator():
    """The options name NNCF's sets; a renamed member fails here, not in a user's export."""
    import dataclasses

    from exporter.builders.export_openvino_int8 import advanced_parameters
    from exporter.builders.options import ACTIVATION_RANGES, NncfStaticOptions

    for name in ACTIVATION_RANGES:
        params = advanced_parameters(dataclasses.replace(NncfStaticOptions(), activation_range=name))
        assert params.activations_range_estimator_params is not None, name
    assert advanced_parameters(NncfStaticOptions()).overflow_fix.value == NncfStaticOptions().overflow_fix


def test_fidelity_int8_records_its_search(built):
    _, results = built
    f = results["openvino-qint8-fidelity"].build
    assert f["export_source"] == BASE_FILE
    search = f["search"]
    assert search["steps"][0]["added"] is None and search["steps"][0]["kept_float"] == 0
    assert search["max_screen"] > 0 and search["goal"]["measured_on"].startswith("calibration")
    kept = [o["op"] for o in f["ops_in_float"] + f["ops_split"]]  # whole ops and split ones: what the search kept
    assert sorted(kept) == sorted(search["kept_float"]) and set(kept) <= set(search["candidate_names"])
    ranked = list(search["sensitivity"])[: len(kept)]
    assert search["candidates"] == len(search["candidate_names"]) and sorted(ranked) == sorted(kept)
    assert all(o["why"].startswith("measured sensitivity") for o in f["ops_in_float"] + f["ops_split"])
    assert search["seconds"] < 120  # bounded, and quick on the tiny model
    for side in ("ranking_result", "heldout_result"):
        assert set(search[side]) - {"nn10_worst_stratum"} == {"cosine_min", "cosine_mean", "neighbour_agreement_at_10"}
        worst = search[side].get("nn10_worst_stratum")  # where a stratum has enough texts: the gate's per-stratum nn@10
        assert worst is None or (worst["stratum"] in {"calibration", *TOKENIZER_STRATA} and 0 <= worst["value"] <= 1)
    split = search["split"]
    assert (
        split["ranking_texts"] + split["heldout_texts"] == f["calibration"]["search_texts"] and split["heldout_texts"]
    )
    gap = search["ranking_result"]["cosine_min"] - search["heldout_result"]["cosine_min"]
    assert search["margin"]["cosine_min"] == pytest.approx(
        max(search["goal"]["floor_margin"]["cosine_min"], gap), abs=2e-6
    )


def test_floating_matmuls_in_the_quantised_model_restores_fp32_ops(built, tiny_model_dir):
    """Graph surgery instead of re-quantising: the floated MatMuls read un-quantised activations and the fp32
    weights, and the embeddings move towards torch's."""
    import openvino as ov

    from exporter.builders.export_openvino_fidelity import OvScorer, float_matmuls, residual_writers

    stage, _ = built
    core = ov.Core()
    base = core.read_model(stage / BASE_FILE)
    quantized = core.read_model(stage / SPECS["openvino-qint8"].file_name)
    writers = residual_writers(base)
    floated = float_matmuls(quantized, base, writers)
    ops = {op.get_friendly_name(): op for op in floated.get_ordered_ops()}
    for name in writers:
        assert ops[name].input_value(0).get_node().get_type_name() != "FakeQuantize"
        assert ops[name].input_value(1).get_node().get_type_name() == "Constant"
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=stage)
    texts = CALIBRATION + TEXTS
    reference = ctx.reference_model().encode(texts, convert_to_numpy=True)
    scorer = OvScorer(ctx, texts, reference)
    deficit = {k: float((1 - scorer.cosines(m)).mean()) for k, m in (("int8", quantized), ("floated", floated))}
    assert deficit["floated"] < deficit["int8"], deficit
    assert float((1 - scorer.cosines(float_matmuls(quantized, base, []))).mean()) == pytest.approx(deficit["int8"])


def test_outlier_split_computes_the_outlier_channels_exactly_and_the_rest_in_int8(built, tiny_model_dir):
    """The split MatMul: its float branch is X[..., S]·W[:, S]ᵀ of the fp32 IR's weight (checked against
    numpy), the int8 weight has the columns S zeroed, and OpenVINO still runs the int8 part in int8."""
    import openvino as ov

    from exporter.builders import outlier_split
    from exporter.builders.export_openvino_fidelity import residual_writers
    from exporter.builders.export_openvino_int8 import calibration_samples

    stage, _ = built
    core = ov.Core()
    base = core.read_model(stage / BASE_FILE)
    quantized = core.read_model(stage / SPECS["openvino-qint8"].file_name)
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=stage, calibration_texts=lambda: list(CALIBRATION))
    samples = calibration_samples(ctx, base, NncfStaticOptions(query_tails=False, subset_size=len(CALIBRATION)))
    name = residual_writers(base)[-1]
    channels = np.array([1, 5], dtype=np.int64)
    split = outlier_split.split_matmuls(quantized, base, {name: {"channels": channels}})
    ops = {op.get_friendly_name(): op for op in split.get_ordered_ops()}
    gather, branch = ops[f"{name}/outlier_split/gather"], ops[f"{name}/outlier_split/matmul"]
    probe = split.clone()
    probe_ops = {op.get_friendly_name(): op for op in probe.get_ordered_ops()}
    probe.add_outputs(
        [probe_ops[gather.get_friendly_name()].input_value(0), probe_ops[branch.get_friendly_name()].output(0)]
    )
    source = gather.input_value(0).get_node()  # the activation before SmoothQuant's scale and the FakeQuantize
    assert source.get_type_name() != "FakeQuantize" and "nncf_smooth_quant" not in source.get_friendly_name()
    compiled = core.compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(samples[-1])
    x, got = (np.asarray(result[port]) for port in compiled.outputs[-2:])
    weight = {op.get_friendly_name(): op for op in base.get_ordered_ops()}[name].input_value(1).get_node().get_data()
    np.testing.assert_allclose(got, x[..., channels] @ weight[:, channels].T, rtol=1e-5, atol=1e-6)
    int8 = ops[name].input_value(1).get_node().input_value(0).get_node().input_value(0).get_node().get_data()
    assert int8.dtype == np.int8 and not int8[:, channels].any() and int8.any()
    runtime = core.compile_model(split, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).get_runtime_model()
    precision = {
        op.get_friendly_name(): op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ordered_ops()
    }
    assert precision[name] in ("u8", "i8"), precision[name]


def test_the_screening_model_computes_what_surgery_builds_for_each_switch(built, tiny_model_dir):
    """The one screening model (compiled once for the whole ranking): switch all 0 gives the int8 model, a
    one-hot switch gives keep_in_float of that op, whether it is split into outlier channels or floated whole, an
    attention op's int8 inputs or an int8 embedding table."""
    import openvino as ov

    from exporter.builders import ov_int8_sites
    from exporter.builders.export_openvino_fidelity import (
        OvScorer,
        Switched,
        _KeepOutOfInt8,
        residual_writers,
        weight_matmuls,
    )

    stage, _ = built
    core = ov.Core()
    base = core.read_model(stage / BASE_FILE)
    quantized = core.read_model(stage / SPECS["openvino-qint8"].file_name)
    sites = ov_int8_sites.site_kinds(quantized)
    names = list(weight_matmuls(base)) + list(sites)
    whole_op, split_op = residual_writers(base)[0], residual_writers(base)[-1]
    attention = next(n for n, kind in sites.items() if kind == "attention_scores")
    table = next(n for n, kind in sites.items() if kind == "embeddings")
    splits = {split_op: {"channels": np.arange(0, 16, 2, dtype=np.int64)}}
    hooks = _KeepOutOfInt8(quantized, base, splits, names)
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=stage)
    texts = CALIBRATION + TEXTS
    scorer = OvScorer(ctx, texts, ctx.reference_model().encode(texts, convert_to_numpy=True))
    screened = hooks.screen_model(whole_op)
    off = scorer.encode(Switched(screened.model, np.zeros(len(names), dtype=np.float32)), np.arange(len(texts)))
    np.testing.assert_allclose(off, scorer.encode(quantized, np.arange(len(texts))), atol=2e-5)
    for name in (whole_op, split_op, attention, table):
        alone = hooks.keep_in_float([name])
        assert alone is not quantized
        want = scorer.encode(alone, np.arange(len(texts)))
        got = scorer.encode(hooks.screen_model(name), np.arange(len(texts)))
        np.testing.assert_allclose(got, want, atol=2e-5)
        # the switch moves the output by far more than it differs from the surgery model (the tiny model's
        # attention scores barely feel int8: 2.5e-6, float rounding's size, so that one is only matched)
        if name != attention:
            assert np.abs(want - off).max() > 10 * np.abs(got - want).max(), name


def _fidelity_build(built, tiny_model_dir, tmp_path, **search):
    """openvino-qint8-fidelity built again into a copy of the stage, every channel above its median an outlier
    (random weights), with the search options ``search``."""
    from dataclasses import replace

    stage, _ = built
    copy = tmp_path / "artifact"
    shutil.copytree(stage, copy)
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=copy, calibration_texts=lambda: list(CALIBRATION))
    spec = SPECS["openvino-qint8-fidelity"]
    searched = replace(spec.options.search, **search)
    opts = replace(spec.options, outlier_ratio=1.0, max_outlier_channels=2, search=searched)
    return ctx, replace(spec, options=opts)


def test_fidelity_int8_records_each_split_op_with_its_channels(built, tiny_model_dir, tmp_path):
    """Every candidate with a channel above a low outlier ratio is split, not floated, and the manifest's
    records say which channels and why (the search hooks' records of an unreachable goal's search: every
    candidate kept, unranked)."""
    from exporter.builders import fidelity_search, outlier_split
    from exporter.builders.export_openvino_fidelity import OvScorer, _KeepOutOfInt8, residual_writers
    from exporter.builders.export_openvino_int8 import quantize_static

    ctx, spec = _fidelity_build(built, tiny_model_dir, tmp_path)
    opts = spec.options
    search = type(opts.search)(target_cosine_min=1.0, margin=0.001, max_float_fraction=0.25, max_screen=3)
    base = read_base(ctx)
    samples = calibration_samples(ctx, base, opts.nncf)
    quantized = quantize_static(ctx, base, samples, opts.nncf)
    splits = outlier_split.plan(quantized, base, samples, residual_writers(base), 1.0, 2)
    hooks = _KeepOutOfInt8(quantized, base, splits)
    texts = fidelity_search.search_texts(ctx).texts
    scorer = OvScorer(ctx, texts, fidelity_search.calibration_reference(ctx, texts))
    _, result = fidelity_search.search(hooks, scorer, search)
    whole, split = hooks.records(result)
    assert [o["op"] for o in split] == result.kept_float != []
    assert whole == []  # every random-weight op has a channel above its median score
    for entry in split:
        assert 1 <= len(entry["channels"]) <= 2 and len(entry["channel_scores"]) == len(entry["channels"])
        assert all(score >= 1.0 for score in entry["channel_scores"]) and "outlier_ratio" in entry["channels_why"]
        assert entry["why"].startswith("kept in float with every other candidate") and "out of reach" in entry["why"]
    assert result.stopped_by.startswith(fidelity_search.OUT_OF_REACH) and result.kept_float == hooks.candidates


def test_an_unreachable_goal_keeps_whole_ops_up_to_the_cap_and_narrows_nothing(built, tiny_model_dir, tmp_path):
    """The build ranks whole ops (the unit that also fixes an error in NNCF's activation range); a goal out of
    reach (here before the screen: every candidate in float does not count) narrows nothing to the split unit:
    the manifest lists whole ops only (narrowing a reached goal: test_int8_search, and the real default in
    test_best when it reaches its goal)."""
    ctx, spec = _fidelity_build(
        built, tiny_model_dir, tmp_path, target_cosine_min=1.0, margin=0.001, max_float_fraction=0.25, max_screen=3
    )
    build = spec.build_fn()(ctx, spec).build
    assert build["outlier_ratio"] == 1.0 and build["max_outlier_channels"] == 2
    assert not build["search"]["reached"] and not any("narrowed" in s for s in build["search"]["steps"])
    assert build["ops_split"] == [] and [o["op"] for o in build["ops_in_float"]] == build["search"]["kept_float"] != []


def test_site_kinds_named_in_the_options_are_searched_and_recorded(built, tiny_model_dir, tmp_path):
    """Options that name the attention scores and embedding tables as candidates: the search ranks them beside
    the weight MatMuls, and every kept one is recorded with its kind (a goal only every site in float reaches: the
    fp32 IR's cosine, so the screen runs and the search keeps up to its cap)."""
    from dataclasses import replace

    from exporter.builders.export_openvino_fidelity import CANDIDATE_KINDS

    ctx, spec = _fidelity_build(
        built, tiny_model_dir, tmp_path, target_cosine_min=0.99999, margin=0.0, max_float_fraction=0.25
    )
    spec = replace(spec, options=replace(spec.options, candidate_kinds=CANDIDATE_KINDS, outlier_ratio=0.0))
    build = spec.build_fn()(ctx, spec).build
    assert build["candidates_by_kind"] == {
        "qkv": 6,
        "attention_output": 2,
        "ffn_in": 2,
        "ffn_out": 2,
        "attention_scores": 2,
        "embeddings": 3,  # word, position, token type
    }
    search = build["search"]
    assert search["candidates"] == 17 and len(search["sensitivity"]) == 17  # every kind screened
    kept = {o["op"]: o["kind"] for o in build["ops_in_float"]}
    assert list(kept) == search["kept_float"] and set(kept.values()) <= set(CANDIDATE_KINDS)


def test_float_sites_are_kept_in_float_in_every_model_and_are_not_candidates(built, tiny_model_dir, tmp_path):
    """``float_sites`` names site kinds kept in float before the search: the tables are no candidates, the manifest
    lists them, and the saved IR reads fp32 tables (no int8 table left) while its MatMuls stay int8 as searched."""
    from dataclasses import replace

    import openvino as ov

    from exporter.builders import ov_int8_sites

    ctx, spec = _fidelity_build(built, tiny_model_dir, tmp_path, max_float_fraction=0.25)
    spec = replace(spec, options=replace(spec.options, float_sites=("embeddings",)))
    result = spec.build_fn()(ctx, spec)
    build = result.build
    assert [(o["kind"], o["why"].startswith("OvFidelityOptions.float_sites")) for o in build["sites_in_float"]] == [
        ("embeddings", True)
    ] * 3  # word, position, token type
    assert "embeddings" not in build["candidates_by_kind"] and build["search"]["candidates"] == 12
    saved = ov.Core().read_model(ctx.stage_dir / spec.file_name)
    assert "embeddings" not in ov_int8_sites.site_kinds(saved).values()
    assert "attention_scores" in ov_int8_sites.site_kinds(saved).values()  # what float_sites did not name stays


def test_weight_only_int8_pins_its_run_time_activations_in_the_ir(built):
    """OpenVINO's CPU plugin quantises a weight-compressed MatMul's activations at run time by default (a group size
    its release picks); the IR carries the group size the variant was gated with, so any consumer compiling it
    without an explicit setting runs the same, and the manifest says what the activations are."""
    import openvino as ov

    from exporter.builders.export_openvino_int8 import DYNAMIC_QUANTIZATION

    stage, results = built
    spec = SPECS["openvino-int8-weights"]
    group = spec.options.dynamic_quantization_group_size
    core = ov.Core()
    model = core.read_model(stage / spec.file_name)
    assert model.get_rt_info(["runtime_options", DYNAMIC_QUANTIZATION]).astype(str) == str(group)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert int(compiled.get_property(DYNAMIC_QUANTIZATION)) == group
    build = results["openvino-int8-weights"].build
    assert build["runtime_options"] == {DYNAMIC_QUANTIZATION: str(group)}
    assert build["activations"].startswith("float" if group == 0 else "int8 at run time")


def test_weights_are_smaller_than_fp32(built):
    stage, _ = built
    size = {i: (stage / s.file_name).with_suffix(".bin").stat().st_size for i, s in SPECS.items()}
    assert size["openvino-fp16"] < 0.6 * size["openvino"]
    assert size["openvino-int8-weights"] < 0.6 * size["openvino"]


_LOAD_SCRIPT = """
import json, sys
from sentence_transformers import SentenceTransformer
stage, names, texts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {}
for name in names:
    model = SentenceTransformer(stage, backend="openvino", device="cpu", local_files_only=True,
                                model_kwargs={"file_name": name})
    assert type(model[0].auto_model).__name__ == "OVModelForFeatureExtraction"
    assert model[0].auto_model.model_save_dir.name == "openvino"
    out[name] = model.encode(texts, normalize_embeddings=True).tolist()
print(json.dumps(out))
"""


def test_each_variant_loads_in_a_fresh_process_and_matches_torch(built, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    stage, _ = built
    names = [spec.file_name for spec in OPENVINO_VARIANTS]
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(stage), json.dumps(names), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    embeddings = json.loads(proc.stdout.strip().splitlines()[-1])
    reference = SentenceTransformer(str(tiny_model_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    for spec in OPENVINO_VARIANTS:
        got = np.asarray(embeddings[spec.file_name])
        assert got.shape == reference.shape
        cosine = (got * reference).sum(axis=1)
        assert cosine.min() >= MIN_COSINE[spec.precision], (spec.id, cosine.min())


def test_derived_variant_without_its_base_fails_clearly(tiny_model_dir, tmp_path):
    stage = make_stage(tiny_model_dir, tmp_path / "artifact")
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=stage)
    spec = SPECS["openvino-fp16"]
    with pytest.raises(ExportFailed, match="openvino_model.xml is missing"):
        spec.build_fn()(ctx, spec)


def test_static_int8_without_calibration_texts_fails_clearly(built, tiny_model_dir, tmp_path):
    stage, _ = built
    copy = tmp_path / "artifact"
    shutil.copytree(stage, copy)
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=copy, calibration_texts=lambda: [])
    spec = SPECS["openvino-qint8"]
    with pytest.raises(ExportFailed, match="no calibration texts"):
        spec.build_fn()(ctx, spec)


def test_rebuild_into_a_hard_linked_clone_leaves_the_original_intact(built, tiny_model_dir, tmp_path):
    """The pipeline clones the artifact by hard links; a rebuild must replace files, not write through."""
    stage, _ = built
    clone = tmp_path / "clone"
    shutil.copytree(stage, clone, copy_function=os.link)
    original_bin = (stage / SPECS["openvino-fp16"].file_name).with_suffix(".bin")
    before = original_bin.read_bytes()
    assert (
        os.stat(clone / SPECS["openvino-fp16"].file_name).st_ino
        == os.stat(stage / SPECS["openvino-fp16"].file_name).st_ino
    )
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=clone)
    spec = SPECS["openvino-fp16"]
    result = spec.build_fn()(ctx, spec)
    rebuilt_bin = (clone / spec.file_name).with_suffix(".bin")
    assert rebuilt_bin in result.files
    assert os.stat(rebuilt_bin).st_ino != os.stat(original_bin).st_ino
    assert original_bin.read_bytes() == before


def test_loading_an_ir_through_the_runner_prints_no_upstream_guess(built, caplog):
    """optimum-intel logs "Could not infer whether the model was already converted ..." with an exception
    for every local IR it loads; the runner drops that line so an export's output shows only its own."""
    import logging

    from exporter.runners.variant import load_variant

    stage, _ = built
    spec = next(s for s in OPENVINO_VARIANTS if s.id == "openvino")
    entry = {"id": spec.id, "load": spec.load_kwargs()}
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING):
        mp.setenv("HF_HUB_OFFLINE", "1")
        model = load_variant(stage, entry, "sentence-transformer")
    assert model.encode(TEXTS).shape[0] == len(TEXTS)
    assert not [r for r in caplog.records if "Could not infer whether" in r.getMessage()]


def test_every_int8_site_in_float_gives_the_fp32_ir(built):
    """The candidates cover every place NNCF puts int8: with all of them in float the quantised model computes what
    the fp32 IR computes; with only the weight MatMuls in float it does not (attention scores, embedding tables)."""
    import openvino as ov

    from exporter.builders import ov_int8_sites
    from exporter.builders.export_openvino_fidelity import _KeepOutOfInt8, weight_matmuls

    stage, _ = built
    core = ov.Core()
    base = core.read_model(stage / BASE_FILE)
    quantized = core.read_model(stage / SPECS["openvino-qint8"].file_name)
    sites = ov_int8_sites.site_kinds(quantized)
    assert sorted(set(sites.values())) == sorted(ov_int8_sites.SITE_KINDS)
    matmuls = list(weight_matmuls(base))
    hooks = _KeepOutOfInt8(quantized, base, {}, matmuls + list(sites))
    ids = np.array([[101, 7592, 2088, 2003, 1037, 3231, 102]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

    def hidden(model) -> np.ndarray:
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.asarray(compiled({p.get_any_name(): feed[p.get_any_name()] for p in model.inputs})[0])

    want = hidden(base)
    np.testing.assert_allclose(hidden(hooks.keep_in_float(matmuls + list(sites))), want, atol=1e-5)
    assert np.abs(hidden(hooks.keep_in_float(matmuls)) - want).max() > 1e-3


def test_every_weight_matmul_kind_is_a_search_candidate(built):
    """Issue 24: the search looks at every MatMul kind, each named by its role in the layer; the residual writers
    are the attention and FFN outputs."""
    import openvino as ov

    from exporter.builders.export_openvino_fidelity import (
        CANDIDATE_KINDS,
        MATMUL_KINDS,
        residual_writers,
        weight_matmuls,
    )

    stage, results = built
    base = ov.Core().read_model(stage / BASE_FILE)
    kinds = weight_matmuls(base)
    counts = {k: list(kinds.values()).count(k) for k in MATMUL_KINDS}
    assert counts == {"qkv": 6, "attention_output": 2, "ffn_in": 2, "ffn_out": 2}  # 2 layers
    assert {n for n, k in kinds.items() if k in ("attention_output", "ffn_out")} == set(residual_writers(base))
    build = results["openvino-qint8-fidelity"].build
    assert build["candidates_by_kind"] == counts and build["search"]["candidates"] == 12
    assert all(o["kind"] in CANDIDATE_KINDS for o in build["ops_in_float"] + build["ops_split"])
