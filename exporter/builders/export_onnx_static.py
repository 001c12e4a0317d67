"""Static embeddings (model2vec-style ``StaticEmbedding``) as a small ONNX graph and its OpenVINO IR.

A StaticEmbedding model (e.g. sentence-transformers/static-retrieval-mrl-en-v1) is a tokenizer and one
vector per token: ``StaticEmbedding.forward`` is ``nn.EmbeddingBag(mode="mean")`` over the token ids of
each text, tokenised by the module's ``tokenizer.json`` *without* special tokens, untruncated unless the
file says so. The graph written here computes the same from padded ids and the attention mask, so one
batch of any lengths runs in one call:

    input_ids, attention_mask  int64 [batch, sequence]
    sentence_embedding         float [batch, dim] = sum_t W[ids_t] * mask_t / max(sum_t mask_t, 1)

An empty text gives the zero vector, as EmbeddingBag does for an empty bag. A Normalize module after the
StaticEmbedding is an L2 normalisation in the graph. The weights are read from the module's
``model.safetensors`` (``embedding.weight``, or model2vec's ``embeddings``) without torch.

sentence-transformers cannot load this graph (its StaticEmbedding has no ONNX backend), so the variants
are checked, benched and served through the torch-free runtime (``exporter.runtime``), which tokenises
as StaticEmbedding does; :class:`RuntimeModel` gives the pipeline, verify and bench an ``encode`` like
SentenceTransformer's. OpenVINO reads the same ONNX graph (``openvino.convert_model``).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from exporter.builders import kit
from exporter.errors import ExportFailed
from exporter.source import st_modules

ONNX_FILE = "onnx/model.onnx"
OPENVINO_FILE = "openvino/openvino_model.xml"
OPSET = 17
WEIGHT_KEYS = ("embedding.weight", "embeddings")  # ST's StaticEmbedding, model2vec
CHECK_MIN_COSINE = 0.9999


def read_weights(model_dir: Path):
    """The token vectors [vocab, dim] of the StaticEmbedding module of ``model_dir`` (float32 numpy)."""
    import numpy as np
    from safetensors.numpy import load_file

    facts = st_modules.read(model_dir)
    path = facts.tokenizer_dir / "model.safetensors"
    if not path.is_file():
        raise ExportFailed(
            f"the StaticEmbedding module has no model.safetensors in {path.parent}.",
            "Re-save the model with safe_serialization=True (StaticEmbedding weights are read without torch).",
        )
    tensors = load_file(str(path))
    key = next((k for k in WEIGHT_KEYS if k in tensors), None)
    if key is None:
        raise ExportFailed(f"{path} has tensors {sorted(tensors)}, none of {', '.join(WEIGHT_KEYS)}.", "")
    return np.asarray(tensors[key], dtype=np.float32)


def build_graph(weights, normalize: bool):
    """EmbeddingBag(mean) over the unpadded tokens, [+ L2 normalisation], as an ONNX model."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    batch_seq = ["batch_size", "sequence_length"]
    inits = [
        numpy_helper.from_array(weights, "embedding.weight"),
        numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.asarray([1], dtype=np.int64), "token_axis"),
        numpy_helper.from_array(np.asarray(1.0, dtype=np.float32), "one"),
    ]
    out = "sentence_embedding"
    mean = "mean" if normalize else out
    nodes = [
        helper.make_node("Gather", ["embedding.weight", "input_ids"], ["token_vectors"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask_3d"]),
        helper.make_node("Mul", ["token_vectors", "mask_3d"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "token_axis"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask_f", "token_axis"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["count_1"]),  # an empty bag: 0 / 1 = the zero vector
        helper.make_node("Div", ["summed", "count_1"], [mean]),
    ]
    if normalize:  # ST's Normalize: x / max(||x||, 1e-12)
        inits.append(numpy_helper.from_array(np.asarray(1e-12, dtype=np.float32), "eps"))
        nodes += [
            helper.make_node("ReduceL2", [mean], ["norm"], axes=[-1], keepdims=1),
            helper.make_node("Max", ["norm", "eps"], ["norm_eps"]),
            helper.make_node("Div", [mean, "norm_eps"], [out]),
        ]
    graph = helper.make_graph(
        nodes,
        "static_embedding",
        [helper.make_tensor_value_info(n, TensorProto.INT64, batch_seq) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch_size", int(weights.shape[1])])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="exporter")
    model.ir_version = 8
    return model


def _save_graph(model, dest: Path) -> list[Path]:
    """Write the graph at ``dest`` (temp + rename), with external data if over the limit."""
    import onnx

    from exporter.builders import external_data

    with kit.scratch(dest.parent, prefix=".static-") as tmp:
        big = model.ByteSize() > external_data.limit()
        onnx.save(model, str(tmp / dest.name), save_as_external_data=big, location=external_data.data_name(dest))
        return kit.place(tmp / dest.name, dest)


def _graph_for(ctx):
    facts = st_modules.read(ctx.source_dir)
    return build_graph(read_weights(ctx.source_dir), facts.normalize)


def check(reference, artifact: Path, file_name: str, backend: str = "onnx") -> dict[str, float]:
    """The graph through the torch-free runtime against ``SentenceTransformer.encode`` on a few texts."""
    import numpy as np

    from exporter import runtime
    from exporter.builders.kit import CHECK_TEXTS

    texts = [*CHECK_TEXTS, ""]
    ref = np.asarray(reference.encode(texts, convert_to_numpy=True, prompt=""), dtype=np.float64)
    served = runtime.load(artifact, file_name=file_name, backend=backend, truncate_dim=reference.truncate_dim)
    got = served.encode(texts, prompt="").astype(np.float64)
    if got.shape != ref.shape:
        raise ExportFailed(f"the static graph gives shape {got.shape}, torch {ref.shape}.", "A bug in the exporter.")
    low = float(kit.row_cosines(ref, got).min())  # an empty text: the zero vector on both sides agrees
    if not low >= CHECK_MIN_COSINE:
        raise ExportFailed(
            f"the StaticEmbedding graph disagrees with sentence-transformers (min cosine {low:.6f}).",
            "Report the model: its tokenizer or weights are not read as StaticEmbedding reads them.",
        )
    return {"runtime_min_cosine": low}


def build_static(ctx, spec):
    """Variant builder (``onnx`` for a StaticEmbedding model): the graph above at ``onnx/model.onnx``."""
    from exporter.builders.context import BuildResult

    start = time.perf_counter()
    model = _graph_for(ctx)
    files = _save_graph(model, ctx.stage_dir / ONNX_FILE)
    checks = check(ctx.reference_model(), ctx.stage_dir, ONNX_FILE)
    build = {
        "exporter": "exporter.builders.export_onnx_static (onnx.helper: Gather + masked mean, as StaticEmbedding's "
        "EmbeddingBag mean)",
        "graph": "StaticEmbedding [+ Normalize] inside; tokenised without special tokens by the runtime",
        "opset": OPSET,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["sentence_embedding"],
        "model": st_modules.read(ctx.source_dir).to_dict(),
        "embedding_dim": int(model.graph.output[0].type.tensor_type.shape.dim[1].dim_value),
        "served_by": "exporter.runtime (sentence-transformers has no ONNX backend for StaticEmbedding)",
        "build_seconds": round(time.perf_counter() - start, 2),
        **checks,
    }
    return BuildResult(files=files, build=build)


def build_static_openvino(ctx, spec):
    """Variant builder (``openvino`` for a StaticEmbedding model): the same graph as an OpenVINO IR."""
    import openvino as ov

    from exporter.builders.context import BuildResult
    from exporter.environment import package_versions

    start = time.perf_counter()
    with kit.scratch(ctx.stage_dir, prefix=".static-ov-") as tmp:
        graph = tmp / "model.onnx"
        _save_graph(_graph_for(ctx), graph)
        ir = ov.convert_model(str(graph))
    files = kit.save_ir(ir, ctx.stage_dir, spec.file_name)
    checks = check(ctx.reference_model(), ctx.stage_dir, spec.file_name, backend="openvino")
    build = {
        "export_source": "the StaticEmbedding ONNX graph (builders.export_onnx_static), openvino.convert_model",
        "precision": "fp32",
        "weights_dtype": "f32",
        "graph": "StaticEmbedding [+ Normalize] inside; served by exporter.runtime backend openvino",
        "inputs": sorted(p.get_any_name() for p in ir.inputs),
        "outputs": sorted(p.get_any_name() for p in ir.outputs),
        "build_seconds": round(time.perf_counter() - start, 2),
        "versions": package_versions(("openvino",)),
        **checks,
    }
    return BuildResult(files=files, build=build)


class RuntimeModel:
    """A built StaticEmbedding variant served by ``exporter.runtime``, with SentenceTransformer's ``encode``
    signature (what the fidelity check, ``verify`` and ``bench`` call) and the session where bench reads
    the provider: ``model[0].auto_model.session`` (ONNX Runtime) / ``.request`` (OpenVINO compiled model).
    ``truncate_dim`` (the variant's ``load.truncate_dim``) keeps the first N dimensions, as the reference's
    ``SentenceTransformer(truncate_dim=N)``: the graph itself gives every dimension."""

    def __init__(self, artifact: Path, backend: str, file_name: str, truncate_dim: int | None = None, **model_kwargs):
        from exporter import runtime

        facts = st_modules.read(Path(artifact))
        path = facts.transformer_dir / file_name
        if not path.is_file():
            raise ExportFailed(f"{path} does not exist.", "Check the artifact folder and the variant's file name.")
        session: runtime.Session
        if backend == "onnx":
            import onnxruntime as ort

            options = model_kwargs.get("session_options") or ort.SessionOptions()
            provider = model_kwargs.get("provider", "CPUExecutionProvider")
            raw = ort.InferenceSession(str(path), sess_options=options, providers=[provider])
            session = runtime._OnnxSession(raw)
        elif backend == "openvino":
            import openvino as ov

            config = {"INFERENCE_PRECISION_HINT": "f32", **(model_kwargs.get("ov_config") or {})}
            raw = ov.Core().compile_model(str(path), model_kwargs.get("device", "CPU"), config)
            session = runtime._OpenVinoSession(raw)
        else:
            raise ExportFailed(f"StaticEmbedding variants are served by onnx or openvino, not {backend}.", "")
        self.encoder = runtime.Encoder(session, runtime.load_tokenizer(facts), facts, backend, path)
        self.encoder.truncate_dim = truncate_dim
        self._module = SimpleNamespace(auto_model=SimpleNamespace(session=raw, request=raw))

    def __getitem__(self, index: int):
        return self._module

    def encode(self, sentences, batch_size: int = 32, **_ignored):
        return self.encoder.encode(list(sentences), batch_size=batch_size)


def load_variant(
    artifact: Path, backend: str, file_name: str | None, truncate_dim: int | None = None, **model_kwargs
) -> RuntimeModel:
    default = OPENVINO_FILE if backend == "openvino" else ONNX_FILE
    return RuntimeModel(Path(artifact), backend, file_name or default, truncate_dim, **model_kwargs)
