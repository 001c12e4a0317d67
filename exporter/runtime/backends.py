"""The runtime's backends, as a table (``BACKENDS``): each opens a model file and returns a ``Session`` with
``input_names``, ``output_names``, ``providers`` and ``run(output_names, feeds)``. ONNX Runtime on the providers
asked for (checked against those installed), OpenVINO on the CPU with f32 inference pinned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from exporter.errors import UsageError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class Session(Protocol):
    @property
    def input_names(self) -> list[str]: ...
    @property
    def output_names(self) -> list[str]: ...
    @property
    def providers(self) -> list[str]: ...

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class _OnnxSession:
    session: Any

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        # What the session really runs on, in priority order (not what was asked for).
        return list(self.session.get_providers())

    @property
    def optional_input_names(self) -> list[str]:
        """Inputs with a default (initializers a caller may override), e.g. ``prompt_length``."""
        return [i.name for i in self.session.get_overridable_initializers()]

    def run(self, output_names, feeds):
        return self.session.run(output_names, feeds)


def _open_onnx(
    path: Path, providers: tuple[str, ...] | None = None, threads: int | None = None, precision: str | None = None
) -> Session:
    """An ONNX file on onnxruntime (``precision``: OpenVINO's hint, which an ONNX graph's own types decide)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:  # pinned as exporter.runners.variant pins a measured variant: idle threads do not spin
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = list(providers or DEFAULT_PROVIDERS)
    available = set(ort.get_available_providers())
    unknown = [p for p in wanted if p not in available]
    if unknown:
        raise UsageError(
            f"execution provider(s) {', '.join(unknown)} not available in this onnxruntime.",
            f"Available: {', '.join(sorted(available))}.",
        )
    return _OnnxSession(ort.InferenceSession(str(path), sess_options=options, providers=wanted))


@dataclass
class _OpenVinoSession:
    compiled: Any  # openvino.CompiledModel

    @property
    def input_names(self) -> list[str]:
        return [p.get_any_name() for p in self.compiled.inputs]

    @property
    def output_names(self) -> list[str]:
        return [p.get_any_name() for p in self.compiled.outputs]

    @property
    def providers(self) -> list[str]:
        return [f"OpenVINO:{d}" for d in self.compiled.get_property("EXECUTION_DEVICES")]

    def run(self, output_names, feeds):
        result = self.compiled.create_infer_request().infer(feeds)
        return [result[self.compiled.output(name)] for name in output_names]


def _open_openvino(
    path: Path, providers: tuple[str, ...] | None = None, threads: int | None = None, precision: str | None = None
) -> Session:
    """An OpenVINO IR (``.xml``) or ONNX file on the CPU, at the inference precision the variant records
    (``precision``: its ``INFERENCE_PRECISION_HINT``; f32 pinned when None, as the fp32 and int8 variants)."""
    import openvino as ov

    if precision not in (None, *PRECISION_HINTS):
        raise UsageError(
            f"unknown OpenVINO inference precision {precision!r}.", f"Use one of {', '.join(PRECISION_HINTS)}."
        )
    config = {"INFERENCE_PRECISION_HINT": precision or "f32"}
    if threads:  # pinned as exporter.runners.variant pins a measured variant: one stream, latency
        config.update({"INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"})
    return _OpenVinoSession(ov.Core().compile_model(str(path), "CPU", config))


# the OpenVINO inference precisions a variant may record (variants[].load.model_kwargs.ov_config)
PRECISION_HINTS = ("f32", "bf16", "f16")


def precision_of(load: Mapping[str, Any]) -> str | None:
    """The inference precision a variant's ``load`` spec records for OpenVINO (None: f32, the default)."""
    model_kwargs = load.get("model_kwargs") or {}
    ov_config = model_kwargs.get("ov_config") if isinstance(model_kwargs, Mapping) else None
    hint = ov_config.get("INFERENCE_PRECISION_HINT") if isinstance(ov_config, Mapping) else None
    return hint if isinstance(hint, str) else None


# backend name -> opener(path, providers, threads, precision).
BACKENDS: dict[str, Callable[..., Session]] = {
    "onnx": _open_onnx,
    "openvino": _open_openvino,
}
# A kind's own graph (ColBERT, bge-m3) in an artifact folder, by backend, when no file name is given.
OWN_GRAPH_FILES = {"onnx": "onnx/model.onnx", "openvino": "openvino/openvino_model.xml"}


def open_own_graph(model_dir: Path, backend: str, file_name: str | None, threads: int | None, what: str):
    """``(session, path)``: the graph ``file_name`` (default ``OWN_GRAPH_FILES[backend]``) of the artifact folder
    ``model_dir`` opened on ``backend`` (onnx or openvino); UsageError for a missing file or another backend."""
    if backend not in OWN_GRAPH_FILES:
        raise UsageError(f"{what} graphs are served by onnx or openvino, not {backend}.", "")
    path = Path(model_dir) / (file_name or OWN_GRAPH_FILES[backend])
    if not path.is_file():
        raise UsageError(f"{path} does not exist.", "Check the artifact folder and the variant's file name.")
    return BACKENDS[backend](path, None, threads), path
