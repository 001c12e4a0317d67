"""OpenVINO IR variants: fp32 from torch, then fp16, int8 weight-only and int8 static derived from it.

The fp32 IR is exported once from the torch transformer (optimum-intel, the same path
sentence-transformers' ``backend="openvino"`` uses), never from an ORT-optimised ONNX graph. The other
three read that IR from the stage dir and transform it:

- ``openvino-fp16``: weights stored as fp16 (``compress_to_fp16``); the CPU plugin still computes in
  fp32 (or bf16 where the CPU has it), so this halves the files, not the time.
- ``openvino-int8-weights``: NNCF weight compression (int8 weights, per output channel, float
  activations); no calibration data.
- ``openvino-qint8``: NNCF post-training static quantisation (int8 weights and activations),
  ``model_type=transformer``, calibrated on the calibration texts tokenised one text per sample by the
  model's own tokenizer (so no padding tokens skew the activation ranges).
- ``openvino-qint8-fidelity`` (``exporter.builders.export_openvino_fidelity``): the same static int8 with the
  fewest ranked residual-writing MatMuls put back in float. all-MiniLM-L6-v2, on the AMD EPYC here: 4 of 36
  MatMuls in float (FFN output of layers 0-2, attention output of layer 4); probe min cosine 0.9934, nn@10
  0.957; 0.91x ``openvino-qint8``'s throughput at batch 32, 0.97x when served with the bf16 hint
  (``openvino-qint8-fidelity-bf16``).
- ``openvino-bf16`` / ``openvino-qint8-fidelity-bf16``: no files of their own, their base's IR with
  ``INFERENCE_PRECISION_HINT=bf16`` in the load options (:func:`build_bf16`).

Like sentence-transformers' own OpenVINO export, the IR holds the transformer only (inputs
``input_ids``/``attention_mask``/``token_type_ids``, output ``last_hidden_state``; for cross-encoders and
sparse encoders the transformer with its head, output ``logits``, exported with the optimum-intel class
of the kind, ``exporter.kinds``); pooling and normalisation run in the sentence-transformers modules.
Every file name starts with ``openvino`` and sits under ``openvino/``, so ``SentenceTransformer(artifact,
backend="openvino", model_kwargs={"file_name": "openvino/<name>.xml"})`` (or ``CrossEncoder`` /
``SparseEncoder``) loads it; the ``.bin`` sits beside the ``.xml``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from exporter.builders.context import BuildContext, BuildResult
from exporter.environment import package_versions
from exporter.errors import ExportFailed
from exporter.variants import VariantSpec

OV_DIR = "openvino"
BASE_FILE = f"{OV_DIR}/openvino_model.xml"
FP16_FILE = f"{OV_DIR}/openvino_model_fp16.xml"
INT8_WEIGHTS_FILE = f"{OV_DIR}/openvino_model_int8_weights.xml"
QINT8_FILE = f"{OV_DIR}/openvino_model_qint8_quantized.xml"

# Static int8 defaults, measured on all-MiniLM-L6-v2 (see the module's tests and the benchmark).
QINT8_DEFAULTS: dict[str, Any] = {
    "preset": "mixed",  # symmetric weights, asymmetric activations (NNCF's default for transformers)
    "model_type": "transformer",
    "subset_size": 300,  # calibration samples (one text each); fewer texts: all of them
    "fast_bias_correction": True,
    # SmoothQuant alpha for MatMuls (-1 disables). Measured on all-MiniLM-L6-v2: 0.85 ~ 0.9 > 0.95 (NNCF's
    # default) > 0.8 >> 0.5 in minimum cosine; see benchmarks/openvino_quanto_fidelity.py.
    "smooth_quant_alpha": 0.85,
    "ignored_scope": None,  # {"names": [...], "patterns": [...], "types": [...]}: ops kept in float
}
INT8_WEIGHTS_DEFAULTS: dict[str, Any] = {"mode": "int8_asym"}


def transformer_path(source_dir: Path) -> Path:
    """The folder of the model's Transformer module (``modules.json``; the root for most models)."""
    modules_file = source_dir / "modules.json"
    if not modules_file.is_file():
        return source_dir
    from exporter.source.st_modules import ModuleKind, kind_of

    entries = json.loads(modules_file.read_text(encoding="utf-8"))
    for entry in entries:
        if kind_of(entry.get("type", "")) is ModuleKind.TRANSFORMER:  # also SPLADE's MLMTransformer
            return source_dir / entry.get("path", "")
    names = ", ".join(str(e.get("type", "?")).rsplit(".", 1)[-1] for e in entries)
    raise ExportFailed(
        f"the model's modules ({names}) have no Transformer module to export.",
        "Only transformer-based sentence-transformers models export this way.",
    )


@contextmanager
def _written_into(stage_dir: Path, xml_rel: str) -> Iterator[Path]:
    """Yield a temp ``.xml`` path; on success move it and its ``.bin`` to ``xml_rel`` in the stage.

    Files are renamed into place (new inodes), so an artifact cloned by hard links is never written
    through: the previous artifact's copy of the same file stays intact.
    """
    dest = stage_dir / xml_rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ov-", dir=dest.parent))
    try:
        tmp_xml = tmp / dest.name
        yield tmp_xml
        for src in (tmp_xml, tmp_xml.with_suffix(".bin")):
            if not src.is_file():
                raise ExportFailed(f"OpenVINO did not write {src.name}.")
            os.replace(src, dest.parent / src.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _files(stage_dir: Path, xml_rel: str) -> list[Path]:
    xml = stage_dir / xml_rel
    return [xml, xml.with_suffix(".bin")]


def _read_base(ctx: BuildContext):
    import openvino as ov

    xml = ctx.stage_dir / BASE_FILE
    if not xml.is_file():
        raise ExportFailed(f"{BASE_FILE} is missing from the artifact.", "Build the `openvino` variant first.")
    return ov.Core().read_model(xml, xml.with_suffix(".bin"))


def _save(model, stage_dir: Path, xml_rel: str, *, compress_to_fp16: bool = False) -> list[Path]:
    import openvino as ov

    with _written_into(stage_dir, xml_rel) as tmp_xml:
        ov.save_model(model, tmp_xml, compress_to_fp16=compress_to_fp16)
    return _files(stage_dir, xml_rel)


def _io(model) -> dict[str, list[str]]:
    return {
        "inputs": sorted(p.get_any_name() for p in model.inputs),
        "outputs": sorted(p.get_any_name() for p in model.outputs),
    }


# ---------------------------------------------------------------------------------------------------
# fp32: from torch


def _model_type(model_dir: Path) -> str | None:
    try:
        return json.loads((model_dir / "config.json").read_text("utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def build_fp32_via_traced_graph(ctx: BuildContext, spec: VariantSpec, reason: str) -> BuildResult:
    """fp32 IR converted (``openvino.convert_model``) from the transformer's traced token graph
    (``export_onnx.export_token_graph``), for architectures optimum-intel exports wrongly (``reason``)."""
    import openvino as ov

    from exporter.builders.export_onnx import export_token_graph

    start = time.perf_counter()
    dest = ctx.stage_dir / spec.file_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".ov-onnx-", dir=dest.parent) as tmp:
            graph = export_token_graph(ctx.reference_model(), Path(tmp) / "model.onnx")
            model = ov.convert_model(graph)
            files = _save(model, ctx.stage_dir, spec.file_name, compress_to_fp16=False)
    except ExportFailed:
        raise
    except Exception as exc:
        raise ExportFailed(
            f"OpenVINO conversion of the traced graph failed: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    return BuildResult(
        files=files,
        build={
            "export_source": "torch (traced by optimum-onnx, converted by openvino.convert_model)",
            "exporter": "exporter.builders.export_onnx.export_token_graph + openvino.convert_model",
            "why_not_optimum_intel": reason,
            "transformer_dir": transformer_path(ctx.source_dir).relative_to(ctx.source_dir).as_posix() or ".",
            "task": "feature-extraction",
            "precision": "fp32",
            "weights_dtype": "f32",
            "compress_to_fp16": False,
            "graph": "transformer only; pooling, Dense and normalisation run in sentence-transformers",
            **_io(model),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "optimum-onnx", "torch", "transformers")),
        },
    )


def build_fp32(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Export the torch transformer to an fp32 OpenVINO IR at ``openvino/openvino_model.xml``."""
    from exporter import kinds
    from exporter.builders import export_onnx_static
    from exporter.source import shapes

    if export_onnx_static.is_static(ctx.source_dir):  # StaticEmbedding: IR of its own ONNX graph
        return export_onnx_static.build_static_openvino(ctx, spec)
    kspec = kinds.get(ctx.kind)
    model_dir = transformer_path(ctx.source_dir)
    reason = shapes.OPENVINO_VIA_TRACED_GRAPH.get(_model_type(model_dir) or "")
    if reason and kspec.kind is kinds.ModelKind.SENTENCE_TRANSFORMER:
        return build_fp32_via_traced_graph(ctx, spec, reason)
    start = time.perf_counter()
    try:
        ov_wrapper = kspec.openvino_cls().from_pretrained(
            str(model_dir.resolve()),
            export=True,
            compile=False,
            load_in_8bit=False,
            local_files_only=True,
            trust_remote_code=bool(ctx.options.get("trust_remote_code")),
        )
        model = ov_wrapper.model
        files = _save(model, ctx.stage_dir, spec.file_name, compress_to_fp16=False)
    except ExportFailed:
        raise
    except Exception as exc:  # optimum / openvino raise anything
        raise ExportFailed(f"OpenVINO export from torch failed: {type(exc).__name__}: {_one_line(exc)}") from exc
    return BuildResult(
        files=files,
        build={
            "export_source": "torch",
            "exporter": f"optimum-intel {kspec.openvino_class.rpartition(':')[2]}.from_pretrained(export=True)",
            "transformer_dir": model_dir.relative_to(ctx.source_dir).as_posix() or ".",
            "task": kspec.onnx_task,
            "precision": "fp32",
            "weights_dtype": "f32",
            "compress_to_fp16": False,
            "graph": "transformer only (with its head for cross-/sparse encoders); pooling, normalisation, "
            "activation and SpladePooling run in sentence-transformers",
            **_io(model),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "optimum-intel", "torch", "transformers")),
        },
    )


# ---------------------------------------------------------------------------------------------------
# fp16: weights stored in half precision


def build_fp16(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Re-save the fp32 IR with fp16 weights (``compress_to_fp16=True``)."""
    start = time.perf_counter()
    model = _read_base(ctx)
    try:
        files = _save(model, ctx.stage_dir, spec.file_name, compress_to_fp16=True)
    except ExportFailed:
        raise
    except Exception as exc:
        raise ExportFailed(f"OpenVINO fp16 compression failed: {type(exc).__name__}: {_one_line(exc)}") from exc
    return BuildResult(
        files=files,
        build={
            "export_source": BASE_FILE,
            "precision": "fp16",
            "weights_dtype": "f16 (decompressed to f32 at load)",
            "compress_to_fp16": True,
            "note": "CPU inference still runs in fp32 (bf16 only on CPUs that have it): smaller files, same speed.",
            **_io(model),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino",)),
        },
    )


# ---------------------------------------------------------------------------------------------------
# bf16: the fp32 IR compiled with a bf16 precision hint


def build_bf16(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """No new files: the IR of the variant it derives from (the fp32 one, or the fidelity int8 one), served
    with ``INFERENCE_PRECISION_HINT=bf16`` (the spec's load options): what is not int8 computes in bf16.

    The catalogue refuses these variants on hosts without bf16 units; here the CPU plugin must also say it
    computes in bf16 (``OPTIMIZATION_CAPABILITIES`` has ``BF16`` and a compiled model reads the hint back
    as bf16), else the variant would silently be its base under another name.
    """
    import openvino as ov

    from exporter.variants import BY_ID

    start = time.perf_counter()
    base_file = BY_ID[spec.derives_from].file_name
    xml = ctx.stage_dir / base_file
    if not xml.is_file():
        raise ExportFailed(
            f"{base_file} is missing from the artifact.", f"Build the `{spec.derives_from}` variant first."
        )
    core = ov.Core()
    model = core.read_model(xml, xml.with_suffix(".bin"))
    hint = spec.model_kwargs["ov_config"]["INFERENCE_PRECISION_HINT"]
    caps = [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    runs_as = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # ov.Type: "bf16" / "f32"
    if "BF16" not in caps or runs_as != hint:
        raise ExportFailed(
            f"the OpenVINO CPU plugin does not compute in bf16 here (capabilities {caps}, hint read back {runs_as}).",
            f"Build {spec.id} on a CPU with AVX512_BF16 or AMX.",
        )
    return BuildResult(
        files=_files(ctx.stage_dir, base_file),
        build={
            "export_source": base_file,
            "shares_files_with": spec.derives_from,
            "precision": spec.precision.value if spec.precision.value == "int8" else "bf16",
            "float_compute": "bf16",
            "inference_precision_hint": hint,
            "runs_as": runs_as,
            "cpu_capabilities": caps,
            "note": "float matrix products and activations in bf16 on AVX512_BF16 / AMX units (int8 ops stay "
            "int8); the load options carry the hint, so every host that serves it computes alike",
            **_io(model),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino",)),
        },
    )


# ---------------------------------------------------------------------------------------------------
# int8 weight-only: NNCF weight compression


def build_int8_weights(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """NNCF weight compression of the fp32 IR: int8 weights, per output channel, float activations."""
    opts = {**INT8_WEIGHTS_DEFAULTS, **spec.options}
    start = time.perf_counter()
    model = _read_base(ctx)
    try:
        import nncf

        mode = nncf.CompressWeightsMode(opts["mode"])
        compressed = nncf.compress_weights(model, mode=mode)
        files = _save(compressed, ctx.stage_dir, spec.file_name)
    except ExportFailed:
        raise
    except Exception as exc:
        raise ExportFailed(f"NNCF weight compression failed: {type(exc).__name__}: {_one_line(exc)}") from exc
    return BuildResult(
        files=files,
        build={
            "export_source": BASE_FILE,
            "precision": "int8",
            "method": "nncf.compress_weights (weight-only)",
            "mode": mode.value,
            "per_channel": True,
            "group_size": None,
            "activations": "float (fp32)",
            "calibration": None,
            **_io(compressed),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "nncf")),
        },
    )


# ---------------------------------------------------------------------------------------------------
# int8 static: NNCF post-training quantisation


def calibration_samples(ctx: BuildContext, input_names: list[str], limit: int) -> list[dict]:
    """Calibration texts tokenised by the model's own tokenizer, one text per sample (no padding)."""

    texts = [t for t in ctx.calibration_texts() if t and t.strip()]
    if not texts:
        raise ExportFailed("no calibration texts for OpenVINO static int8.", "Pass --calibration FILE.")
    texts = texts[:limit]
    model = ctx.reference_model()
    samples = []
    for text in texts:
        features = model.tokenize([text])
        sample = {}
        for name in input_names:
            if name in features:
                sample[name] = np.asarray(features[name].cpu().numpy(), dtype=np.int64)
            elif name == "token_type_ids":
                sample[name] = np.zeros_like(np.asarray(features["input_ids"].cpu().numpy(), dtype=np.int64))
            else:
                raise ExportFailed(f"the tokenizer does not produce the IR input {name!r}.")
        samples.append(sample)
    return samples


def _ignored_scope(spec_scope: dict | None):
    import nncf

    if not spec_scope:
        return None
    return nncf.IgnoredScope(
        names=list(spec_scope.get("names", [])),
        patterns=list(spec_scope.get("patterns", [])),
        types=list(spec_scope.get("types", [])),
        validate=False,
    )


def quantize_static(ctx: BuildContext, model, samples: list[dict], opts: dict[str, Any]):
    """``nncf.quantize`` of the fp32 IR, once per export for the same options and calibration samples:
    ``openvino-qint8`` and the fidelity search (which starts from all-int8) share it."""
    import hashlib

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    keys = ("preset", "model_type", "fast_bias_correction", "smooth_quant_alpha", "ignored_scope")
    digest = hashlib.sha256(json.dumps([{k: opts.get(k) for k in keys}, len(samples)], sort_keys=True).encode())
    for sample in samples:
        digest.update(b"".join(np.ascontiguousarray(v).tobytes() for _, v in sorted(sample.items())))

    def run():
        return nncf.quantize(
            model,
            nncf.Dataset(samples),
            preset=nncf.QuantizationPreset(opts["preset"]),
            model_type=nncf.ModelType(opts["model_type"]),
            subset_size=len(samples),
            fast_bias_correction=bool(opts["fast_bias_correction"]),
            ignored_scope=_ignored_scope(opts.get("ignored_scope")),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=float(opts["smooth_quant_alpha"]))
            ),
        )

    return ctx.memo(f"ov-static-int8:{digest.hexdigest()}", run)


def build_qint8(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """NNCF static int8 quantisation of the fp32 IR, calibrated on the calibration texts."""
    opts = {**QINT8_DEFAULTS, **spec.options}
    start = time.perf_counter()
    model = _read_base(ctx)
    input_names = [p.get_any_name() for p in model.inputs]
    samples = calibration_samples(ctx, input_names, int(opts["subset_size"]))
    try:
        quantized = quantize_static(ctx, model, samples, opts)
        files = _save(quantized, ctx.stage_dir, spec.file_name)
    except ExportFailed:
        raise
    except Exception as exc:
        raise ExportFailed(f"NNCF static quantisation failed: {type(exc).__name__}: {_one_line(exc)}") from exc
    return BuildResult(
        files=files,
        build={
            "export_source": BASE_FILE,
            "precision": "int8",
            "method": "nncf.quantize (post-training static: int8 weights and activations)",
            "preset": opts["preset"],
            "weights": "int8 symmetric, per channel",
            "activations": "int8 asymmetric, per tensor" if opts["preset"] == "mixed" else "int8 symmetric, per tensor",
            "model_type": opts["model_type"],
            "fast_bias_correction": bool(opts["fast_bias_correction"]),
            "smooth_quant_alpha_matmul": float(opts["smooth_quant_alpha"]),
            "ignored_scope": opts["ignored_scope"] or None,  # ops kept in float
            "calibration": {
                "method": "NNCF statistics over the calibration subset (default range estimators)",
                "tokenisation": "model tokenizer, one text per sample, no padding, truncated at max_seq_length",
                "subset_size": len(samples),
                "texts_available": len(ctx.calibration_texts()),
            },
            **_io(quantized),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "nncf")),
        },
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
