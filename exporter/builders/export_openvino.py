"""OpenVINO IR variants: fp32 from torch, then fp16, int8 weight-only and int8 static derived from it.

The fp32 IR is exported once from the torch transformer (optimum-intel, the same path
sentence-transformers' ``backend="openvino"`` uses), never from an ORT-optimised ONNX graph. The other
three read that IR from the stage dir and transform it:

- ``openvino-fp16``: weights stored as fp16 (``compress_to_fp16``); the CPU plugin still computes in
  fp32 (or bf16 where the CPU has it), so this halves the files, not the time.
- ``openvino-int8-weights`` and ``openvino-qint8`` (``exporter.builders.export_openvino_int8``): NNCF
  weight-only compression, and NNCF post-training static quantisation calibrated on the calibration texts.
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

import time

from exporter.builders import kit
from exporter.builders.context import BuildContext, BuildResult
from exporter.environment import package_versions
from exporter.errors import ExportFailed
from exporter.variants import VariantSpec

OV_DIR = "openvino"
BASE_FILE = f"{OV_DIR}/openvino_model.xml"


def read_base(ctx: BuildContext):
    import openvino as ov

    xml = ctx.stage_dir / BASE_FILE
    if not xml.is_file():
        raise ExportFailed(f"{BASE_FILE} is missing from the artifact.", "Build the `openvino` variant first.")
    return ov.Core().read_model(xml, xml.with_suffix(".bin"))


def io_names(model) -> dict[str, list[str]]:
    return {
        "inputs": sorted(p.get_any_name() for p in model.inputs),
        "outputs": sorted(p.get_any_name() for p in model.outputs),
    }


# ---------------------------------------------------------------------------------------------------
# fp32: from torch


def build_fp32_via_traced_graph(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """fp32 IR converted (``openvino.convert_model``) from the transformer's traced token graph
    (``export_onnx.export_token_graph``): the OpenVINO route of the support rules whose family optimum-intel
    exports wrongly (``Rule.openvino_why``)."""
    import openvino as ov

    from exporter.builders.export_onnx import export_token_graph

    start = time.perf_counter()
    dest = ctx.stage_dir / spec.file_name
    with kit.backend_errors("OpenVINO conversion of the traced graph"), kit.scratch(dest.parent, ".ov-onnx-") as tmp:
        graph = export_token_graph(ctx.reference_model(), tmp / "model.onnx")
        model = ov.convert_model(graph)
        files = kit.save_ir(model, ctx.stage_dir, spec.file_name, compress_to_fp16=False)
    return BuildResult(
        files=files,
        build={
            "export_source": "torch (traced by optimum-onnx, converted by openvino.convert_model)",
            "exporter": "exporter.builders.export_onnx.export_token_graph + openvino.convert_model",
            "why_not_optimum_intel": ctx.support_rule().openvino_why,
            "transformer_dir": kit.transformer_folder(ctx.source_dir),
            "task": "feature-extraction",
            "precision": "fp32",
            "weights_dtype": "f32",
            "compress_to_fp16": False,
            "graph": "transformer only; pooling, Dense and normalisation run in sentence-transformers",
            **io_names(model),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "optimum-onnx", "torch", "transformers")),
        },
    )


def build_fp32(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Export the torch transformer to an fp32 OpenVINO IR at ``openvino/openvino_model.xml``."""
    from exporter import kinds

    own = ctx.support_rule().openvino_build_fn()
    if own is not None:  # the rule's route: converted from an ONNX graph (traced, static, the kind's own)
        return own(ctx, spec)
    kspec = kinds.get(ctx.kind)
    model_dir = kit.transformer_dir(ctx.source_dir, require=True)
    start = time.perf_counter()
    with kit.backend_errors("OpenVINO export from torch"):
        ov_wrapper = kspec.openvino_cls().from_pretrained(
            str(model_dir.resolve()),
            export=True,
            compile=False,
            load_in_8bit=False,
            local_files_only=True,
            trust_remote_code=ctx.settings.trust_remote_code,
        )
        model = ov_wrapper.model
        files = kit.save_ir(model, ctx.stage_dir, spec.file_name, compress_to_fp16=False)
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
            **io_names(model),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "optimum-intel", "torch", "transformers")),
        },
    )


# ---------------------------------------------------------------------------------------------------
# fp16: weights stored in half precision


def build_fp16(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Re-save the fp32 IR with fp16 weights (``compress_to_fp16=True``)."""
    start = time.perf_counter()
    model = read_base(ctx)
    with kit.backend_errors("OpenVINO fp16 compression"):
        files = kit.save_ir(model, ctx.stage_dir, spec.file_name, compress_to_fp16=True)
    return BuildResult(
        files=files,
        build={
            "export_source": BASE_FILE,
            "precision": "fp16",
            "weights_dtype": "f16 (decompressed to f32 at load)",
            "compress_to_fp16": True,
            "note": "CPU inference still runs in fp32 (bf16 only on CPUs that have it): smaller files, same speed.",
            **io_names(model),
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
    assert spec.derives_from is not None, f"{spec.id}: the catalogue derives every bf16 IR from its fp32 one"
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
        files=[xml, *kit.companions(xml)],
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
            **io_names(model),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino",)),
        },
    )
