"""Servers that do not run here (TEI, OVMS, Triton), emulated on a layout's own files by their documented contract,
as consumers labelled emulated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from exporter.quality.consumers import BATCH, EMBEDDER, Consumer, Target


# ------------------------------------------------------------------ servers that do not run here: emulated
def _found(pattern: str, text: str, where: str, flags: int = 0) -> str:
    """The first group of ``pattern`` in ``text`` (a server config file named ``where``); RuntimeError without it."""
    match = re.search(pattern, text, flags)
    if match is None:
        raise RuntimeError(f"{where} has no {pattern!r}")
    return match.group(1)


def _tei(target: Target, texts: list[str]) -> np.ndarray:
    """text-embeddings-inference's ONNX Runtime backend, as its source documents it: ``onnx/model.onnx``,
    tokenizer.json truncated at the model's max_seq_length (``--auto-truncate``), the ``sentence_embedding``
    output when the graph has one (else 1_Pooling/config.json's pooling). The runtime does exactly that."""
    from exporter import runtime

    enc = runtime.load(target.artifact, "onnx/model.onnx", "onnx", threads=target.threads)
    if not enc.pooling_in_graph:
        raise RuntimeError("TEI would pool last_hidden_state itself; this graph has no sentence_embedding")
    return enc.encode(texts, BATCH, prompt="")


def ovms_embeddings(folder: Path, texts: list[str]) -> np.ndarray:
    """OVMS's embeddings data path on a folder's own files: the tokenizer IR, the model IR compiled with
    graph.pbtxt's plugin_config, the first rank-3 output pooled as graph.pbtxt says, L2-normalised if it
    says so."""
    import openvino as ov
    import openvino_tokenizers  # noqa: F401 - registers the tokenizer ops

    graph = (folder / "graph.pbtxt").read_text(encoding="utf-8")
    pooling = _found(r"pooling: (\w+)", graph, "graph.pbtxt")
    normalize = _found(r"normalize_embeddings: (\w+)", graph, "graph.pbtxt") == "true"
    plugin_config = json.loads(json.loads(_found(r"plugin_config: (\".*\")", graph, "graph.pbtxt")))
    if pooling not in ("CLS", "MEAN"):
        raise RuntimeError(f"the emulation pools CLS or MEAN, not {pooling}")
    core = ov.Core()
    tokenizer = core.compile_model(str(folder / "openvino_tokenizer.xml"), "CPU")
    model = core.compile_model(str(folder / "openvino_model.xml"), "CPU", plugin_config)
    first3 = next(p for p in model.outputs if p.get_partial_shape().rank.get_length() == 3)
    out = []
    for start in range(0, len(texts), BATCH):
        tokens = {k.get_any_name(): v for k, v in tokenizer(texts[start : start + BATCH]).items()}
        feeds = {p.get_any_name(): tokens[p.get_any_name()] for p in model.inputs}
        hidden, mask = model(feeds)[first3], tokens["attention_mask"][..., None]
        vectors = hidden[:, 0] if pooling == "CLS" else (hidden * mask).sum(1) / mask.sum(1)
        out.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if normalize else vectors)
    return np.concatenate(out).astype(np.float32)


def _ovms(target: Target, texts: list[str]) -> np.ndarray:
    return ovms_embeddings(target.artifact, texts)


def _triton(target: Target, texts: list[str]) -> np.ndarray:
    """Triton on the folder's model repository, as config.pbtxt declares it, with the client-side tokenizer
    contract written there: requests of at most max_batch_size texts, the declared inputs only, tokenised
    with the folder's tokenizer.json (the runtime, which also pools a graph without sentence_embedding)."""
    from exporter import runtime

    (model_dir,) = [p for p in target.artifact.iterdir() if p.is_dir()]
    config = (model_dir / "config.pbtxt").read_text(encoding="utf-8")
    max_batch = int(_found(r"^max_batch_size: (\d+)$", config, "config.pbtxt", re.M))
    declared = re.findall(r'name: "([^"]+)"', config.split("output [")[0].split("input [", 1)[1])
    if max_batch < 1 or "dynamic_batching" not in config:
        raise RuntimeError(f"config.pbtxt does not batch (max_batch_size {max_batch})")
    (graph,) = [p for p in (model_dir / "1").iterdir() if p.suffix in (".onnx", ".xml")]
    backend = "onnx" if graph.suffix == ".onnx" else "openvino"
    enc = runtime.load(model_dir, f"1/{graph.name}", backend, threads=target.threads)
    if sorted(declared) != sorted(enc.session.input_names):
        raise RuntimeError(f"config.pbtxt declares inputs {declared}, the graph takes {enc.session.input_names}")
    return enc.encode(texts, max_batch, prompt="")


EMULATED = "emulated (documented contract)"


EMULATED_CONSUMERS: tuple[Consumer, ...] = (
    Consumer("tei", frozenset({"onnx"}), frozenset({EMBEDDER}), None, EMULATED, "", None, run_once=_tei),
    Consumer("ovms", frozenset({"openvino"}), frozenset({EMBEDDER}), None, EMULATED, "", None, run_once=_ovms),
    Consumer(
        "triton", frozenset({"onnx", "openvino"}), frozenset({EMBEDDER}), None, EMULATED, "", None, run_once=_triton
    ),
)
