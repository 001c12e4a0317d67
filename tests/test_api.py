"""The public Python API: ``import exporter`` stays light, each function is typed and documented, and the
example in docs/api.md runs as written (on the tiny model instead of the default)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import exporter
from tests import hub_fixtures as hf

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
DEFAULT = "sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41"


def test_import_exporter_loads_no_model_library():
    code = "import sys, exporter; exporter.export; print([m for m in ('torch', 'onnx', 'numpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", exporter.__all__[1:])
def test_every_api_function_is_typed_and_documented(name):
    fn = getattr(exporter, name)
    sig = inspect.signature(fn)
    assert fn.__doc__ and len(fn.__doc__.split()) > 10
    assert sig.return_annotation is not inspect.Signature.empty
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), name


def test_the_documented_example_runs(tiny_model_dir, tmp_path, capsys):
    hf.seed_tiny(tiny_model_dir)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 2 and DEFAULT in blocks[0]
    scope = {"WORK": tmp_path}
    for block in blocks:
        exec(block.replace(DEFAULT, f"{hf.TINY_REPO}@{hf.TINY_SHA}"), scope)  # noqa: S102 - our own doc
    assert scope["report"].ok and scope["packaged"].sha256 and (tmp_path / "st").is_dir()
    assert scope["vectors"].shape[0] == 2
    assert "artifacts" not in capsys.readouterr().out  # it wrote where it was told


def test_a_failed_gate_raises_unless_check_is_off(tiny_model_dir, tmp_path):
    from exporter.errors import FidelityError

    hf.seed_tiny(tiny_model_dir)
    model = f"{hf.TINY_REPO}@{hf.TINY_SHA}"
    with pytest.raises(FidelityError):
        exporter.export(model, out=tmp_path / "a", variants=["openvino-fp16"], thresholds={"fp16": {"cosine_min": 1.0}})
    outcome = exporter.export(
        model, out=tmp_path / "b", variants=["openvino-fp16"], thresholds={"fp16": {"cosine_min": 1.0}}, check=False
    )
    assert outcome.manifest["variants"]
