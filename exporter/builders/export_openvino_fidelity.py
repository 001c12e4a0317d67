"""``openvino-qint8-fidelity``: NNCF static int8 with the fewest residual-writing MatMuls put back in float.

One ``nncf.quantize`` of the fp32 IR (as ``openvino-qint8``), then ``exporter.builders.fidelity_search`` ranks the
residual-writing MatMuls (attention and FFN output projections, whose int8 error lands straight in the
residual stream) once and floats the fewest that clear the gate on the calibration texts. Floating an op
is graph surgery on the quantised model (:func:`float_matmuls`), so the search costs one calibration plus
a few encodes of the calibration texts, not one NNCF run per step. The manifest records every op kept
out of int8 with the measured reason.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from exporter.builders import fidelity_search
from exporter.builders.context import BuildContext, BuildResult
from exporter.builders.export_openvino import (
    BASE_FILE,
    OV_DIR,
    QINT8_DEFAULTS,
    _io,
    _one_line,
    _read_base,
    _save,
    calibration_samples,
    quantize_static,
)
from exporter.environment import package_versions
from exporter.errors import ExportFailed
from exporter.variants import VariantSpec

# ---------------------------------------------------------------------------------------------------
# int8 static with a measured float set: the fidelity variant

QINT8_FIDELITY_FILE = f"{OV_DIR}/openvino_model_qint8_fidelity.xml"
QINT8_FIDELITY_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in QINT8_DEFAULTS.items() if k != "ignored_scope"},
    **fidelity_search.SEARCH_DEFAULTS,  # goal, margins, screen texts, budget, max float share
}


def residual_writers(model) -> list[str]:
    """Weight MatMuls whose output (through at most one bias Add) is added to the residual stream.

    In a BERT-style encoder these are each layer's attention output and FFN output projections: their
    int8 error lands directly in the residual stream. Measured on all-MiniLM-L6-v2 (calibration texts):
    keeping all 36 weight MatMuls in float gives min cosine 0.997; all 12 residual writers 0.997; the 6
    FFN outputs alone 0.980, the 6 attention outputs alone 0.962 (the two groups only help together).
    """

    def const_weight(node) -> bool:
        src = node.input_value(1).get_node()
        while src.get_type_name() in ("Convert", "Reshape", "Transpose") and src.get_input_size():
            src = src.input_value(0).get_node()
        return src.get_type_name() == "Constant"

    def consumers(node):
        return [t.get_node() for t in node.output(0).get_target_inputs()]

    def is_residual_add(node) -> bool:
        if node.get_type_name() != "Add":
            return False
        return all(not const_weight_input(node, i) for i in range(2))

    def const_weight_input(node, i) -> bool:
        src = node.input_value(i).get_node()
        while src.get_type_name() in ("Convert", "Reshape", "Unsqueeze") and src.get_input_size():
            src = src.input_value(0).get_node()
        return src.get_type_name() == "Constant"

    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or not const_weight(op):
            continue
        nxt = consumers(op)
        if any(is_residual_add(n) for n in nxt) or any(
            is_residual_add(m) for n in nxt if n.get_type_name() == "Add" for m in consumers(n)
        ):
            names.append(op.get_friendly_name())
    return names


class _OvScorer:
    """Embeds calibration texts through a candidate IR as sentence-transformers does (its pooling/normalise
    modules after the IR), f32 pinned like the variant, longest texts first in batches of 32."""

    def __init__(self, ctx: BuildContext, texts: list[str], reference):
        self.model = ctx.reference_model()
        self.texts = texts
        self.reference = reference
        self._compiled: tuple[Any, Any] | None = None  # (ov model, compiled): the screen reuses one compile

    def _compile(self, ov_model):
        import openvino as ov

        if self._compiled is None or self._compiled[0] is not ov_model:
            self._compiled = (ov_model, ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
        return self._compiled[1]

    def encode(self, ov_model, idx: np.ndarray) -> np.ndarray:
        import torch

        compiled = self._compile(ov_model)
        names = [p.get_any_name() for p in ov_model.inputs]
        order = idx[np.argsort([-len(self.texts[j]) for j in idx], kind="stable")]
        out = np.zeros((len(self.texts), self.reference.shape[1]), dtype=np.float32)
        for i in range(0, len(order), 32):
            chunk = order[i : i + 32]
            features = self.model.tokenize([self.texts[j] for j in chunk])
            ids = features["input_ids"]
            inputs = {n: (features[n] if n in features else torch.zeros_like(ids)).numpy() for n in names}
            hidden = torch.from_numpy(np.asarray(compiled(inputs)[0]))
            feats = {"token_embeddings": hidden, "attention_mask": features["attention_mask"]}
            with torch.inference_mode():
                for module in list(self.model)[1:]:
                    feats = module(feats)
            out[chunk] = feats["sentence_embedding"].numpy()
        return out[idx]

    def cosines(self, ov_model, idx: np.ndarray | None = None) -> np.ndarray:
        idx = np.arange(len(self.texts)) if idx is None else idx
        emb = self.encode(ov_model, idx).astype(np.float64)
        ref = self.reference[idx].astype(np.float64)
        den = np.maximum(np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
        return (emb * ref).sum(1) / den

    def metrics(self, ov_model) -> dict[str, float | None]:
        from exporter.quality import parity

        m = parity.compare(self.reference, self.encode(ov_model, np.arange(len(self.texts))))
        nn = m.neighbour_agreement_at_10
        return {
            "cosine_min": round(m.cosine_min, 6),
            "cosine_mean": round(m.cosine_mean, 6),
            "neighbour_agreement_at_10": None if nn is None else round(nn, 4),
        }


def _const_source(output):
    """The Constant behind a weight input (through Convert / Reshape / Transpose), or None."""
    node = output.get_node()
    while node.get_type_name() in ("Convert", "Reshape", "Transpose") and node.get_input_size():
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def float_matmuls(quantized, base, names: list[str]):
    """A copy of the quantised model with the named weight MatMuls back in float: no re-calibration.

    Each MatMul takes its activation from before NNCF's FakeQuantize and SmoothQuant scale, its weight and
    the bias Add right after it from the fp32 IR (undoing the SmoothQuant weight scale and the fast bias
    correction of that layer): the op computes what the fp32 IR computes, on the int8 model's activations.
    """
    import openvino as ov

    model = quantized.clone()
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    base_ops = {op.get_friendly_name(): op for op in base.get_ordered_ops()}
    for name in names:
        mm, ref = ops[name], base_ops[name]
        act = mm.input_value(0)
        if act.get_node().get_type_name() == "FakeQuantize":
            act = act.get_node().input_value(0)
        node = act.get_node()
        if node.get_type_name() == "Multiply" and "nncf_smooth_quant" in node.get_friendly_name():
            act = node.input_value(0)
        mm.input(0).replace_source_output(act)
        weight = _const_source(ref.input_value(1))
        mm.input(1).replace_source_output(ov.op.Constant(np.asarray(weight.get_data(), dtype=np.float32)).output(0))
        for target in mm.output(0).get_target_inputs():  # the bias Add: the fp32 IR's bias, uncorrected
            add = target.get_node()
            ref_add = base_ops.get(add.get_friendly_name())
            if add.get_type_name() != "Add" or ref_add is None:
                continue
            for port in range(2):
                bias = _const_source(ref_add.input_value(port))
                if bias is not None and _const_source(add.input_value(port)) is not None:
                    add.input(port).replace_source_output(
                        ov.op.Constant(np.asarray(bias.get_data(), dtype=np.float32)).output(0)
                    )
    model.validate_nodes_and_infer_types()
    return model


def qint8_fidelity_search(ctx: BuildContext, model, samples, scorer: _OvScorer, opts: dict[str, Any]):
    """``exporter.builders.fidelity_search.search`` over the residual-writing MatMuls (:func:`residual_writers`) of one
    static int8 quantisation: each step floats MatMuls in that model (:func:`float_matmuls`) instead of
    re-running NNCF (one ``nncf.quantize``, ~20 s on all-MiniLM-L6-v2, instead of one per step)."""
    quantized = quantize_static(ctx, model, samples, opts)  # shared with openvino-qint8 in the same export
    made: dict[tuple[str, ...], Any] = {}

    def make(kept: list[str]):
        key = tuple(kept)
        if key not in made:
            made.clear()  # one model alive at a time: bounded memory
            made[key] = float_matmuls(quantized, model, kept) if kept else quantized
        return made[key]

    return fidelity_search.search(residual_writers(model), make, scorer.cosines, scorer.metrics, opts)


def build_qint8_fidelity(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """NNCF static int8 with the fewest ranked residual-writing MatMuls put back in float (see the search)."""
    from exporter.builders.export_onnx_quantize import _calibration_reference

    opts = {**QINT8_FIDELITY_DEFAULTS, **spec.options}
    start = time.perf_counter()
    model = _read_base(ctx)
    input_names = [p.get_any_name() for p in model.inputs]
    samples = calibration_samples(ctx, input_names, int(opts["subset_size"]))
    texts = [t for t in ctx.calibration_texts() if t and t.strip()]
    if len(texts) < 2:
        raise ExportFailed("the fidelity int8 search needs at least 2 calibration texts.", "Pass --calibration FILE.")
    try:
        scorer = _OvScorer(ctx, texts, _calibration_reference(ctx, texts))
        quantized, result = qint8_fidelity_search(ctx, model, samples, scorer, opts)
        files = _save(quantized, ctx.stage_dir, spec.file_name)
    except ExportFailed:
        raise
    except Exception as exc:
        raise ExportFailed(f"OpenVINO fidelity int8 failed: {type(exc).__name__}: {_one_line(exc)}") from exc
    final = result.steps[-1]
    return BuildResult(
        files=files,
        build={
            "export_source": BASE_FILE,
            "precision": "int8",
            "method": "nncf.quantize (post-training static) once; the ranked fewest residual-writing MatMuls "
            "then put back in float (fp32 weight, bias and activation) in that model",
            "preset": opts["preset"],
            "weights": "int8 symmetric, per channel",
            "activations": "int8 asymmetric, per tensor" if opts["preset"] == "mixed" else "int8 symmetric, per tensor",
            "model_type": opts["model_type"],
            "fast_bias_correction": bool(opts["fast_bias_correction"]),
            "smooth_quant_alpha_matmul": float(opts["smooth_quant_alpha"]),
            "ops_in_float": [
                {
                    "op": name,
                    "why": "measured sensitivity: put alone back in float, it cut the mean cosine deficit of the "
                    f"{result.screen_texts} worst calibration texts by {result.screened[name]['deficit_cut']:.2e} "
                    f"(min cosine +{result.screened[name]['min_gain']:.4f}); ranked {rank + 1} of "
                    f"{len(result.screened)}",
                    **result.screened[name],
                }
                for rank, name in enumerate(result.kept_float)
            ],
            "search": {
                **result.to_dict(),
                "candidates": residual_writers(model),
                "goal": {
                    "cosine_min": round(float(opts["target_cosine_min"]) + float(opts["margin"]), 6),
                    "neighbour_agreement_at_10": round(float(opts["target_nn10"]) + float(opts["nn10_margin"]), 6),
                    "measured_on": "calibration texts (never the probe set)",
                },
                "budget_seconds": float(opts["budget_seconds"]),
                "calibration_result": {k: final[k] for k in ("cosine_min", "cosine_mean", "neighbour_agreement_at_10")},
            },
            "calibration": {
                "method": "NNCF statistics over the calibration subset (default range estimators)",
                "tokenisation": "model tokenizer, one text per sample, no padding, truncated at max_seq_length",
                "subset_size": len(samples),
                "texts_available": len(ctx.calibration_texts()),
                "search_texts": len(texts),
            },
            **_io(quantized),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "nncf")),
        },
    )
