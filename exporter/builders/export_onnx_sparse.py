"""SPLADE inside the ONNX graph: the sparse encoder's base graph gets ``SpladePooling`` as an extra output.

The base graph of a sparse encoder is the masked-LM transformer exported by optimum (task ``fill-mask``,
output ``logits`` [batch, sequence, vocab]: what sentence-transformers' ``backend="onnx"`` reads through
``ORTModelForMaskedLM`` before running ``SpladePooling`` in torch). This module appends the pooling to
that graph as a second output, so the torch-free runtime (``exporter.runtime``) serves sparse vectors:

    sparse_embedding [batch, vocab] = pool_over_tokens( act( logits * attention_mask ) )

with, as ``sentence_transformers.sparse_encoder.modules.SpladePooling.forward`` computes them,
``act`` = ``log1p(relu(x))`` (``activation_function: relu``) or ``log1p(log1p(relu(x)))`` (``log1p_relu``,
OpenSearch's models) and ``pool_over_tokens`` = max or sum over the sequence axis (``pooling_strategy``).
Padding positions give 0 before the activation, as in ST. ST's ``chunk_size`` only bounds its memory
use (the chunks are combined with the same max / sum), so the graph ignores it. ``log1p(x)`` is written
``Log(1 + x)``: the same value in float32 except below ~1e-7, far under any gate threshold.

The vectors are not pruned in the graph (pruning is lossy and irreversible); ``exporter.runtime`` prunes
on request (``top_k`` as ST's ``max_active_dims``, ``threshold``).
"""

from __future__ import annotations

from pathlib import Path

from exporter.builders import kit
from exporter.errors import ExportFailed
from exporter.fsutil import atomic_path
from exporter.source.st_modules import ACTIVATIONS, SpladeFacts, read_splade

LOGITS_OUTPUT = "logits"
SPARSE_OUTPUT = "sparse_embedding"
CHECK_MIN_COSINE = 0.9999


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _splade_nodes(facts: SpladeFacts, opset: int) -> tuple[list, list]:
    """Nodes and constant initializers computing ``SPARSE_OUTPUT`` from ``logits`` and ``attention_mask``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    p = "splade_pooling/"
    inits = [
        numpy_helper.from_array(np.asarray([-1], dtype=np.int64), p + "last_axis"),
        numpy_helper.from_array(np.asarray([1], dtype=np.int64), p + "token_axis"),
        numpy_helper.from_array(np.asarray(1.0, dtype=np.float32), p + "one"),
    ]
    nodes = [
        helper.make_node("Cast", ["attention_mask"], [p + "mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [p + "mask_f", p + "last_axis"], [p + "mask_3d"]),
        helper.make_node("Mul", [LOGITS_OUTPUT, p + "mask_3d"], [p + "masked"]),
        helper.make_node("Relu", [p + "masked"], [p + "act_0"]),
    ]
    for i in range(ACTIVATIONS[facts.activation]):  # log1p, once or twice
        nodes += [
            helper.make_node("Add", [f"{p}act_{i}", p + "one"], [f"{p}plus1_{i}"]),
            helper.make_node("Log", [f"{p}plus1_{i}"], [f"{p}act_{i + 1}"]),
        ]
    last = f"{p}act_{ACTIVATIONS[facts.activation]}"
    op = "ReduceMax" if facts.strategy == "max" else "ReduceSum"
    axes_as_input = opset >= (18 if op == "ReduceMax" else 13)
    if axes_as_input:
        nodes.append(helper.make_node(op, [last, p + "token_axis"], [SPARSE_OUTPUT], keepdims=0))
    else:
        nodes.append(helper.make_node(op, [last], [SPARSE_OUTPUT], axes=[1], keepdims=0))
    return nodes, inits


def add_splade_pooling(path: Path, facts: SpladeFacts) -> None:
    """Append SpladePooling to the graph at ``path`` as output ``sparse_embedding`` (external data untouched)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path), load_external_data=False)
    outputs = {o.name: o for o in model.graph.output}
    names = {i.name for i in model.graph.input}
    if LOGITS_OUTPUT not in outputs or "attention_mask" not in names:
        raise ExportFailed(
            f"the masked-LM graph has outputs {sorted(outputs)} and inputs {sorted(names)}; SpladePooling "
            "needs `logits` and `attention_mask`.",
            "This is a bug in the exporter.",
        )
    if SPARSE_OUTPUT in outputs:
        return
    nodes, inits = _splade_nodes(facts, _opset(model))
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    vocab = outputs[LOGITS_OUTPUT].type.tensor_type.shape.dim[2]
    width = vocab.dim_value if vocab.dim_value else (vocab.dim_param or "vocab_size")
    model.graph.output.append(helper.make_tensor_value_info(SPARSE_OUTPUT, TensorProto.FLOAT, ["batch_size", width]))
    onnx.checker.check_model(model)
    with atomic_path(path, suffix=".onnx") as tmp:  # renamed over the graph: never written through
        onnx.save(model, str(tmp))


def verify(model, artifact_dir: Path, file_name: str) -> dict[str, float]:
    """The graph's ``sparse_embedding`` through the torch-free runtime against ``SparseEncoder.encode``."""
    from exporter import runtime
    from exporter.builders.kit import CHECK_TEXTS

    texts = list(CHECK_TEXTS)
    encoder = runtime.load(artifact_dir, file_name=file_name)
    reference = model.encode(texts, convert_to_tensor=True, convert_to_sparse_tensor=False, prompt="")
    reference = reference.detach().cpu().float().numpy()
    got = encoder.encode(texts, prompt="")
    if got.shape != reference.shape:
        raise ExportFailed(
            f"the graph's {SPARSE_OUTPUT} has shape {got.shape}, torch gives {reference.shape}.",
            "This is a bug in the exporter.",
        )
    low = float(kit.row_cosines(reference, got).min())  # two empty vectors (nothing activated) agree
    if not low >= CHECK_MIN_COSINE:
        raise ExportFailed(
            f"the graph's {SPARSE_OUTPUT} disagrees with torch SpladePooling (min cosine {low:.6f}).",
            "Report the model if it persists.",
        )
    return {"runtime_min_cosine": low}


def build_sparse_graph(ctx, spec):
    """Variant builder (``kinds`` SPARSE_ENCODER): optimum's fill-mask graph + SpladePooling as an output."""
    from exporter.builders.context import BuildResult
    from exporter.builders.export_onnx import ONNX_FILE, build_task_graph

    splade = read_splade(ctx.source_dir)
    if splade is None:
        raise ExportFailed(
            "the sparse encoder has no SpladePooling module; only SPLADE sparse encoders export to ONNX.",
            "Export a SPLADE model (Transformer fill-mask + SpladePooling).",
        )
    result = build_task_graph(ctx, spec)
    graph = kit.transformer_dir(ctx.stage_dir, require=True) / ONNX_FILE
    add_splade_pooling(graph, splade)
    file_name = graph.relative_to(kit.transformer_dir(ctx.stage_dir, require=True)).as_posix()
    checks = verify(ctx.reference_model(), ctx.stage_dir, file_name)
    build = dict(result.build)
    build.update(
        graph="masked-LM transformer (output logits, read by sentence-transformers' ONNX backend) + "
        f"SpladePooling inside the graph (output {SPARSE_OUTPUT}, served by the torch-free runtime)",
        outputs=[*build.get("outputs", []), SPARSE_OUTPUT],
        splade_pooling=splade.to_dict(),
        pruning=None,  # the graph's vectors are complete; exporter.runtime prunes on request (top_k/threshold)
        **checks,
    )
    return BuildResult(files=result.files, build=build)
