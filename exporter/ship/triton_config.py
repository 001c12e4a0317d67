"""The triton layout: config.pbtxt text written from the graph's real inputs and outputs (no protobuf library), and
the model repository's file map."""

from __future__ import annotations

from pathlib import Path

from exporter.errors import UsageError
from exporter.ship.layout_files import (
    FileMap,
    _main_file,
    _ov_config,
    _shared,
)

TRITON_VERSION_DIR = "1"


TRITON_MAX_BATCH = 32


def triton_model_config_pb2():
    """Triton's ``model_config`` protobuf module as the ``tritonclient`` package ships it (tests parse the
    written config.pbtxt with it; writing needs no protobuf library)."""
    import importlib.util

    try:
        import tritonclient
    except ImportError as exc:
        raise UsageError(
            "parsing config.pbtxt with Triton's protobuf schema needs tritonclient.", "pip install tritonclient==2.73.0"
        ) from exc
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("tritonclient_model_config_pb2", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"tritonclient has no {path.name} at {path.parent}.", "pip install tritonclient==2.73.0")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # by path: tritonclient.grpc's __init__ would import grpcio
    return module


_TRITON_TYPES = {"tensor(int64)": "TYPE_INT64", "tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}


_OV_TRITON_TYPES = {"i64": "TYPE_INT64", "f32": "TYPE_FP32", "f16": "TYPE_FP16"}


def _triton_type(table: dict[str, str], name: str, tensor_type: str) -> str:
    if tensor_type not in table:
        raise UsageError(
            f"the triton layout maps {'/'.join(table)} tensors; {name!r} is {tensor_type}.",
            "Serve this variant with the st layout.",
        )
    return table[tensor_type]


def _graph_io(path: Path, backend: str) -> tuple[list, list]:
    """[(name, triton type, dims)] of the inputs and outputs, from the runtime that serves the file."""
    if backend == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        both = [
            [
                (
                    t.name,
                    _triton_type(_TRITON_TYPES, t.name, t.type),
                    [d if isinstance(d, int) else -1 for d in t.shape],
                )
                for t in ts
            ]
            for ts in (session.get_inputs(), session.get_outputs())
        ]
        return both[0], both[1]
    import openvino as ov

    model = ov.Core().read_model(str(path))

    def rows(ports):
        return [
            (
                p.get_any_name(),
                _triton_type(_OV_TRITON_TYPES, p.get_any_name(), p.get_element_type().get_type_name()),
                [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()],
            )
            for p in ports
        ]

    return rows(model.inputs), rows(model.outputs)


# Triton's openvino backend reads these parameters only (openvino_backend ParseParameters): bf16 can be
# asked for with HINT_BF16, f32 cannot be pinned, so a CPU with native bf16 would compute an f32 pin in bf16.
_TRITON_OV_PRECISION = {"bf16": {"HINT_BF16": "YES"}}


def _triton_parameters(variant: dict) -> dict[str, str]:
    config = _ov_config(variant)
    precision = config.pop("INFERENCE_PRECISION_HINT", None)
    if config or (precision is not None and precision not in _TRITON_OV_PRECISION):
        raise UsageError(
            f"Triton's openvino backend cannot apply {variant['id']}'s OpenVINO options "
            f"{_ov_config(variant)} (its parameters set bf16 only, never pin f32).",
            "Serve it with the ovms or st layout, or an onnx variant with the triton layout.",
        )
    return _TRITON_OV_PRECISION.get(precision, {})


TRITON_CONTRACT = """# Client-side tokenizer contract (Triton runs the graph only):
#   tokenize with tokenizer.json in this folder, as it is: it truncates at {max_len} tokens and pads to
#   the batch's longest text (right); send {inputs} as INT64 [batch, sequence], at most {batch} texts a
#   request; {output}.
"""


def _pbtxt_tensor(name: str, dtype: str, dims: list[int]) -> str:
    return f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: [ {", ".join(map(str, dims))} ]\n  }}'


def triton_config_text(name: str, backend: str, inputs: list, outputs: list, parameters: dict, contract: str) -> str:
    """config.pbtxt in protobuf text format (Triton's ModelConfig), batched: the graph's batch dimension is
    Triton's (``max_batch_size``), so each tensor's dims leave it out."""
    for tensor, _, dims in (*inputs, *outputs):
        if not dims or dims[0] != -1:
            raise UsageError(
                f"the triton layout batches requests; {tensor!r} has no dynamic batch dimension ({dims}).",
                "Serve this variant with the st layout.",
            )
    lines = [
        contract.rstrip("\n"),
        f'name: "{name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {TRITON_MAX_BATCH}",
        "input [\n" + ",\n".join(_pbtxt_tensor(t, d, dims[1:]) for t, d, dims in inputs) + "\n]",
        "output [\n" + ",\n".join(_pbtxt_tensor(t, d, dims[1:]) for t, d, dims in outputs) + "\n]",
        "dynamic_batching { }",
        "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]",
    ]
    for key, value in parameters.items():
        lines.append(f'parameters {{\n  key: "{key}"\n  value {{\n    string_value: "{value}"\n  }}\n}}')
    return "\n".join(lines) + "\n"


def triton_model_name(manifest: dict) -> str:
    return (manifest["source"].get("repo") or "model").split("/")[-1]


def _triton(artifact: Path, manifest: dict, variant: dict, scratch: Path) -> FileMap:
    from exporter.source import st_modules

    backend = variant["load"]["backend"]
    parameters = _triton_parameters(variant) if backend == "openvino" else {}
    name = triton_model_name(manifest)
    main = _main_file(variant)
    inputs, outputs = _graph_io(artifact / main, backend)
    facts = st_modules.read(artifact)
    if any(t == "sentence_embedding" for t, _, _ in outputs):
        output = "read sentence_embedding (pooled" + (", L2-normalised)" if facts.normalize else ")")
    else:
        modes = "+".join(facts.pooling.modes) if facts.pooling else "no Pooling module"
        output = f"pool {outputs[0][0]} over the attention mask ({modes})"
        output += " and L2-normalise it" if facts.normalize else ""
    contract = TRITON_CONTRACT.format(
        max_len=facts.max_seq_length, inputs=", ".join(t for t, _, _ in inputs), batch=TRITON_MAX_BATCH, output=output
    )
    backend_name = "onnxruntime" if backend == "onnx" else "openvino"
    files: FileMap = {f"{name}/{rel}": src for rel, src in _shared(artifact, manifest).items()}
    files[f"{name}/config.pbtxt"] = triton_config_text(
        name, backend_name, inputs, outputs, parameters, contract
    ).encode()
    suffixes = {".onnx": "model.onnx", ".xml": "model.xml", ".bin": "model.bin"}
    for rec in variant["files"]:
        path = rec["path"]
        target = suffixes.get(Path(path).suffix) if path.startswith(main.rsplit(".", 1)[0]) else None
        files[f"{name}/{TRITON_VERSION_DIR}/{target or Path(path).name}"] = artifact / path
    return files
