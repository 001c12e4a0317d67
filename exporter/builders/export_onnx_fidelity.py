"""``onnx-qint8-fidelity``: ONNX Runtime dynamic int8 with the most sensitive weight MatMuls kept in float.

Dynamic int8 of the base graph's weight MatMuls (per channel, s8 weights, u8 activations; the embedding
Gathers stay float), then ``exporter.builders.fidelity_search`` keeps the MatMuls whose quantisation hurts
most in float until the *calibration* set clears the int8 gate with a margin; the probe set is never used
for tuning. The graph is quantised once; each candidate the search scores is that graph with the kept
MatMuls put back in float by graph surgery (:func:`float_matmuls`), the graph ``quantize_dynamic`` makes
with those nodes excluded (the same outputs bit for bit; re-quantising took ~1 s a step, 50 steps on
all-MiniLM-L6-v2), scored from memory. The variant's own graph is ``quantize_dynamic``'s, with the kept
MatMuls excluded. The manifest records every MatMul kept out of int8 with the measured reason
(``nodes_in_float``) and the search (``search``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from exporter.builders import fidelity_search, kit, search_record, search_scorer
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


class OnnxScorer(search_scorer.Scorer):
    """Encodes texts through a candidate graph exactly as serving does (ST batching: longest first, 32)."""

    def __init__(self, stage_dir: Path, texts: list[str], reference: np.ndarray, strata: list[str] | None = None):
        from exporter import runtime
        from exporter.source import st_modules

        super().__init__(texts, reference, strata)
        self.facts = st_modules.read(stage_dir)
        self.tokenizer = runtime.load_tokenizer(self.facts)
        self._encoder: tuple[Path | bytes, Any] | None = None  # (graph, its encoder): a scan's batches share one

    def encode(self, graph: Path | bytes, idx: np.ndarray) -> np.ndarray:
        """``graph``: a file, or a serialised model (what :class:`_DynamicInt8` scores from memory)."""
        import onnxruntime as ort

        from exporter import runtime

        if self._encoder is None or self._encoder[0] is not graph:
            source = graph if isinstance(graph, bytes) else str(graph)
            session = runtime._OnnxSession(ort.InferenceSession(source, providers=["CPUExecutionProvider"]))
            path = graph if isinstance(graph, Path) else Path("fidelity-candidate.onnx")  # named in errors only
            self._encoder = (graph, runtime.Encoder(session, self.tokenizer, self.facts, "onnx", path))
        return self._encoder[1].encode([self.texts[i] for i in idx], batch_size=search_scorer.BATCH, prompt="")


class NotQuantizedHere(Exception):
    """A MatMul :func:`float_matmuls` cannot find in the quantised graph as ``quantize_dynamic`` writes it."""


def _quantized_group(nodes: list, producer: dict[str, int], output: str) -> list[int]:
    """Indices of the nodes ``quantize_dynamic`` (IntegerOps) put in place of the MatMul writing ``output``:
    its ``Mul(Cast(MatMulInteger(..)), Mul(scales))``, MatMulInteger first; NotQuantizedHere otherwise."""

    def made_by(tensor: str, op_type: str) -> int:
        i = producer.get(tensor)
        if i is None or nodes[i].op_type != op_type:
            raise NotQuantizedHere(output)
        return i

    mul = made_by(output, "Mul")
    if len(nodes[mul].input) != 2:
        raise NotQuantizedHere(output)
    cast, scales = made_by(nodes[mul].input[0], "Cast"), made_by(nodes[mul].input[1], "Mul")
    return [made_by(nodes[cast].input[0], "MatMulInteger"), cast, scales, mul]


def float_matmuls(quantized, base, names: list[str]):
    """``quantized`` (``quantize_dynamic`` of ``base``) with the MatMuls ``names`` put back in float: each
    one's integer group replaced by the base graph's node and float weight, and the activation quantisers
    and quantised weights nothing reads any more dropped. That is the graph ``quantize_dynamic`` makes with
    ``nodes_to_exclude=names``, but for the order of its nodes (ONNX Runtime sorts them itself); the
    outputs are the same bit for bit (tests/builders/test_onnx_variants.py)."""
    import onnx

    base_nodes = {n.name: n for n in base.graph.node}
    nodes = list(quantized.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    floated: dict[int, onnx.NodeProto] = {}  # MatMulInteger's index -> the float node it stands for
    dropped: set[int] = set()
    for name in names:
        group = _quantized_group(nodes, producer, base_nodes[name].output[0])
        floated[group[0]] = base_nodes[name]
        dropped.update(group)
    kept = []
    for i, node in enumerate(nodes):
        if i in floated:
            kept.append(floated[i])
        elif i not in dropped:
            kept.append(node)
    outputs = {o.name for o in quantized.graph.output}
    while True:  # an activation quantiser whose every reader went back to float goes too
        read = {t for n in kept for t in n.input} | outputs
        live = [n for n in kept if n.op_type != "DynamicQuantizeLinear" or read.intersection(n.output)]
        if len(live) == len(kept):
            break
        kept = live
    read = {t for n in kept for t in n.input}
    inits = [t for t in quantized.graph.initializer if t.name in read]
    have = {t.name for t in inits}
    inits += [t for t in base.graph.initializer if t.name in read and t.name not in have]
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    del model.graph.node[:], model.graph.initializer[:]
    model.graph.node.extend(kept)
    model.graph.initializer.extend(inits)
    return model


class _DynamicInt8:
    """The search hooks for ONNX Runtime dynamic int8: the all-int8 graph is quantised once into the scratch
    folder ``work``; a model with MatMuls kept in float is made from it by :func:`float_matmuls` and scored
    from memory (a re-quantisation with them excluded when the surgery does not apply, or the serialised
    graph would pass protobuf's 2 GB)."""

    def __init__(self, base: Path, work: Path, opts: OnnxFidelityOptions):
        self.base, self.work, self.opts = base, work, opts
        self.candidates = quantizable_nodes(base, opts.op_types)
        self._models: tuple[Any, Any] | None = None  # (quantised, base) onnx ModelProtos, after quantize_all

    def quantize_all(self) -> Path:
        import onnx

        out = self.work / "all-int8.onnx"
        quantize_dynamic_to(self.base, out, self.opts, [])
        self._models = (onnx.load(str(out)), onnx.load(str(self.base)))
        return out

    def keep_in_float(self, names: list[str]) -> Path | bytes:
        if self._models is not None:
            from google.protobuf.message import EncodeError

            try:
                return float_matmuls(*self._models, names).SerializeToString()
            except (NotQuantizedHere, ValueError, EncodeError):  # ValueError: over protobuf's 2 GB
                pass
        out = self.work / "step.onnx"
        quantize_dynamic_to(self.base, out, self.opts, names)
        return out


def sensitivity_search(base: Path, work: Path, scorer: OnnxScorer, opts: OnnxFidelityOptions) -> SearchResult:
    """``exporter.builders.fidelity_search.search`` over the graph's weight MatMuls (see the module doc)."""
    _, result = fidelity_search.search(_DynamicInt8(base, work, opts), scorer, opts.search)
    return result


def build_fidelity(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Variant builder: dynamic int8 with the most sensitive MatMuls kept in float (measured, see above)."""
    from exporter.fsutil import sha256_file
    from exporter.quality.probes import texts_sha256

    opts = kit.options_of(spec, OnnxFidelityOptions)
    texts, strata = fidelity_search.search_texts(ctx)
    base = base_graph(ctx)
    dest = kit.transformer_dir(ctx.stage_dir) / spec.file_name
    scorer = OnnxScorer(ctx.stage_dir, texts, fidelity_search.calibration_reference(ctx, texts), strata)
    facts = {"base": sha256_file(base), "options": opts.to_dict(), "texts": texts_sha256(texts)}
    with kit.backend_errors("fidelity int8"), kit.scratch(dest.parent) as work:
        search = lambda: sensitivity_search(base, work, scorer, opts)  # noqa: E731
        result: SearchResult = ctx.memo("int8-sensitivity", search, **facts)
        quantize_dynamic_to(base, work / dest.name, opts, result.kept_float)
        kit.place(work / dest.name, dest)
    build = {
        "derived_from": derived_from(base),
        "tool": "onnxruntime.quantization.quantize_dynamic + exporter sensitivity search",
        "versions": versions(),
        "optimization_level": None,
        "quantization": int8_record(opts, scheme="dynamic", fmt="QOperator", mode="IntegerOps"),
        "nodes_in_float": search_record.kept_records(result, "node"),
        "not_quantized_op_types": "Gather (embedding tables), MatMuls of two activations: float by design",
        "search": search_record.search_record(result, opts.search),
        "calibration": {
            **calibration_record(ctx.usable_calibration_texts(), len(texts)),
            "tokenizer_samples": len(texts) - len(ctx.usable_calibration_texts()),
            "method": "sensitivity search (reference: torch) on the calibration texts and samples derived from "
            "the model's tokenizer (exporter.quality.tokenizer_texts)",
        },
        "op_counts": op_counts(dest),
    }
    return BuildResult(files=[dest], build=build)
