"""exporter.runners owns every model load: export, verify and bench load the reference (and each variant)
through the same functions, so what the gate compared at export is what verify and bench compare again."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import exporter
from exporter.errors import UsageError

ROOT = Path(exporter.__file__).parent
MODEL_CLASSES = {"SentenceTransformer", "CrossEncoder", "SparseEncoder"}
# Methods that hand out a class or loader to construct a model with (KindSpec / VariantSpec).
LOADER_GETTERS = {"model_cls", "loader_fn"}
# The quanto format's own loader (VariantSpec.loader of quanto-int8): it builds the SentenceTransformer inside
# its requantizing patch; runners.variant is its only caller (LOADER_GETTERS are called there alone).
FORMAT_LOADERS = {"builders/export_quanto.py"}
TEXTS = ["a short text", "a somewhat longer text about exporting models to ONNX", "x"]


def _loads(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line name`` of every model construction (or loader lookup) in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in MODEL_CLASSES or name in LOADER_GETTERS:
            found.append(f"{path.relative_to(root).as_posix()}:{node.lineno} {name}")
    return found


def test_only_runners_construct_models():
    """No module but exporter/runners/ constructs a model class or looks one up to construct with."""
    outside = [
        hit
        for path in sorted(ROOT.rglob("*.py"))
        if path.relative_to(ROOT).parts[0] != "runners"
        for hit in _loads(path)
        if not (hit.split(":")[0] in FORMAT_LOADERS and hit.endswith(tuple(MODEL_CLASSES)))
    ]
    assert outside == []
    inside = [hit for path in sorted((ROOT / "runners").rglob("*.py")) for hit in _loads(path)]
    assert {h.split()[-1] for h in inside} == LOADER_GETTERS  # the scan sees the loads it guards


def test_the_scan_finds_a_construction(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from sentence_transformers import CrossEncoder\nm = CrossEncoder('x')\nk.model_cls()('y')\n")
    assert _loads(bad, tmp_path) == ["bad.py:2 CrossEncoder", "bad.py:3 model_cls"]


def test_export_and_verify_load_the_same_reference(tiny_model_dir, tmp_path):
    """The export's reference (BuildContext, shared with the builders) and verify's / bench's reference runner
    come from one loader with the same settings: same max length, same Matryoshka width, same outputs."""
    from exporter.builders.context import BuildContext, BuildSettings
    from exporter.runners.reference import encoder
    from exporter.runners.runner import REFERENCE, reference_runner

    runner = reference_runner(tiny_model_dir, None, 1, max_seq_length=8, truncate_dim=4)  # as verify's worker
    ctx = BuildContext(tiny_model_dir, tmp_path, settings=BuildSettings(max_seq_length=8, truncate_dim=4))
    reference = ctx.reference_model()  # as the export
    assert (reference.max_seq_length, reference.truncate_dim) == (8, 4)
    exported = encoder(reference, None)(TEXTS, 32)
    verified = runner.encode(TEXTS, 32)
    assert exported.shape == (len(TEXTS), 4)
    np.testing.assert_allclose(verified, exported, rtol=0, atol=1e-6)
    assert runner.name == REFERENCE and runner.runtime() == {"engine": "torch", "threads": 1}


def test_a_backend_no_loader_knows_is_refused(tmp_path):
    from exporter.runners.variant import load_variant

    variant = {"id": "onnx", "load": {"backend": "tensorrt", "file_name": "x.plan"}}
    with pytest.raises(UsageError, match="variant onnx has backend 'tensorrt', which this tool cannot load"):
        load_variant(tmp_path, variant, None)
