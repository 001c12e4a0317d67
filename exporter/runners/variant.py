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
Without it, each library's defaults apply, as a user gets them (the export's parity check).
"""

from __future__ import annotations

import logging
from pathlib import Path

from exporter.errors import UsageError

# optimum-intel guesses whether a folder already holds an IR by asking the Hub cache for its revision; for a
# local artifact that guess fails and it logs a two-line warning with the exception ("expected str, bytes or
# os.PathLike object, not NoneType") although the load goes on with the recorded file. Not the user's problem.
_OV_GUESS = ("optimum.intel.openvino.modeling_base", "Could not infer whether the model was already converted")


class _DropLine(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def load_variant(artifact: Path, variant: dict, kind: str | None, *, threads: int | None = None):
    """The variant ``variant`` (its manifest entry: ``id`` and ``load``) of the artifact at ``artifact``.

    Raises:
        UsageError: the variant's backend is not one this tool loads.
    """
    backend = variant["load"]["backend"]
    load = _LOADERS.get(backend)
    if load is None:
        raise UsageError(f"variant {variant['id']} has backend {backend!r}, which this tool cannot load.", "")
    return load(Path(artifact), variant, kind, threads)


def _through_model_class(artifact: Path, variant: dict, kind: str | None, threads: int | None):
    """onnx / openvino: the kind's class with ``backend=``, or the runtime for a StaticEmbedding graph."""
    from exporter import kinds
    from exporter.builders import export_onnx_static

    load = variant["load"]
    backend, file_name = load["backend"], load.get("file_name")
    model_kwargs = {**(load.get("model_kwargs") or {}), **_pinned(backend, load, threads)}
    if export_onnx_static.is_static(artifact):  # ST has no ONNX backend for StaticEmbedding: the runtime serves it
        truncate_dim = load.get("truncate_dim")
        return export_onnx_static.load_variant(artifact, backend, file_name, truncate_dim, **model_kwargs)
    if backend == "openvino":
        _quiet(*_OV_GUESS)
    kwargs = {"file_name": file_name, **model_kwargs} if file_name else model_kwargs
    extra = {"truncate_dim": load["truncate_dim"]} if load.get("truncate_dim") else {}
    return kinds.get(kind).model_cls()(
        str(artifact), device="cpu", backend=backend, model_kwargs=kwargs, local_files_only=True, **extra
    )


def _quiet(logger: str, prefix: str) -> None:
    """Drop one upstream log line (by its start) from ``logger``, once per process."""
    log = logging.getLogger(logger)
    if not any(isinstance(f, _DropLine) and f.prefix == prefix for f in log.filters):
        log.addFilter(_DropLine(prefix))


def _own_loader(artifact: Path, variant: dict, kind: str | None, threads: int | None):
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
