"""OpenVINO int8 variants derived from the fp32 IR with NNCF: weight-only and post-training static.

- ``openvino-int8-weights``: NNCF weight compression (int8 weights, per output channel, float
  activations); no calibration data.
- ``openvino-qint8``: NNCF post-training static quantisation (int8 weights and activations),
  ``model_type=transformer``, calibrated on the calibration texts tokenised one text per sample by the
  model's own tokenizer (so no padding tokens skew the activation ranges). :func:`quantize_static` is the
  one ``nncf.quantize`` call, shared with ``openvino-qint8-fidelity`` (``export_openvino_fidelity``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from exporter.builders import kit
from exporter.builders.context import BuildContext, BuildResult
from exporter.builders.export_openvino import BASE_FILE, io_names, read_base
from exporter.builders.options import IgnoredScope, NncfStaticOptions, WeightCompressionOptions
from exporter.environment import package_versions
from exporter.errors import ExportFailed
from exporter.variants import VariantSpec

# ---------------------------------------------------------------------------------------------------
# int8 weight-only: NNCF weight compression


DYNAMIC_QUANTIZATION = "DYNAMIC_QUANTIZATION_GROUP_SIZE"


def pin_runtime_options(model, options: dict[str, str]) -> None:
    """Write compile options into the IR's ``rt_info["runtime_options"]``, which OpenVINO's CPU plugin reads at
    compile time in every consumer (sentence-transformers, the runtime, OVMS, Triton); a consumer's explicit
    config still wins. So a run-time default that differs between OpenVINO releases cannot change what is
    served from what was gated."""
    for key, value in options.items():
        model.set_rt_info(value, ["runtime_options", key])


def build_int8_weights(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """NNCF weight compression of the fp32 IR: int8 weights, per output channel, float activations."""
    opts = kit.options_of(spec, WeightCompressionOptions)
    start = time.perf_counter()
    model = read_base(ctx)
    with kit.backend_errors("NNCF weight compression"):
        import nncf

        mode = nncf.CompressWeightsMode(opts.mode)
        compressed = nncf.compress_weights(model, mode=mode)
        group = opts.dynamic_quantization_group_size
        pin_runtime_options(compressed, {DYNAMIC_QUANTIZATION: str(group)})
        files = kit.save_ir(compressed, ctx.stage_dir, spec.file_name)
    return BuildResult(
        files=files,
        build={
            "export_source": BASE_FILE,
            "precision": "int8",
            "method": "nncf.compress_weights (weight-only)",
            "mode": mode.value,
            "per_channel": True,
            "group_size": None,
            "activations": "float (fp32): the run-time int8 activations off"
            if group == 0
            else f"int8 at run time, per token and group of {group} input channels",
            "runtime_options": {DYNAMIC_QUANTIZATION: str(group)},
            "calibration": None,
            **io_names(compressed),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "nncf")),
        },
    )


# ---------------------------------------------------------------------------------------------------
# int8 static: NNCF post-training quantisation


def query_tails(texts: list[str]) -> list[str]:
    """The last 1-3 words of each text of more than 3 words (trailing punctuation dropped): short, query-like
    texts made from the calibration set itself, as traffic holds many 1-3 word queries."""
    words = [t.split() for t in texts]
    return [" ".join(w[-1 - i % 3 :]).strip(".,;:!?") for i, w in enumerate(words) if len(w) > 3]


def calibration_samples(ctx: BuildContext, model, opts: NncfStaticOptions) -> list[dict]:
    """Calibration texts (then their query tails, when ``opts.query_tails``) tokenised by the model's own
    tokenizer for the IR ``model``'s inputs, one text per sample (no padding), at most ``opts.subset_size``."""
    input_names = [p.get_any_name() for p in model.inputs]
    texts = ctx.usable_calibration_texts()
    if not texts:
        raise ExportFailed("no calibration texts for OpenVINO static int8.", "Pass --calibration FILE.")
    if opts.query_tails:
        texts += [t for t in query_tails(texts) if t.strip()]
    reference = ctx.reference_model()
    samples = []
    for text in texts[: opts.subset_size]:
        features = reference.preprocess([text])
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


def _ignored_scope(scope: IgnoredScope | None):
    import nncf

    if scope is None:
        return None
    return nncf.IgnoredScope(
        names=list(scope.names), patterns=list(scope.patterns), types=list(scope.types), validate=False
    )


def advanced_parameters(opts: NncfStaticOptions):
    """NNCF's ``AdvancedQuantizationParameters`` for the options (shared with accuracy control's anchor)."""
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return AdvancedQuantizationParameters(
        overflow_fix=OverflowFix(opts.overflow_fix),
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, opts.activation_range.upper()),
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=float(opts.smooth_quant_alpha)),
    )


def quantize_static(ctx: BuildContext, model, samples: list[dict], opts: NncfStaticOptions):
    """``nncf.quantize`` of the fp32 IR, once per export for the same options and calibration samples:
    ``openvino-qint8`` and the fidelity search (which starts from all-int8) share it."""
    import hashlib
    import json

    import nncf

    digest = hashlib.sha256(json.dumps([opts.to_dict(), len(samples)], sort_keys=True).encode())
    for sample in samples:
        digest.update(b"".join(np.ascontiguousarray(v).tobytes() for _, v in sorted(sample.items())))

    def run():
        return nncf.quantize(model, nncf.Dataset(samples), **quantize_arguments(opts, len(samples)))

    return ctx.memo("ov-static-int8", run, samples=digest.hexdigest())


def nncf_record(opts: NncfStaticOptions) -> dict[str, Any]:
    """How the static int8 was made, for the manifest (``openvino-qint8`` and the fidelity variant)."""
    return {
        "preset": opts.preset,
        "weights": "int8 symmetric, per channel",
        "activations": "int8 asymmetric, per tensor" if opts.preset == "mixed" else "int8 symmetric, per tensor",
        "model_type": opts.model_type,
        "fast_bias_correction": opts.fast_bias_correction,
        "smooth_quant_alpha_matmul": float(opts.smooth_quant_alpha),
        "activation_range": opts.activation_range,
        "overflow_fix": opts.overflow_fix,
        "query_tails": opts.query_tails,
    }


def quantize_arguments(opts: NncfStaticOptions, subset_size: int, advanced: str = "advanced_parameters") -> dict:
    """The keyword arguments ``nncf.quantize`` takes for ``opts`` (``advanced``: the name the advanced
    parameters go by: ``advanced_quantization_parameters`` in ``nncf.quantize_with_accuracy_control``)."""
    import nncf

    return {
        "preset": nncf.QuantizationPreset(opts.preset),
        "model_type": nncf.ModelType(opts.model_type),
        "subset_size": subset_size,
        "fast_bias_correction": opts.fast_bias_correction,
        "ignored_scope": _ignored_scope(opts.ignored_scope),
        advanced: advanced_parameters(opts),
    }


def calibration_info(ctx: BuildContext, samples: list[dict]) -> dict[str, Any]:
    """The calibration as the manifest records it; ``query_tail_samples``: how many of the samples are query
    tails (they follow the texts, so a large calibration set can leave no room for them)."""
    texts = len(ctx.usable_calibration_texts())
    return {
        "method": "NNCF statistics over the calibration subset (activation ranges: see activation_range)",
        "tokenisation": "model tokenizer, one text per sample, no padding, truncated at max_seq_length",
        "subset_size": len(samples),
        "texts_available": len(ctx.calibration_texts()),
        "query_tail_samples": max(0, len(samples) - texts),
    }


def build_qint8(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """NNCF static int8 quantisation of the fp32 IR, calibrated on the calibration texts."""
    opts = kit.options_of(spec, NncfStaticOptions)
    start = time.perf_counter()
    model = read_base(ctx)
    samples = calibration_samples(ctx, model, opts)
    with kit.backend_errors("NNCF static quantisation"):
        quantized = quantize_static(ctx, model, samples, opts)
        files = kit.save_ir(quantized, ctx.stage_dir, spec.file_name)
    return BuildResult(
        files=files,
        build={
            "export_source": BASE_FILE,
            "precision": "int8",
            "method": "nncf.quantize (post-training static: int8 weights and activations)",
            **nncf_record(opts),
            "ignored_scope": opts.ignored_scope.to_dict() if opts.ignored_scope else None,  # ops kept in float
            "calibration": calibration_info(ctx, samples),
            **io_names(quantized),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "nncf")),
        },
    )
