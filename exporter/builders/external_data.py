"""ONNX external data: graphs over the size limit keep their tensors in ``<graph>_data`` beside them.

A protobuf file cannot exceed 2 GB, so the graphs of large models (bge-m3, Qwen3-Embedding-4B,
multilingual-e5-large at fp32) store their weights as ONNX *external data*. One rule for every ONNX file
the exporter writes (:func:`settle`, applied by the pipeline to each ONNX variant's files):

- a graph whose tensors total more than the limit is saved with all tensors in one file named
  ``<graph file name>_data`` (``onnx/model.onnx`` -> ``onnx/model.onnx_data``): the name optimum's
  ``ORTModel`` (sentence-transformers' ``backend="onnx"``) fetches beside the graph, and the one ONNX
  Runtime resolves relative to the graph for the torch-free runtime;
- a smaller graph is saved inline (one file), whatever the tool that wrote it chose.

The data file is an ordinary file of the variant: listed and hashed in the manifest, packaged and pushed
like the graph. The limit is ``DEFAULT_LIMIT`` bytes, or ``$EXPORTER_ONNX_EXTERNAL_DATA_BYTES`` (tests
lower it to exercise the large-model path on a tiny model).
"""

from __future__ import annotations

import os
from pathlib import Path

from exporter.errors import UsageError
from exporter.fsutil import atomic_path

ENV_LIMIT = "EXPORTER_ONNX_EXTERNAL_DATA_BYTES"
DEFAULT_LIMIT = 2_000_000_000  # under protobuf's 2 GiB hard limit, with room for the graph itself
DATA_SUFFIX = "_data"


def limit() -> int:
    """Bytes of tensor data above which a graph is saved with external data."""
    raw = os.environ.get(ENV_LIMIT)
    if raw is None or not raw.strip():
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"{ENV_LIMIT}={raw!r} is not a byte count.", "Set it to a non-negative integer or unset it.")
    return value


def data_name(graph: Path) -> str:
    return graph.name + DATA_SUFFIX


def locations(graph: Path) -> list[str]:
    """External-data file names the graph at ``graph`` references (relative to its folder), in order."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    model = onnx.load(str(graph), load_external_data=False)
    found: dict[str, None] = {}
    for tensor in _get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            found.update({e.value: None for e in tensor.external_data if e.key == "location"})
    return list(found)


def files_of(graph: Path) -> list[Path]:
    """The graph and the external-data files it references."""
    return [graph, *(graph.parent / loc for loc in locations(graph))]


def _tensor_bytes(model) -> int:
    from onnx.external_data_helper import _get_all_tensors

    return sum(len(t.raw_data) for t in _get_all_tensors(model))


def settle(graph: Path, max_bytes: int | None = None) -> list[Path]:
    """Re-save ``graph`` by the rule above (inline, or external data in ``<name>_data``); returns its files.

    The tensors are read into memory first; old data files are unlinked (never written through: the
    artifact may be a hard-linked clone of the previous one) and the graph is renamed into place.
    """
    import onnx

    max_bytes = limit() if max_bytes is None else max_bytes
    before = files_of(graph)[1:]
    if [p.name for p in before] == [data_name(graph)] and before[0].stat().st_size > max_bytes:
        return [graph, *before]  # already as the rule wants (e.g. optimum's own export of a large model)
    if not before and graph.stat().st_size <= max_bytes:
        return [graph]  # inline, and its tensors cannot outweigh the file: as the rule wants, nothing to read
    model = onnx.load(str(graph), load_external_data=True)
    external = _tensor_bytes(model) > max_bytes
    if not external and not before:
        return [graph]  # inline already: leave the file as written
    for old in before:
        old.unlink(missing_ok=True)
    with atomic_path(graph, suffix=".onnx") as tmp:
        if external:
            (graph.parent / data_name(graph)).unlink(missing_ok=True)  # onnx appends to an existing file
            onnx.save(
                model,
                str(tmp),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name(graph),  # written beside tmp, i.e. beside the final graph
                size_threshold=1024,
                convert_attribute=False,
            )
        else:
            onnx.save(model, str(tmp))
    return files_of(graph)


def settle_all(files: list[Path], max_bytes: int | None = None) -> list[Path]:
    """:func:`settle` every ``.onnx`` graph among a variant's files; returns its files afterwards."""
    out: dict[Path, None] = {}
    for path in files:
        if path.suffix == ".onnx":
            out.update(dict.fromkeys(settle(path, max_bytes)))
    for path in files:
        if path.suffix != ".onnx" and path.is_file():
            out.setdefault(path, None)
    return list(out)


def unshare(folder: Path) -> list[Path]:
    """Give every external-data file under ``folder`` an inode of its own (a copy renamed into place).

    A staged artifact starts as a hard-linked clone of the previous one; ``onnx.load`` refuses external data
    with several hard links ("potential hardlink attack"), so derived builders could not read the base.
    """
    import shutil

    done = []
    for path in sorted(folder.rglob(f"*{DATA_SUFFIX}")) if folder.is_dir() else ():
        if path.is_file() and path.stat().st_nlink > 1:
            with atomic_path(path, suffix=".unshare") as tmp:
                shutil.copyfile(path, tmp)
            done.append(path)
    return done
