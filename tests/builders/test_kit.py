"""The builders' shared kit (exporter.builders.kit) and typed build options (exporter.builders.options)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from exporter import variants
from exporter.builders import kit, options
from exporter.errors import ExportFailed, UsageError
from exporter.quality import parity
from exporter.source import st_modules


def _modules(root: Path, entries: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "modules.json").write_text(json.dumps(entries))
    return root


@pytest.mark.parametrize(
    ("entries", "folder"),
    [
        (None, "."),  # no modules.json: a plain transformers folder (cross-encoder)
        ([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}], "."),
        (
            [{"idx": 0, "name": "0", "path": "0_Transformer/", "type": "sentence_transformers.models.Transformer"}],
            "0_Transformer",
        ),
        (
            [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.models.MLMTransformer"}],
            ".",
        ),
        ([{"idx": 0, "name": "0", "path": "0_Static", "type": "sentence_transformers.models.StaticEmbedding"}], "."),
    ],
)
def test_transformer_folder(tmp_path, entries, folder):
    root = _modules(tmp_path / "m", entries) if entries else tmp_path
    assert kit.transformer_folder(root) == folder
    assert kit.transformer_dir(root) == (root / folder if folder != "." else root)
    if entries:  # one rule: the facts the runtime and preflight read name the same folder
        assert st_modules.read(root).transformer_dir == kit.transformer_dir(root)


def test_transformer_dir_required_names_the_modules(tmp_path):
    root = _modules(tmp_path, [{"idx": 0, "path": "", "type": "sentence_transformers.models.StaticEmbedding"}])
    with pytest.raises(ExportFailed, match=r"modules \(StaticEmbedding\) have no Transformer"):
        kit.transformer_dir(root, require=True)


def test_row_cosines_follow_the_parity_rule():
    """One rule everywhere: zero against non-zero is 0, two zero rows are 1, as quality.parity.compare."""
    ref = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    cand = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0], [-3.0, -4.0], [1.0, 0.0]])
    cos = kit.row_cosines(ref, cand)
    assert cos.tolist() == pytest.approx([1.0, 1.0, 0.0, -1.0, 2**-0.5])
    for i in range(len(ref)):  # parity's cosine_min on each single row agrees
        assert parity.compare(ref[i : i + 1], cand[i : i + 1]).cosine_min == pytest.approx(cos[i])


def test_place_moves_an_ir_with_its_bin_and_leaves_no_scratch(tmp_path):
    folder = tmp_path / "openvino"
    with kit.scratch(folder) as tmp:
        (tmp / "m.xml").write_text("<xml/>")
        (tmp / "m.bin").write_bytes(b"\0")
        placed = kit.place(tmp / "m.xml", folder / "openvino_model.xml")
    assert placed == [folder / "openvino_model.xml", folder / "openvino_model.bin"]
    assert sorted(p.name for p in folder.iterdir()) == ["openvino_model.bin", "openvino_model.xml"]


def test_place_gives_new_inodes_and_refuses_a_missing_companion(tmp_path):
    folder = tmp_path / "openvino"
    folder.mkdir()
    (folder / "a.xml").write_text("old")
    os.link(folder / "a.xml", tmp_path / "clone.xml")  # a hard-linked previous artifact
    with kit.scratch(folder) as tmp:
        (tmp / "a.xml").write_text("new")
        (tmp / "a.bin").write_text("new")
        kit.place(tmp / "a.xml", folder / "a.xml")
    assert (tmp_path / "clone.xml").read_text() == "old"  # never written through
    with pytest.raises(ExportFailed, match="did not write b.bin"), kit.scratch(folder) as tmp:
        (tmp / "b.xml").write_text("x")
        kit.place(tmp / "b.xml", folder / "b.xml")
    assert not (folder / "b.xml").exists() and sorted(p.name for p in folder.iterdir()) == ["a.bin", "a.xml"]


def test_backend_errors_become_one_typed_line():
    with pytest.raises(ExportFailed) as info, kit.backend_errors("NNCF static quantisation", "Try again."):
        raise RuntimeError("first line\nsecond line")
    assert info.value.message == "NNCF static quantisation failed: RuntimeError: first line"
    assert info.value.hint == "Try again." and isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(UsageError, match="typed"), kit.backend_errors("x"):
        raise UsageError("typed errors pass through")


def test_catalogue_options_are_typed_and_frozen():
    typed = tuple(t for t in options.BuildOptions.__args__)
    for spec in variants.CATALOGUE:
        assert spec.options is None or isinstance(spec.options, typed), spec.id
        if spec.options is not None:
            with pytest.raises(dataclasses.FrozenInstanceError):
                spec.options.__setattr__(dataclasses.fields(spec.options)[0].name, None)
            json.dumps(spec.options.to_dict())
    with pytest.raises(ValueError, match="unknown optimisation level"):
        options.OptimizeOptions("O9")
    with pytest.raises(ValueError, match="unknown int8 preset"):
        options.DynamicInt8Options("sse2")
    with pytest.raises(ValueError, match="unknown activation range"):
        options.NncfStaticOptions(activation_range="p99")


def test_a_builder_refuses_options_of_another_builder():
    spec = dataclasses.replace(variants.BY_ID["onnx-o1"], options=options.QuantoOptions())
    with pytest.raises(ExportFailed, match="gives QuantoOptions, its builder reads OptimizeOptions"):
        kit.options_of(spec, options.OptimizeOptions)
    assert kit.options_of(dataclasses.replace(spec, options=None), options.SearchOptions) == options.SearchOptions()
