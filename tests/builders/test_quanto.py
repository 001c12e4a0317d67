"""quanto int8 builder on the tiny model: files, build record, and reloading in a fresh process."""

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
from exporter.builders.export_quanto import CONFIG_FILE, QMAP_FILE, WEIGHTS_FILE, load_quanto
from exporter.errors import ExportFailed
from exporter.variants import BY_ID, Backend, Precision

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world",
    "what is the cosine of a vector",
    "a cat sat on the mat in the rain",
    "why does the river run fast near the city",
    "x",
]
SPEC = BY_ID["quanto-int8"]
EXERCISED_VARIANTS = (SPEC.id,)  # built, reloaded and parity-checked below (test_catalogue)


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    stage = tmp_path_factory.mktemp("quanto") / "artifact"
    shutil.copytree(tiny_model_dir, stage, ignore=shutil.ignore_patterns("*.safetensors"))
    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=stage)
    before = ctx.reference_model().encode(TEXTS)
    result = SPEC.build_fn()(ctx, SPEC)
    after = ctx.reference_model().encode(TEXTS)
    return stage, result, before, after


def test_catalogue_entry():
    assert SPEC.id == "quanto-int8"
    assert SPEC.backend is Backend.TORCH and SPEC.precision is Precision.INT8
    assert SPEC.file_name == WEIGHTS_FILE
    assert callable(SPEC.build_fn())
    json.dumps(SPEC.options.to_dict())


def test_builder_writes_weights_qmap_and_config(built):
    stage, result, _, _ = built
    assert sorted(result.files) == sorted(stage / rel for rel in (WEIGHTS_FILE, QMAP_FILE, CONFIG_FILE))
    for path in result.files:
        assert path.is_file() and path.stat().st_size > 0
    qmap = json.loads((stage / QMAP_FILE).read_text())
    assert qmap and all(v == {"weights": "qint8", "activations": "none"} for v in qmap.values())
    assert result.build["quantized_layers"] == len(qmap)
    assert result.build["weights"] == "qint8" and result.build["precision"] == "int8"
    config = json.loads((stage / CONFIG_FILE).read_text())
    assert config["transformers_class"] == "BertModel"
    json.dumps(result.build)
    assert not [p for p in (stage / "quanto").iterdir() if p.is_dir()]  # no temp folder left


def test_build_does_not_quantise_the_shared_reference(built):
    _, _, before, after = built
    np.testing.assert_array_equal(before, after)


_LOAD_SCRIPT = """
import json, sys
from exporter.builders.export_quanto import load_quanto
from optimum.quanto import QModuleMixin
model = load_quanto(sys.argv[1])
assert any(isinstance(m, QModuleMixin) for m in model.modules())
print(json.dumps(model.encode(json.loads(sys.argv[2]), normalize_embeddings=True).tolist()))
"""


def test_reloads_in_a_fresh_process_and_matches_torch(built, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    stage, _, _, _ = built
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(stage), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]))
    reference = SentenceTransformer(str(tiny_model_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    cosine = (got * reference).sum(axis=1)
    assert cosine.min() >= 0.9, cosine.min()


def test_load_restores_sentence_transformers_loading(built, tiny_model_dir):
    from sentence_transformers.base.modules.transformer import Transformer

    stage, _, _, _ = built
    original = Transformer._load_model
    model = load_quanto(stage)
    assert model.encode(["hello"]).shape[-1] == 32
    assert Transformer._load_model is original


def test_load_without_the_variant_fails_clearly(tiny_model_dir, tmp_path):
    stage = tmp_path / "artifact"
    shutil.copytree(tiny_model_dir, stage, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ExportFailed, match="quanto/model.safetensors is missing"):
        load_quanto(stage)


def test_load_with_mismatched_weights_fails_and_restores(built, tmp_path):
    from safetensors.torch import load_file, save_file
    from sentence_transformers.base.modules.transformer import Transformer

    stage, _, _, _ = built
    broken = tmp_path / "artifact"
    shutil.copytree(stage, broken)
    state = load_file(broken / WEIGHTS_FILE)
    state.pop(sorted(k for k in state if k.endswith("LayerNorm.weight"))[0])
    save_file(state, broken / WEIGHTS_FILE)
    original = Transformer._load_model
    with pytest.raises(ExportFailed, match="1 missing"):
        load_quanto(broken)
    assert Transformer._load_model is original
