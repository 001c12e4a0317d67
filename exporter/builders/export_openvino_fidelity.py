"""``openvino-qint8-fidelity``: NNCF static int8 with the fewest weight MatMuls kept out of int8.

One ``nncf.quantize`` of the fp32 IR (as ``openvino-qint8``), then ``exporter.builders.fidelity_search`` ranks the
weight MatMuls of every kind (:func:`weight_matmuls`: query / key / value, attention output, FFN in and out) and
the other int8 sites (:mod:`exporter.builders.ov_int8_sites`: attention scores, embedding tables;
``OvFidelityOptions.candidate_kinds``) once and keeps the fewest out of int8 that count on the calibration
texts (held-out ones included, see fidelity_search). The
unit kept out is as small as measured to matter: a MatMul with outlier input channels keeps only those in
float (:mod:`exporter.builders.outlier_split`), any other goes back to float whole (:func:`float_matmuls`).
Both are graph surgery on the quantised model, so the search costs one calibration plus a few encodes of
the calibration texts, not one NNCF run per step. The manifest records every op kept out of int8 with the
measured reason (``ops_split`` with its channels, ``ops_in_float``). The search ranks and keeps whole ops
(the unit that also fixes an error in NNCF's activation range, which a split keeps), then narrows: each
kept op with outlier channels tries the split unit, kept where the model still counts
(``fidelity_search.narrow``).

What it keeps and how fast it runs on real models: docs/benchmarks.md (from benchmarks/int8_search.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from exporter.builders import fidelity_search, kit, outlier_split, ov_int8_sites, search_record, search_scorer
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


MATMUL_KINDS = ("qkv", "attention_output", "ffn_in", "ffn_out")
CANDIDATE_KINDS = MATMUL_KINDS + ov_int8_sites.SITE_KINDS  # what OvFidelityOptions.candidate_kinds may name


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


class OvScorer(search_scorer.Scorer):
    """Embeds calibration texts through a candidate IR as sentence-transformers does (its pooling/normalise
    modules after the IR), f32 pinned like the variant, longest texts first in batches of
    ``search_scorer.BATCH`` (the batches ``Scorer.scan`` forms)."""

    def __init__(self, ctx: BuildContext, texts: list[str], reference, strata: list[str] | None = None):
        super().__init__(texts, reference, strata)
        self.model = ctx.reference_model()
        self._compiled: tuple[Any, Any] | None = None  # (ov model, compiled): the screen reuses one compile

    def _compile(self, ov_model):
        import openvino as ov

        if self._compiled is None or self._compiled[0] is not ov_model:
            self._compiled = (ov_model, ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
        return self._compiled[1]

    def encode(self, ov_model, idx: np.ndarray) -> np.ndarray:
        """``ov_model``: an IR, or the screening model with a switch setting (:class:`Switched`)."""
        import torch

        fixed = {}
        if isinstance(ov_model, Switched):
            ov_model, fixed = ov_model.model, {SWITCH_INPUT: ov_model.switch}
        compiled = self._compile(ov_model)
        names = [p.get_any_name() for p in ov_model.inputs if p.get_any_name() not in fixed]
        order = idx[np.argsort([-len(self.texts[j]) for j in idx], kind="stable")]
        out = np.zeros((len(self.texts), self.reference.shape[1]), dtype=np.float32)
        for i in range(0, len(order), search_scorer.BATCH):
            chunk = order[i : i + search_scorer.BATCH]
            features = self.model.preprocess([self.texts[j] for j in chunk])
            ids = features["input_ids"]
            inputs = {n: (features[n] if n in features else torch.zeros_like(ids)).numpy() for n in names} | fixed
            hidden = torch.from_numpy(np.asarray(compiled(inputs)[0]))
            feats = {"token_embeddings": hidden, "attention_mask": features["attention_mask"]}
            with torch.inference_mode():
                for module in list(self.model)[1:]:
                    feats = module(feats)
            out[chunk] = feats["sentence_embedding"].numpy()
        return out[idx]


def _float_output(mm, ref, base_ops: dict, name: str):
    """What the fp32 IR's MatMul ``ref`` (and its bias Add) computes, built beside the quantised MatMul ``mm`` on
    the int8 model's activations: the activation from before NNCF's FakeQuantize and SmoothQuant scale, the fp32
    IR's weight and bias (undoing the SmoothQuant weight scale and that layer's fast bias correction); the new
    MatMul is called ``name``."""
    import openvino as ov
    from openvino import opset13 as ops

    attrs = mm.get_attributes()
    weight = np.asarray(outlier_split.const_source(ref.input_value(1)).get_data(), dtype=np.float32)
    matmul = ops.matmul(
        outlier_split.float_activation(mm)[0],
        ov.op.Constant(weight).output(0),
        attrs.get("transpose_a", False),
        attrs.get("transpose_b", False),
    )
    matmul.set_friendly_name(name)
    out = matmul.output(0)
    tail = outlier_split.bias_tail(mm)
    if tail.get_node() is mm:
        return out
    add = tail.get_node()
    port = 0 if add.input_value(0).get_node() is mm else 1
    bias = add.input_value(1 - port)
    ref_add = base_ops.get(add.get_friendly_name())
    if ref_add is not None and outlier_split.const_source(bias) is not None:
        for ref_port in range(2):  # the fp32 IR's bias, uncorrected
            ref_bias = outlier_split.const_source(ref_add.input_value(ref_port))
            if ref_bias is not None:
                bias = ov.op.Constant(np.asarray(ref_bias.get_data(), dtype=np.float32)).output(0)
                break
    return ops.add(out, bias).output(0)


def float_matmuls(quantized, base, names: list[str]):
    """A copy of the quantised model with the named weight MatMuls back in float (:func:`_float_output`, which
    replaces each MatMul and its bias Add): the op computes what the fp32 IR computes, on the int8 model's
    activations; no re-calibration."""
    model = quantized.clone()
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    base_ops = {op.get_friendly_name(): op for op in base.get_ordered_ops()}
    for name in names:
        mm = ops[name]
        tail = outlier_split.bias_tail(mm)
        consumers = list(tail.get_target_inputs())
        mm.set_friendly_name(f"{name}/int8_replaced")  # the float MatMul takes its name (the manifest's)
        out = _float_output(mm, base_ops[name], base_ops, name)
        for target in consumers:
            target.replace_source_output(out)
    model.validate_nodes_and_infer_types()
    return model


FIXED_WHY = "OvFidelityOptions.float_sites: kept in float in every model the search scored, not a candidate"
SWITCH_INPUT = "fidelity_search_switch"  # the screening model's extra input: one float per candidate


@dataclass(frozen=True)
class Switched:
    """The screening model (:func:`switch_model`) with a setting of its switch: the candidates at 1 kept out of
    int8 (as ``keep_in_float`` makes them), those at 0 int8."""

    model: Any
    switch: np.ndarray


def switch_model(quantized, base, names: list[str], splits: dict[str, dict], sites: dict[str, str] | None = None):
    """One model in which every candidate can be kept out of int8 by an input, not by graph surgery: each
    candidate's output (after its bias Add) becomes ``int8 + s_i · (kept - int8)``, ``kept`` built beside it
    (the outlier split of :func:`outlier_split.split_output` where ``splits`` has the op, else the float op of
    :func:`_float_output`) and ``s_i`` element ``i`` of the input ``SWITCH_INPUT``. Compiled once, it screens
    every candidate alone (a one-hot switch) without a compile per candidate; with ``s_i`` in {0, 1} it
    computes, up to float rounding, what ``keep_in_float`` builds (the search scores those models, not this).
    ``sites``: the quantised model's ``ov_int8_sites.site_kinds`` when the caller has them; else found here."""
    import openvino as ov
    from openvino import opset13 as ops

    model = quantized.clone()
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    base_ops = {op.get_friendly_name(): op for op in base.get_ordered_ops()}
    switch = ops.parameter([len(names)], ov.Type.f32, name=SWITCH_INPUT)
    switch.output(0).get_tensor().set_names({SWITCH_INPUT})
    axis = ov.op.Constant(np.array(0, dtype=np.int64))
    sites = ov_int8_sites.site_kinds(model) if sites is None else sites
    for i, name in enumerate(names):
        s_i = ops.gather(switch, ov.op.Constant(np.array(i, dtype=np.int64)), axis)
        if name in sites:  # an attention op's int8 inputs or an int8 table
            ov_int8_sites.blend(by_name[name], base_ops, s_i)
            continue
        mm = by_name[name]
        tail = outlier_split.bias_tail(mm)
        consumers = list(tail.get_target_inputs())
        site = outlier_split.matmul_site(mm, base_ops[name]) if name in splits else None
        if site is not None:
            kept = outlier_split.split_output(site, splits[name]["channels"])
        else:
            kept = _float_output(mm, base_ops[name], base_ops, f"{name}/kept_float")
        blended = ops.add(tail, ops.multiply(s_i, ops.subtract(kept, tail))).output(0)
        for target in consumers:
            target.replace_source_output(blended)
    model.add_parameters([switch])
    model.validate_nodes_and_infer_types()
    return model


class _KeepOutOfInt8:
    """The search hooks for NNCF static int8: one ``nncf.quantize`` (shared with ``openvino-qint8`` in the same
    export), then graph surgery on that quantised model instead of re-running NNCF (~20 s on
    all-MiniLM-L6-v2 per run). The unit kept out of int8 is as small as measured to matter: a MatMul with
    outlier input channels (``splits``, :mod:`exporter.builders.outlier_split`) keeps only those channels in
    float; any other candidate is put back in float whole (:func:`float_matmuls`). One model alive at a
    time: bounded memory."""

    def __init__(self, quantized, base, splits: dict[str, dict], candidates: list[str] | None = None, sites=None):
        self.quantized, self.base, self.splits = quantized, base, splits
        self.candidates = residual_writers(base) if candidates is None else list(candidates)
        self.sites: dict[str, str] = ov_int8_sites.site_kinds(quantized) if sites is None else sites  # found once
        self.made: dict[tuple[str, ...], Any] = {}
        self._switched = None  # the screening model (switch_model), built on the first screen

    def quantize_all(self):
        return self.quantized

    def with_splits(self, splits: dict[str, dict], names: list[str]) -> _KeepOutOfInt8:
        """These hooks (candidates, int8 sites: not walked again) with ``names`` split by ``splits``."""
        return _KeepOutOfInt8(self.quantized, self.base, {n: splits[n] for n in names}, self.candidates, self.sites)

    def screen_model(self, name: str) -> Switched:
        """The model with only ``name`` kept out of int8, for the ranking: the one screening model
        (:func:`switch_model`, compiled once for every candidate) with a one-hot switch."""
        if self._switched is None:
            self._switched = switch_model(self.quantized, self.base, self.candidates, self.splits, self.sites)
        switch = np.zeros(len(self.candidates), dtype=np.float32)
        switch[self.candidates.index(name)] = 1.0
        return Switched(self._switched, switch)

    def keep_in_float(self, names: list[str]):
        self._switched = None  # the ranking is done: free the screening model
        key = tuple(names)
        if key not in self.made:
            self.made.clear()
            split = {n: self.splits[n] for n in names if n in self.splits}
            model = outlier_split.split_matmuls(self.quantized, self.base, split) if split else self.quantized
            whole = [n for n in names if n not in self.splits and n not in self.sites]
            model = float_matmuls(model, self.base, whole) if whole else model
            in_sites = [n for n in names if n in self.sites]
            self.made[key] = ov_int8_sites.keep_in_float(model, self.base, in_sites) if in_sites else model
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


def _narrow_to_splits(hooks: _KeepOutOfInt8, scorer, result, model, splits: dict, opts: OvFidelityOptions):
    """Kept ops with outlier channels split where the model still counts (``fidelity_search.narrow``): model, hooks."""

    def model_for(swapped: list[str]):
        return hooks.with_splits(splits, swapped).keep_in_float(result.kept_float)

    names = [n for n in result.kept_float if n in splits]
    model, swapped = fidelity_search.narrow(scorer, opts.search, result, model, names, model_for)
    return model, hooks.with_splits(splits, swapped)


def build_qint8_fidelity(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """NNCF static int8 with the fewest ranked weight MatMuls kept out of int8 (see the module doc)."""
    opts = kit.options_of(spec, OvFidelityOptions)
    start = time.perf_counter()
    model = read_base(ctx)
    samples = calibration_samples(ctx, model, opts.nncf)
    texts, strata = fidelity_search.search_texts(ctx)
    with kit.backend_errors("OpenVINO fidelity int8"):
        scorer = OvScorer(ctx, texts, fidelity_search.calibration_reference(ctx, texts), strata)
        all_int8 = quantize_static(ctx, model, samples, opts.nncf)
        sites = ov_int8_sites.site_kinds(all_int8)
        fixed = [n for n, kind in sites.items() if kind in opts.float_sites]  # in float in every model scored
        int8 = ov_int8_sites.keep_in_float(all_int8, model, fixed) if fixed else all_int8
        int8_sites = {n: k for n, k in sites.items() if n not in fixed}  # site_kinds(int8): the fixed are float
        kinds = weight_matmuls(model) | int8_sites
        names = [n for n, kind in kinds.items() if kind in opts.candidate_kinds]
        hooks = _KeepOutOfInt8(int8, model, {}, names, int8_sites)
        quantized, result = fidelity_search.search(hooks, scorer, opts.search)
        if result.reached:  # each kept op with outlier channels tries the split unit, kept where the model holds
            kept = [n for n in result.kept_float if kinds[n] in MATMUL_KINDS]  # a split is a MatMul's unit
            splits = outlier_split.plan(int8, model, samples, kept, opts.outlier_ratio, opts.max_outlier_channels)
            if splits:
                quantized, hooks = _narrow_to_splits(hooks, scorer, result, quantized, splits, opts)
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
            "int8 sites kept in float (weight MatMuls: fp32 weight, bias and activation; attention scores: "
            "their int8 query / key inputs bypassed; embedding tables: the fp32 table); then each kept MatMul with "
            "outlier input channels narrowed to those channels in float where the model still counts",
            **nncf_record(opts.nncf),
            "outlier_ratio": float(opts.outlier_ratio),
            "max_outlier_channels": int(opts.max_outlier_channels),
            "candidate_kinds": list(opts.candidate_kinds),
            "candidates_by_kind": {k: sum(1 for n in names if kinds[n] == k) for k in opts.candidate_kinds},
            "sites_in_float": [{"op": n, "kind": sites[n], "why": FIXED_WHY} for n in fixed],
            "ops_in_float": ops_in_float,
            "ops_split": ops_split,
            "search": search_record.search_record(result, opts.search),
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
