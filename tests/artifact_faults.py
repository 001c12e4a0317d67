"""Fault injection into a copy of a real artifact, as a buggy build would make it: the graph changed, the
manifest's file records updated to match, so integrity passes and only the fidelity gate can catch it."""

from __future__ import annotations

import shutil
from pathlib import Path

from exporter import manifest as mf
from exporter.fsutil import record_files


def scale_outputs(artifact: Path, variant_id: str, outputs: tuple[str, ...], factor: float) -> Path:
    """Multiply the named graph outputs of ``variant_id``'s ONNX file by ``factor`` (an inserted ``Mul``),
    and re-record that file's size and sha256 in the manifest. Returns the changed file."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    manifest = mf.load(artifact)
    variant = mf.get_variant(manifest, variant_id)
    path = artifact / variant["load"]["file_name"]
    model = onnx.load(str(path))
    graph = model.graph
    for name in outputs:
        raw = f"{name}_before_fault"
        for node in graph.node:
            node.output[:] = [raw if o == name else o for o in node.output]
            node.input[:] = [raw if i == name else i for i in node.input]  # other readers keep the true value
        const = f"{name}_fault_factor"
        graph.initializer.append(numpy_helper.from_array(np.array(factor, dtype=np.float32), const))
        graph.node.append(helper.make_node("Mul", [raw, const], [name], name=f"{name}_fault"))
    onnx.save(model, str(path))
    records = {r.path: r.to_dict() for r in record_files(artifact, [path])}
    variant["files"] = [records.get(f["path"], f) for f in variant["files"]]
    mf.save(artifact, manifest)
    return path


def ignore_attention_mask(artifact: Path, variant_id: str) -> Path:
    """Make ``variant_id``'s ONNX graph attend to padding: every reader of ``attention_mask`` gets a mask of
    ones of its shape instead (an export that dropped the mask), so a text's output depends on how far its
    batch pads. Re-records the file in the manifest. Returns the changed file."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    manifest = mf.load(artifact)
    variant = mf.get_variant(manifest, variant_id)
    path = artifact / variant["load"]["file_name"]
    model = onnx.load(str(path))
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["mask_of_ones" if i == "attention_mask" else i for i in node.input]
    graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "mask_one"))
    graph.node.insert(0, helper.make_node("Shape", ["attention_mask"], ["mask_shape"], name="mask_fault_shape"))
    graph.node.insert(1, helper.make_node("Expand", ["mask_one", "mask_shape"], ["mask_of_ones"], name="mask_fault"))
    onnx.save(model, str(path))
    records = {r.path: r.to_dict() for r in record_files(artifact, [path])}
    variant["files"] = [records.get(f["path"], f) for f in variant["files"]]
    mf.save(artifact, manifest)
    return path


def copy_artifact(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def scale_initializer(
    artifact: Path, variant_id: str, shape: tuple[int, ...], factor: float, column: int | None = None
) -> str:
    """Multiply the first weight of ``shape`` in ``variant_id``'s ONNX file (e.g. a Dense projection traced
    into the graph), or only its ``column``, by ``factor``, and re-record the file in the manifest. Returns
    the weight's name."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    manifest = mf.load(artifact)
    variant = mf.get_variant(manifest, variant_id)
    path = artifact / variant["load"]["file_name"]
    model = onnx.load(str(path))
    index, init = next((i, t) for i, t in enumerate(model.graph.initializer) if tuple(t.dims) == shape)
    scaled = numpy_helper.to_array(init).astype(np.float32).copy()
    if column is None:
        scaled *= np.float32(factor)
    else:
        scaled[:, column] *= np.float32(factor)
    model.graph.initializer[index].CopyFrom(numpy_helper.from_array(scaled, init.name))
    onnx.save(model, str(path))
    records = {r.path: r.to_dict() for r in record_files(artifact, [path])}
    variant["files"] = [records.get(f["path"], f) for f in variant["files"]]
    mf.save(artifact, manifest)
    return init.name
