"""``onnx-qint8-fidelity``: ONNX Runtime dynamic int8 with the most sensitive weight MatMuls kept in float.

Dynamic int8 of the base graph's weight MatMuls (per channel, s8 weights, u8 activations; the embedding
Gathers stay float), then ``exporter.builders.fidelity_search`` keeps the MatMuls whose quantisation hurts
most in float until the *calibration* set clears the int8 gate with a margin; the probe set is never used
for tuning. Dynamic int8 has no calibration to redo, so each step re-quantises the graph with the kept
MatMuls excluded (~1 s on all-MiniLM-L6-v2). The manifest records every MatMul kept out of int8 with the
measured reason (``nodes_in_float``) and the search (``search``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporter.builders import fidelity_search, kit
from exporter.builders.context import BuildContext, BuildResult
from exporter.builders.export_onnx_optimize import base_graph, derived_from, op_counts
from exporter.builders.export_onnx_quantize import calibration_record, int8_record, quiet, versions
from exporter.builders.fidelity_search import SearchResult
from exporter.builders.options import OnnxFidelityOptions
from exporter.errors import ExportFailed
from exporter.variants import VariantSpec


def quantizable_nodes(path: Path, op_types: tuple[str, ...]) -> list[str]:
    """Names of the nodes dynamic quantisation would touch: ``op_types`` with a constant second input."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    names = []
    for node in graph.node:
        if node.op_type not in op_types:
            continue
        if node.op_type == "MatMul" and not (len(node.input) > 1 and node.input[1] in consts):
            continue
        if not node.name:
            raise ExportFailed("the base graph has unnamed nodes; the sensitivity search needs node names.")
        names.append(node.name)
    return names


def quantize_dynamic_to(base: Path, out: Path, opts: OnnxFidelityOptions, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(
            str(base),
            str(out),
            op_types_to_quantize=list(opts.op_types),
            per_channel=opts.per_channel,
            reduce_range=opts.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            extra_options={"MatMulConstBOnly": True},
        )


class OnnxScorer(fidelity_search.Scorer):
    """Encodes texts through a candidate graph exactly as serving does (ST batching: longest first, 32)."""

    def __init__(self, stage_dir: Path, texts: list[str], reference: np.ndarray):
        from exporter import runtime
        from exporter.source import st_modules

        super().__init__(texts, reference)
        self.facts = st_modules.read(stage_dir)
        self.tokenizer = runtime.load_tokenizer(self.facts)

    def encode(self, graph: Path, idx: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        from exporter import runtime

        session = runtime._OnnxSession(ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]))
        encoder = runtime.Encoder(session, self.tokenizer, self.facts, "onnx", graph)
        return encoder.encode([self.texts[i] for i in idx], batch_size=32, prompt="")


class _DynamicInt8:
    """The search hooks for ONNX Runtime dynamic int8: every model is a re-quantisation of the base graph
    into the scratch folder ``work``, with the kept MatMuls excluded (one graph on disk at a time)."""

    def __init__(self, base: Path, work: Path, opts: OnnxFidelityOptions):
        self.base, self.work, self.opts = base, work, opts
        self.candidates = quantizable_nodes(base, opts.op_types)
        self.made: list[Path] = []

    def quantize_all(self) -> Path:
        return self.keep_in_float([])

    def keep_in_float(self, names: list[str]) -> Path:
        self.clean()
        out = self.work / f"step-{len(self.made)}.onnx"
        quantize_dynamic_to(self.base, out, self.opts, names)
        self.made.append(out)
        return out

    def clean(self) -> None:
        for old in self.made:  # the builder re-quantises the final set itself
            old.unlink(missing_ok=True)


def sensitivity_search(base: Path, work: Path, scorer: OnnxScorer, opts: OnnxFidelityOptions) -> SearchResult:
    """``exporter.builders.fidelity_search.search`` over the graph's weight MatMuls (see the module doc)."""
    backend = _DynamicInt8(base, work, opts)
    try:
        _, result = fidelity_search.search(backend, scorer, opts.search)
    finally:
        backend.clean()
    return result


def build_fidelity(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Variant builder: dynamic int8 with the most sensitive MatMuls kept in float (measured, see above)."""
    from exporter.fsutil import sha256_file
    from exporter.quality.probes import texts_sha256

    opts = kit.options_of(spec, OnnxFidelityOptions)
    texts = fidelity_search.search_texts(ctx)
    base = base_graph(ctx)
    dest = kit.transformer_dir(ctx.stage_dir) / spec.file_name
    scorer = OnnxScorer(ctx.stage_dir, texts, fidelity_search.calibration_reference(ctx, texts))
    key = f"int8-sensitivity:{sha256_file(base)}:{opts!r}:{texts_sha256(texts)}"
    with kit.backend_errors("fidelity int8"), kit.scratch(dest.parent) as work:
        result: SearchResult = ctx.memo(key, lambda: sensitivity_search(base, work, scorer, opts))
        quantize_dynamic_to(base, work / dest.name, opts, result.kept_float)
        kit.place(work / dest.name, dest)
    build = {
        "derived_from": derived_from(base),
        "tool": "onnxruntime.quantization.quantize_dynamic + exporter sensitivity search",
        "versions": versions(),
        "optimization_level": None,
        "quantization": int8_record(opts, scheme="dynamic", fmt="QOperator", mode="IntegerOps"),
        "nodes_in_float": fidelity_search.kept_records(result, "node"),
        "not_quantized_op_types": "Gather (embedding tables), MatMuls of two activations: float by design",
        "search": fidelity_search.search_record(result, opts.search),
        "calibration": {**calibration_record(texts, len(texts)), "method": "sensitivity search (reference: torch)"},
        "op_counts": op_counts(dest),
    }
    return BuildResult(files=[dest], build=build)
