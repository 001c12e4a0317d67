"""Runners: the torch reference or one variant, loaded with a fixed thread count, with the kind's ``encode``
and a read-back of what actually runs it. What verify's fresh process, bench and the consumers run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.runners.reference import encoder, load_reference
from exporter.runners.variant import load_variant

REFERENCE = "torch"  # the reference runner's name


@dataclass
class Runner:
    """Something that encodes texts: the torch reference or one variant."""

    name: str
    backend: str
    encode: Callable[[list, int], object]  # (inputs, batch_size) -> outputs, the kind's output function
    runtime: Callable[[], dict]  # what actually runs it (provider / device / threads), read after warm-up


def reference_runner(
    source_dir: Path,
    kind: str | None,
    threads: int,
    *,
    max_seq_length: int | None = None,
    truncate_dim: int | None = None,
) -> Runner:
    """The torch model at the pinned source, with the artifact's max_seq_length (the export may override it)
    and Matryoshka truncate_dim, on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    model = load_reference(kind, source_dir, max_seq_length=max_seq_length, truncate_dim=truncate_dim)
    return Runner(REFERENCE, "torch", encoder(model, kind), _torch_runtime)


def variant_runner(artifact: Path, variant: dict, kind: str | None, threads: int) -> Runner:
    """One variant (its manifest entry) on ``threads`` threads, as users of its model class load it."""
    model = load_variant(artifact, variant, kind, threads=threads)
    backend = variant["load"]["backend"]
    return Runner(variant["id"], backend, encoder(model, kind), lambda: _RUNTIMES[backend](model))


def _torch_runtime(model=None) -> dict:
    import torch

    return {"engine": "torch", "threads": torch.get_num_threads()}


def _onnx_runtime(model) -> dict:
    session = model[0].auto_model.session
    return {
        "engine": "onnxruntime",
        "provider": session.get_providers()[0],
        "providers": session.get_providers(),
        "threads": session.get_session_options().intra_op_num_threads,
        "spinning": session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning"),
    }


def _openvino_runtime(model) -> dict:
    compiled = model[0].auto_model.request
    return {
        "engine": "openvino",
        "device": ",".join(compiled.get_property("EXECUTION_DEVICES")),
        "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
    }


_RUNTIMES: dict[str, Callable[..., dict]] = {
    "onnx": _onnx_runtime,
    "openvino": _openvino_runtime,
    "torch": _torch_runtime,
}
