"""Less work for the same gate: the reference in token-length batches, one graph pass for both serving paths,
and the calibration reference cached on disk beside the probe set's."""

from __future__ import annotations

import numpy as np

from exporter import kinds, runtime
from exporter.quality import parity_replay, parity_run, probes, refcache
from exporter.runners.reference import load_reference
from tests.builders.test_onnx import TEXTS, exported_tiny


def _onnx_st(art):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(art), device="cpu", backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"})


def test_length_batches_hold_at_most_the_batch_and_the_token_budget():
    lengths = [5, 40, 40, 3, 12, 40, 7, 1]
    batches = parity_run.length_batches(lengths, batch_size=3, token_budget=80)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 80)
    assert batches[0] == [1, 2]  # a third 40-token text would pad to 120 > 80
    assert parity_run.length_batches([300], 32, 64) == [[0]]  # one text over the budget still gets a batch


def test_length_sorted_reference_equals_sentence_transformers_batches(tiny_model_dir):
    spec = kinds.get(None)
    model = load_reference(None, tiny_model_dir)
    texts = probes.load_text_set(None, "probe").texts
    plain = spec.outputs(model, texts, kinds.PARITY_BATCH)
    sorted_ = parity_run.outputs_length_sorted(spec.outputs, model, texts, kinds.PARITY_BATCH)
    assert sorted_.shape == plain.shape and sorted_.dtype == plain.dtype
    assert float(np.abs(sorted_ - plain).max()) <= 1e-6
    lengths = parity_run.token_lengths(model, texts)
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    ours = parity_run.length_batches(lengths, kinds.PARITY_BATCH)
    assert padded(ours) < padded(parity_run.st_batches(texts, kinds.PARITY_BATCH))


def test_runtime_path_replays_the_st_paths_graph_runs_exactly(tmp_path_factory):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    model = _onnx_st(art)
    tape = parity_replay.record(model)
    assert tape is not None
    texts = TEXTS * 9  # 72 texts: three batches of 32
    model.encode(texts, batch_size=32)
    tape.close()
    assert len(tape.runs) == 3 and "run" not in parity_replay.onnx_session(model).__dict__
    replaying = parity_replay.replaying(runtime.load(art), tape)
    got = parity_run.encode_in_st_batches(replaying, texts)
    want = parity_run.encode_in_st_batches(runtime.load(art), texts)
    np.testing.assert_array_equal(got, want)
    assert (replaying.session.ran, replaying.session.replayed) == (1, 2)  # the first (smallest) batch runs for real


def test_a_tape_that_disagrees_with_the_runtime_session_is_dropped(tmp_path_factory):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    model = _onnx_st(art)
    tape = parity_replay.record(model)
    texts = TEXTS * 9
    model.encode(texts, batch_size=32)
    tape.close()
    for outputs in tape.runs.values():
        outputs["sentence_embedding"] += 0.5  # a tape that is not what this graph computes
    replaying = parity_replay.replaying(runtime.load(art), tape)
    got = parity_run.encode_in_st_batches(replaying, texts)
    np.testing.assert_array_equal(got, parity_run.encode_in_st_batches(runtime.load(art), texts))
    assert (replaying.session.ran, replaying.session.replayed) == (3, 0)


def test_other_feeds_run_for_real(tmp_path_factory):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    model = _onnx_st(art)
    tape = parity_replay.record(model)
    model.encode(TEXTS, batch_size=32)
    tape.close()
    replaying = parity_replay.replaying(runtime.load(art), tape)
    got = replaying.encode(["not in the tape", "nor this"])
    np.testing.assert_array_equal(got, runtime.load(art).encode(["not in the tape", "nor this"]))
    assert (replaying.session.ran, replaying.session.replayed) == (1, 0)


def test_calibration_reference_is_cached_under_the_reference_key(tiny_model_dir):
    from exporter.builders.context import BuildContext
    from exporter.builders.fidelity_search import calibration_reference

    texts = probes.load_text_set(None, "calibration").texts[:40]
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=tiny_model_dir, reference_key="k1")
    first = calibration_reference(ctx, texts)
    assert len(list((refcache.cache_dir() / "reference").glob("*.npy"))) == 1
    fresh = BuildContext(source_dir=tiny_model_dir, stage_dir=tiny_model_dir, reference_key="k1")
    fresh.reference_model = lambda: (_ for _ in ()).throw(AssertionError("the cache should have answered"))
    np.testing.assert_array_equal(calibration_reference(fresh, texts), first)
    plain = load_reference(None, tiny_model_dir).encode(texts, batch_size=32, prompt="")
    assert float(np.abs(first - plain).max()) <= 1e-6


def test_fp32_candidates_run_in_token_batches_and_the_runtime_path_follows(tmp_path_factory):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    model, spec = _onnx_st(art), kinds.get(None)
    texts = TEXTS * 9
    tape = parity_replay.record(model)
    run, lengths = parity_run.candidate_run("fp32", spec.outputs, model, 32)
    st_out = run(texts)
    tape.close()
    assert lengths is not None and float(np.abs(st_out - spec.outputs(model, texts, 32)).max()) <= 1e-6
    replaying = parity_replay.replaying(runtime.load(art), tape)
    got = parity_run.encode_in_st_batches(replaying, texts, 32, lengths)
    assert replaying.session.ran == 1 and replaying.session.replayed == len(tape.runs) - 1
    np.testing.assert_array_equal(got, parity_run.encode_in_st_batches(runtime.load(art), texts, 32, lengths))
    assert float(np.abs(got - st_out).max()) <= 1e-6
    int8_run, int8_lengths = parity_run.candidate_run("int8", spec.outputs, model, 32)
    assert int8_lengths is None  # dynamic int8 depends on its batch mates: ST's own batches
    np.testing.assert_array_equal(int8_run(texts), spec.outputs(model, texts, 32))


def test_the_runtime_path_runs_on_the_st_paths_session_and_gets_what_its_own_session_gets(tmp_path_factory):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    model, spec = _onnx_st(art), kinds.get(None)
    texts = TEXTS * 9
    tape = parity_replay.record(model)
    run, lengths = parity_run.candidate_run("fp32", spec.outputs, model, 32)
    st_out = run(texts)
    tape.close()
    load = {"backend": "onnx", "file_name": "onnx/model.onnx"}
    from exporter.quality import parity

    threshold = parity.defaults(None, "fp32")
    entry = parity_run.check_serving_paths(
        {"passed": True}, st_out, st_out, art, load, None, texts, threshold, tape=tape, lengths=lengths
    )
    runtime_path = entry["serving_paths"]["runtime"]
    assert runtime_path["graph_runs"] == {"ran": 0, "replayed": len(tape.runs), "session": "shared"}
    own = parity_run.encode_in_st_batches(runtime.load(art), texts, 32, lengths)  # its own session, run for real
    assert entry["serving_paths"]["agreement"]["max_abs_diff"] <= 1e-6 and runtime_path["passed"]
    assert float(np.abs(own - st_out).max()) <= 1e-6
    # with pinned threads (bench, verify) the runtime opens its own session and checks one taped batch for real
    pinned = parity_run.check_serving_paths(
        {"passed": True}, st_out, st_out, art, load, None, texts, threshold, threads=1, tape=tape, lengths=lengths
    )
    assert pinned["serving_paths"]["runtime"]["graph_runs"]["session"] == "own"
