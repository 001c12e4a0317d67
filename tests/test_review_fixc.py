"""Regressions for review findings: signatures in re-exported artifacts, key loading, unsafe runtime paths,
the ModelPack precision of bf16 variants."""

from __future__ import annotations

import json

import pytest

from exporter import modelpack


def _narrowed(variant: dict) -> dict:
    return {
        "variants": [variant],
        "source": {"repo": "org/model", "revision": "a" * 40},
        "created_at": "2026-01-01T00:00:00Z",
        "tool_version": "0.0.0",
        "model": {"kind": "sentence-transformer"},
    }


@pytest.mark.parametrize(
    ("variant_precision", "build", "expected"),
    [("fp16", {"precision": "bf16"}, "bf16"), ("fp16", {"precision": "fp16"}, "fp16"), ("fp32", {}, "fp32")],
)
def test_modelpack_precision_is_the_recorded_build_precision(variant_precision, build, expected):
    variant = {"id": "openvino-x", "backend": "openvino", "precision": variant_precision, "build": build}
    config = json.loads(modelpack.config_bytes(_narrowed(variant), [{"sha256": "0" * 64}]))["config"]
    assert config["precision"] == expected
