"""Int8 ONNX variants of the base graph: dynamic presets per ISA, static QDQ, and a fidelity-searched int8.

Every variant reads the base ``onnx/model.onnx`` from the artifact (never re-exports from torch).

- **Dynamic presets** (``onnx-qint8-avx512-vnni``, ``onnx-qint8-avx512``, ``onnx-quint8-avx2``,
  ``onnx-qint8-arm64``): optimum-onnx's ``ORTQuantizer`` with ``AutoQuantizationConfig.<isa>(is_static=False)``,
  which is what sentence-transformers' ``export_dynamic_quantized_onnx_model`` and ``optimum-cli onnxruntime
  quantize --<isa>`` run, and the same file names (``onnx/model_<weights dtype>_<isa>.onnx``). Weights int8
  per channel (u8 for avx2, s8 elsewhere), activations u8 quantised at run time; MatMul, Attention and
  Gather (the embedding tables) are quantised.
- **Static QDQ** (``onnx-qint8-static``): ``onnxruntime.quantization.quantize_static`` in QDQ format, weights
  s8 per channel, activations u8 with ranges calibrated on the calibration texts (one text per sample,
  so padding never widens a range); MatMuls with a constant weight only (activation-by-activation
  MatMuls inside attention stay float). The calibration set's sha256 and size are recorded.
- **Fidelity int8** (``onnx-qint8-fidelity``): in ``exporter.builders.export_onnx_fidelity``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from exporter.builders import kit
from exporter.builders.context import BuildContext, BuildResult
from exporter.builders.export_onnx_optimize import base_graph, derived_from, op_counts
from exporter.builders.options import ISA_PRESETS, DynamicInt8Options, StaticQdqOptions
from exporter.environment import package_versions
from exporter.errors import ExportFailed
from exporter.variants import VariantSpec


def versions() -> dict[str, str | None]:
    return package_versions(("onnxruntime", "onnx", "optimum-onnx"))


@contextlib.contextmanager
def quiet():
    """onnxruntime.quantization logs a pre-processing hint per call and optimum prints warnings."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def calibration_record(texts: list[str], used: int) -> dict[str, Any]:
    from exporter.quality.probes import texts_sha256

    return {"sha256": texts_sha256(texts), "n": len(texts), "used": used}


# --------------------------------------------------------------------------------------- dynamic presets
def preset_config(preset: str):
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if preset not in ISA_PRESETS:
        raise ExportFailed(f"unknown int8 preset {preset!r}.", f"Use one of {', '.join(ISA_PRESETS)}.")
    return getattr(AutoQuantizationConfig, preset)(is_static=False)


def _config_record(cfg) -> dict[str, Any]:
    return {
        "scheme": "static" if cfg.is_static else "dynamic",
        "format": cfg.format.name,
        "mode": cfg.mode.name,
        "weights_dtype": cfg.weights_dtype.name,
        "activations_dtype": cfg.activations_dtype.name,
        "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range,
        "weights_symmetric": cfg.weights_symmetric,
        "activations_symmetric": cfg.activations_symmetric,
        "operators_to_quantize": [getattr(o, "value", o) for o in cfg.operators_to_quantize],
        "nodes_to_exclude": list(cfg.nodes_to_exclude),
        "calibration_method": None,
    }


def build_dynamic(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Variant builder: an ISA preset of dynamic int8 (``DynamicInt8Options.preset``), as sentence-transformers."""
    from optimum.onnxruntime import ORTQuantizer
    from transformers import AutoConfig

    preset = kit.options_of(spec, DynamicInt8Options).preset
    cfg = preset_config(preset)
    suffix = f"{cfg.weights_dtype.name.lower()}_{preset}"
    base = base_graph(ctx)
    root = kit.transformer_dir(ctx.stage_dir)
    dest = root / spec.file_name
    if dest.name != f"{base.stem}_{suffix}.onnx":
        raise ExportFailed(f"{spec.id}: file name {spec.file_name} does not match the preset's {suffix}.")
    record = _config_record(cfg)
    with kit.backend_errors(f"dynamic int8 ({preset})"), kit.scratch(dest.parent) as tmp, quiet():
        quantizer = ORTQuantizer(base, config=AutoConfig.from_pretrained(root))
        quantizer.quantize(cfg, tmp, file_suffix=suffix)  # writes tmp/model_<suffix>.onnx (+ ort_config.json)
        kit.place(tmp / dest.name, dest)
    build: dict[str, Any] = {
        "derived_from": derived_from(base),
        "tool": f"optimum.onnxruntime.ORTQuantizer + AutoQuantizationConfig.{preset}(is_static=False)",
        "versions": versions(),
        "optimization_level": None,
        "isa": preset,
        "quantization": record,
        "nodes_in_float": [],
        "calibration": None,
        "op_counts": op_counts(dest),
    }
    return BuildResult(files=[dest], build=build)


# ------------------------------------------------------------------------------------------- static QDQ
def _tokenizer(stage_dir: Path):
    from exporter import runtime
    from exporter.source import st_modules

    return runtime.load_tokenizer(st_modules.read(stage_dir))


class _TextReader:
    """CalibrationDataReader over texts, one text per sample (no padding in the ranges)."""

    def __init__(self, tokenizer, texts: list[str], input_names: list[str]):
        self._feeds = []
        for text in texts:
            enc = tokenizer.encode(text)
            row = {
                "input_ids": np.asarray([enc.ids], dtype=np.int64),
                "attention_mask": np.asarray([enc.attention_mask], dtype=np.int64),
                "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64),
            }
            self._feeds.append({name: row[name] for name in input_names})
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._feeds)


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits]


def build_static(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Variant builder: static int8 in QDQ format, activation ranges calibrated on the calibration texts."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    opts = kit.options_of(spec, StaticQdqOptions)
    texts = ctx.usable_calibration_texts()
    if not texts:
        raise ExportFailed("no calibration texts for static int8.", "Pass --calibration FILE.")
    used = texts[: opts.max_calibration_texts]
    base = base_graph(ctx)
    dest = kit.transformer_dir(ctx.stage_dir) / spec.file_name
    reader = _TextReader(_tokenizer(ctx.stage_dir), used, _graph_inputs(base))
    extra = {"MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False}
    start = time.perf_counter()
    with kit.backend_errors("static int8 (QDQ)"), kit.scratch(dest.parent) as tmp, quiet():
        quantize_static(
            str(base),
            str(tmp / dest.name),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(opts.op_types),
            per_channel=opts.per_channel,
            reduce_range=opts.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[opts.calibrate_method],
            extra_options=extra,
        )
        kit.place(tmp / dest.name, dest)
    build: dict[str, Any] = {
        "derived_from": derived_from(base),
        "tool": "onnxruntime.quantization.quantize_static",
        "versions": versions(),
        "optimization_level": None,
        "quantization": int8_record(opts, scheme="static", fmt="QDQ", calibration_method=opts.calibrate_method),
        "nodes_in_float": [
            {
                "nodes": "MatMuls whose both inputs are activations (attention scores, context)",
                "why": "MatMulConstBOnly",
            }
        ],
        "calibration": {
            **calibration_record(texts, len(used)),
            "method": opts.calibrate_method,
            "samples": "one text per sample, unpadded",
            "seconds": round(time.perf_counter() - start, 1),
        },
        "op_counts": op_counts(dest),
    }
    return BuildResult(files=[dest], build=build)


def int8_record(opts, *, scheme: str, fmt: str, calibration_method: str | None = None, mode: str | None = None) -> dict:
    """The manifest's ``quantization`` of an ONNX Runtime int8 graph (QInt8 weights, QUInt8 activations)."""
    return {
        "scheme": scheme,
        "format": fmt,
        **({"mode": mode} if mode else {}),
        "weights_dtype": "QInt8",
        "activations_dtype": "QUInt8",
        "per_channel": opts.per_channel,
        "reduce_range": opts.reduce_range,
        "weights_symmetric": True,
        "activations_symmetric": False,
        "operators_to_quantize": list(opts.op_types),
        "matmul_const_b_only": True,
        "calibration_method": calibration_method,
    }
