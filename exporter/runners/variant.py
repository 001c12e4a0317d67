"""A built variant, loaded the way its users load it; optionally pinned to a thread count on the CPU.

``load_variant(artifact, variant, kind)`` takes the variant's manifest entry (``id`` and ``load``: backend,
file_name, model_kwargs, truncate_dim) and returns a model with the kind's ``encode`` / ``predict``:

- ``onnx`` / ``openvino``: ``<Class>(artifact, backend=..., model_kwargs={"file_name": ..., **model_kwargs})``
  (``Class`` from the kind's ``KindSpec``), ``truncate_dim=N`` when the manifest records one; a
  StaticEmbedding graph, which sentence-transformers has no ONNX backend for, through ``exporter.runtime``
  (``export_onnx_static.RuntimeModel``);
- ``torch``: the variant's own loader (``VariantSpec.loader``: quanto int8).

``threads`` pins the load to the CPU with that many threads, as bench and verify measure: ONNX Runtime on
``CPUExecutionProvider`` with ``intra_op_num_threads`` (inter-op 1, idle threads not spinning, so one
runner's spin-wait does not eat the next runner's time), OpenVINO on ``CPU`` with ``INFERENCE_NUM_THREADS``
(one stream, latency hint; the variant's recorded ``ov_config`` on top), torch ``set_num_threads``.
Without it, each library's defaults apply, as a user gets them (the export's gate).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporter import upstream_noise
from exporter.errors import UsageError


def load_variant(artifact: Path, variant: Mapping[str, Any], kind: str | None, *, threads: int | None = None):
    """The variant ``variant`` (its manifest entry: ``id`` and ``load``) of the artifact at ``artifact``.

    Raises:
        UsageError: the variant's backend is not one this tool loads.
    """
    from exporter import kinds

    backend = variant["load"]["backend"]
    own = kinds.get(kind).variant_loader_fn() if backend in ("onnx", "openvino") else None
    if own is not None:  # a graph no sentence-transformers backend loads (ColBERT): the kind's runtime loader
        return own(Path(artifact), variant, kind, threads)
    load = _LOADERS.get(backend)
    if load is None:
        raise UsageError(f"variant {variant['id']} has backend {backend!r}, which this tool cannot load.", "")
    return load(Path(artifact), variant, kind, threads)


def _through_model_class(artifact: Path, variant: Mapping[str, Any], kind: str | None, threads: int | None):
    """onnx / openvino: the kind's class with ``backend=``, or the runtime for a StaticEmbedding graph."""
    from exporter import kinds, support

    load = variant["load"]
    backend, file_name = load["backend"], load.get("file_name")
    model_kwargs = {**(load.get("model_kwargs") or {}), **_pinned(backend, load, threads)}
    rule = support.find(artifact, kind)
    own = rule.loader_fn() if rule is not None else None
    if own is not None:  # a graph no sentence-transformers backend loads (StaticEmbedding): the rule's loader
        return own(artifact, backend, file_name, load.get("truncate_dim"), **model_kwargs)
    upstream_noise.quiet()
    kwargs = {"file_name": file_name, **model_kwargs} if file_name else model_kwargs
    extra = {"truncate_dim": load["truncate_dim"]} if load.get("truncate_dim") else {}
    return kinds.get(kind).model_cls()(
        str(artifact), device="cpu", backend=backend, model_kwargs=kwargs, local_files_only=True, **extra
    )


def _own_loader(artifact: Path, variant: Mapping[str, Any], kind: str | None, threads: int | None):
    """torch: the variant's own loader (``VariantSpec.loader``), e.g. quanto int8 as a SentenceTransformer."""
    from exporter import variants

    if threads:
        import torch

        torch.set_num_threads(threads)
    model = variants.BY_ID[variant["id"]].loader_fn()(artifact, device="cpu")
    if variant["load"].get("truncate_dim"):
        model.truncate_dim = variant["load"]["truncate_dim"]
    return model


def _pinned(backend: str, load: dict, threads: int | None) -> dict:
    """The load options that pin ``backend`` to the CPU with ``threads`` threads ({} without ``threads``)."""
    if not threads:
        return {}
    if backend == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Interleaved runners share the cores: ORT's idle threads must not spin into the next runner's time.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return {"provider": "CPUExecutionProvider", "session_options": opts}
    ov_config = {"INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
    ov_config.update((load.get("model_kwargs") or {}).get("ov_config", {}))  # e.g. the f32 pin the manifest records
    return {"device": "CPU", "ov_config": ov_config}


_LOADERS = {"onnx": _through_model_class, "openvino": _through_model_class, "torch": _own_loader}
