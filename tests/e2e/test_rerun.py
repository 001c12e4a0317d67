"""What a re-export must not take from an earlier one: the cached reference of another Matryoshka width,
a kept variant judged by another threshold or without a consumer now asked for; and the torch-free runtime
serves an OpenVINO IR at the variant's truncate_dim, as sentence-transformers does."""

from __future__ import annotations

import json

import numpy as np

from tests.cli_runner import invoke

DIM = 8  # the tiny model embeds in 32 dimensions


def _manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text("utf-8"))


def test_truncated_export_does_not_reuse_the_full_width_reference(tiny_model_dir, tmp_path):
    full = invoke("export", str(tiny_model_dir), "--variants", "onnx", "--out", str(tmp_path / "full"))
    assert full.code == 0, full.err
    cut_out = str(tmp_path / "cut")
    cut = invoke(
        "export", str(tiny_model_dir), "--variants", "openvino", "--truncate-dim", str(DIM), "--out", cut_out,
        "--consumers", "runtime",
    )  # fmt: skip
    assert cut.code == 0, cut.err  # failed with a cached full-width reference or runtime row
    manifest = _manifest(tmp_path / "cut")
    assert manifest["model"]["truncate_dim"] == DIM
    assert [v["status"] for v in manifest["variants"]] == ["passed"]
    assert [r["status"] for r in manifest["variants"][0]["parity"]["consumers"]] == ["passed"]  # runtime at DIM

    # The torch-free runtime serves the IR at the manifest's width, the same vectors as sentence-transformers.
    from sentence_transformers import SentenceTransformer

    from exporter import runtime

    texts = ["a short query", "the quick brown fox jumps over the lazy dog", "東京 city"]
    load = manifest["variants"][0]["load"]
    enc = runtime.load(tmp_path / "cut", load["file_name"], "openvino")
    got = enc.encode(texts)
    model = SentenceTransformer(
        str(tmp_path / "cut"), backend="openvino", model_kwargs={"file_name": load["file_name"]}, truncate_dim=DIM
    )
    want = model.encode(texts)
    assert got.shape == want.shape == (3, DIM)
    assert np.abs(got - want).max() < 1e-4
    assert runtime.load(tmp_path / "cut", load["file_name"], "openvino", truncate_dim=4).encode(texts).shape == (3, 4)


def test_rerun_with_a_stricter_threshold_or_more_consumers_rejudges(tiny_model_dir, tmp_path):
    out = str(tmp_path / "art")
    first = invoke("export", str(tiny_model_dir), "--variants", "onnx", "--out", out)
    assert first.code == 0, first.err
    again = invoke("export", str(tiny_model_dir), "--variants", "onnx", "--out", out)
    assert again.code == 0 and "Already complete" in again.out  # same plan: nothing rebuilt

    consumers = invoke("export", str(tiny_model_dir), "--variants", "onnx", "--out", out, "--consumers", "runtime")
    assert consumers.code == 0, consumers.err
    assert "Already complete" not in consumers.out
    (variant,) = _manifest(tmp_path / "art")["variants"]
    assert [r["consumer"] for r in variant["parity"]["consumers"]] == ["runtime"]

    stricter = invoke(
        "export", str(tiny_model_dir), "--variants", "onnx", "--out", out, "--consumers", "runtime",
        "--threshold", "fp32:cosine_min=1.0",
    )  # fmt: skip
    assert stricter.code == 3, stricter.out + stricter.err  # judged again: the fidelity gate fails
    (variant,) = _manifest(tmp_path / "art")["variants"]
    assert variant["parity"]["threshold"]["cosine_min"] == 1.0 and variant["status"] == "failed"


def test_narrow_gives_the_specs_and_shape_facts_run_export_records(tiny_model_dir, tmp_path):
    """The dry run and run_export share support.match / support.apply (plan_check.decide): the match's facts
    are what the manifest records as model.shape."""
    from exporter import support, variants

    facts = support.match(tiny_model_dir, "sentence-transformer")
    specs = support.apply(facts, variants.select_for_kind("onnx", "sentence-transformer"), "onnx")
    assert [s.id for s in specs] == ["onnx"] and facts.rule.id == "bert-any-pooling"
    res = invoke("export", str(tiny_model_dir), "--variants", "onnx", "--out", str(tmp_path / "a"))
    assert res.code == 0, res.err
    assert _manifest(tmp_path / "a")["model"]["shape"] == facts.to_dict()
