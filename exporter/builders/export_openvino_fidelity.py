"""``openvino-qint8-fidelity``: NNCF static int8 with the fewest weight MatMuls kept out of int8.

One ``nncf.quantize`` of the fp32 IR (as ``openvino-qint8``), then ``exporter.builders.fidelity_search`` ranks the
weight MatMuls of every kind (:func:`weight_matmuls`: query / key / value, attention output, FFN in and out;
``OvFidelityOptions.candidate_kinds``) once and keeps the fewest out of int8 that count on the calibration
texts (held-out ones included, see fidelity_search). The
unit kept out is as small as measured to matter: a MatMul with outlier input channels keeps only those in
float (:mod:`exporter.builders.outlier_split`), any other goes back to float whole (:func:`float_matmuls`).
Both are graph surgery on the quantised model, so the search costs one calibration plus a few encodes of
the calibration texts, not one NNCF run per step. The manifest records every op kept out of int8 with the
measured reason (``ops_split`` with its channels, ``ops_in_float``). When the split unit cannot reach the
goal, the search runs again with whole ops only (``split_search_fell_short`` records the first attempt).

Measured on all-MiniLM-L6-v2 with the catalogue's options (query tails in the calibration; AMD EPYC,
avx512_vnni + avx512_bf16; benchmarks/fidelity_units.py and best_variant.py): the search splits the FFN
outputs of layers 0-2 (1-2 channels each) and floats nothing whole; probe min cosine 0.9913 (nn@10 0.959)
at 0.97-1.02 of all-int8's throughput, where the same ops floated whole run at 0.77.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from exporter.builders import fidelity_search, kit, outlier_split, search_record
from exporter.builders.context import BuildContext, BuildResult
from exporter.builders.export_openvino import BASE_FILE, io_names, read_base
from exporter.builders.export_openvino_int8 import calibration_info, calibration_samples, nncf_record, quantize_static
from exporter.builders.options import OvFidelityOptions
from exporter.environment import package_versions
from exporter.variants import VariantSpec


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


def _walk(output, types: tuple[str, ...]):
    """The node behind ``output`` past nodes of ``types`` (casts, reshapes, int8 quantisers, SmoothQuant)."""
    node = output.get_node()
    while node.get_type_name() in types and node.get_input_size():
        node = node.input_value(0).get_node()
    return node


def _feeds_gelu(op) -> bool:
    """The MatMul's output reaches a Gelu through at most its bias Add."""
    for target in op.output(0).get_target_inputs():
        node = target.get_node()
        if node.get_type_name() == "Gelu":
            return True
        if node.get_type_name() == "Add" and any(
            t.get_node().get_type_name() == "Gelu" for t in node.output(0).get_target_inputs()
        ):
            return True
    return False


MATMUL_KINDS = ("qkv", "attention_output", "ffn_in", "ffn_out")  # OvFidelityOptions.candidate_kinds


def weight_matmuls(model) -> dict[str, str]:
    """Every weight MatMul of a BERT-style encoder IR, by kind (``MATMUL_KINDS``), in graph order: the residual
    writers (:func:`residual_writers`) reading a Gelu are FFN outputs, the others attention outputs; of the
    rest, those feeding a Gelu are FFN inputs, the others the query / key / value projections."""
    writers = set(residual_writers(model))
    kinds: dict[str, str] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or outlier_split.const_source(op.input_value(1)) is None:
            continue
        name = op.get_friendly_name()
        if name in writers:
            reads = _walk(op.input_value(0), ("Convert", "Reshape", "FakeQuantize", "Multiply"))
            kinds[name] = "ffn_out" if reads.get_type_name() == "Gelu" else "attention_output"
        else:
            kinds[name] = "ffn_in" if _feeds_gelu(op) else "qkv"
    return kinds


def candidate_matmuls(model, kinds: tuple[str, ...]) -> list[str]:
    """The search's candidates: the weight MatMuls of the given kinds, in graph order."""
    return [name for name, kind in weight_matmuls(model).items() if kind in kinds]


class OvScorer(fidelity_search.Scorer):
    """Embeds calibration texts through a candidate IR as sentence-transformers does (its pooling/normalise
    modules after the IR), f32 pinned like the variant, longest texts first in batches of
    ``fidelity_search.BATCH`` (the batches ``Scorer.scan`` forms)."""

    def __init__(self, ctx: BuildContext, texts: list[str], reference):
        super().__init__(texts, reference)
        self.model = ctx.reference_model()
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
        for i in range(0, len(order), fidelity_search.BATCH):
            chunk = order[i : i + fidelity_search.BATCH]
            features = self.model.preprocess([self.texts[j] for j in chunk])
            ids = features["input_ids"]
            inputs = {n: (features[n] if n in features else torch.zeros_like(ids)).numpy() for n in names}
            hidden = torch.from_numpy(np.asarray(compiled(inputs)[0]))
            feats = {"token_embeddings": hidden, "attention_mask": features["attention_mask"]}
            with torch.inference_mode():
                for module in list(self.model)[1:]:
                    feats = module(feats)
            out[chunk] = feats["sentence_embedding"].numpy()
        return out[idx]


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
        mm.input(0).replace_source_output(outlier_split.float_activation(mm)[0])
        weight = outlier_split.const_source(ref.input_value(1))
        mm.input(1).replace_source_output(ov.op.Constant(np.asarray(weight.get_data(), dtype=np.float32)).output(0))
        for target in mm.output(0).get_target_inputs():  # the bias Add: the fp32 IR's bias, uncorrected
            add = target.get_node()
            ref_add = base_ops.get(add.get_friendly_name())
            if add.get_type_name() != "Add" or ref_add is None:
                continue
            for port in range(2):
                bias = outlier_split.const_source(ref_add.input_value(port))
                if bias is not None and outlier_split.const_source(add.input_value(port)) is not None:
                    add.input(port).replace_source_output(
                        ov.op.Constant(np.asarray(bias.get_data(), dtype=np.float32)).output(0)
                    )
    model.validate_nodes_and_infer_types()
    return model


class _KeepOutOfInt8:
    """The search hooks for NNCF static int8: one ``nncf.quantize`` (shared with ``openvino-qint8`` in the same
    export), then graph surgery on that quantised model instead of re-running NNCF (~20 s on
    all-MiniLM-L6-v2 per run). The unit kept out of int8 is as small as measured to matter: a MatMul with
    outlier input channels (``splits``, :mod:`exporter.builders.outlier_split`) keeps only those channels in
    float; any other candidate is put back in float whole (:func:`float_matmuls`). One model alive at a
    time: bounded memory."""

    def __init__(self, quantized, base, splits: dict[str, dict], candidates: list[str] | None = None):
        self.quantized, self.base, self.splits = quantized, base, splits
        self.candidates = residual_writers(base) if candidates is None else list(candidates)
        self.made: dict[tuple[str, ...], Any] = {}

    def quantize_all(self):
        return self.quantized

    def keep_in_float(self, names: list[str]):
        key = tuple(names)
        if key not in self.made:
            self.made.clear()
            split = {n: self.splits[n] for n in names if n in self.splits}
            model = outlier_split.split_matmuls(self.quantized, self.base, split) if split else self.quantized
            whole = [n for n in names if n not in self.splits]
            self.made[key] = float_matmuls(model, self.base, whole) if whole else model
        return self.made[key]

    def records(self, result: fidelity_search.SearchResult) -> tuple[list[dict], list[dict]]:
        """The manifest's ``ops_in_float`` (whole MatMuls) and ``ops_split`` (channels kept in float)."""
        kept = search_record.kept_records(result, "op")
        split = [
            {
                **entry,
                "channels": self.splits[entry["op"]]["channels"].tolist(),
                "channel_scores": [round(float(x), 1) for x in self.splits[entry["op"]]["scores"]],
                "channels_why": "input channels whose max|x|·max|W| over the calibration samples is at least "
                "outlier_ratio times the op's median channel: kept in float (Gather + fp32 MatMul), the rest "
                "int8 with its weight re-quantised without them (NNCF's activation range kept)",
            }
            for entry in kept
            if entry["op"] in self.splits
        ]
        return [e for e in kept if e["op"] not in self.splits], split


def build_qint8_fidelity(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """NNCF static int8 with the fewest ranked weight MatMuls kept out of int8 (see the module doc)."""
    opts = kit.options_of(spec, OvFidelityOptions)
    start = time.perf_counter()
    model = read_base(ctx)
    samples = calibration_samples(ctx, model, opts.nncf)
    texts = fidelity_search.search_texts(ctx)
    with kit.backend_errors("OpenVINO fidelity int8"):
        scorer = OvScorer(ctx, texts, fidelity_search.calibration_reference(ctx, texts))
        all_int8 = quantize_static(ctx, model, samples, opts.nncf)
        kinds = weight_matmuls(model)
        names = [n for n, kind in kinds.items() if kind in opts.candidate_kinds]
        splits = outlier_split.plan(all_int8, model, samples, names, opts.outlier_ratio, opts.max_outlier_channels)
        hooks = _KeepOutOfInt8(all_int8, model, splits, names)
        quantized, result = fidelity_search.search(hooks, scorer, opts.search)
        fell_short = None
        if not result.reached and splits:  # the split keeps NNCF's activation range: where that range is the
            # error, only whole ops in float help, as before the split existed; search again with that unit
            fell_short = {"kept": list(result.kept_float), "stopped_by": result.stopped_by, **result.steps[-1]}
            hooks = _KeepOutOfInt8(all_int8, model, {}, names)
            quantized, result = fidelity_search.search(hooks, scorer, opts.search)
        ops_in_float, ops_split = hooks.records(result)
        for entry in ops_in_float + ops_split:
            entry["kind"] = kinds[entry["op"]]
        files = kit.save_ir(quantized, ctx.stage_dir, spec.file_name)
    return BuildResult(
        files=files,
        build={
            "export_source": BASE_FILE,
            "precision": "int8",
            "method": "nncf.quantize (post-training static) once; then, in that model, the ranked fewest "
            "weight MatMuls kept out of int8: their outlier input channels split out into float "
            "where they have some, else the whole MatMul in float (fp32 weight, bias and activation)",
            **nncf_record(opts.nncf),
            "outlier_ratio": float(opts.outlier_ratio),
            "max_outlier_channels": int(opts.max_outlier_channels),
            "candidate_kinds": list(opts.candidate_kinds),
            "candidates_by_kind": {k: sum(1 for n in names if kinds[n] == k) for k in opts.candidate_kinds},
            "ops_in_float": ops_in_float,
            "ops_split": ops_split,
            "search": search_record.search_record(result, opts.search),
            "split_search_fell_short": fell_short,  # None: the search above used the split unit
            "calibration": {
                **calibration_info(ctx, samples),
                "search_texts": len(texts),
                "tokenizer_samples": len(texts) - len(ctx.usable_calibration_texts()),
            },
            **io_names(quantized),
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("openvino", "nncf")),
        },
    )
