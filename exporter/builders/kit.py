"""What every builder shares: where the Transformer lives, how files land in the stage, how failures read.

- **Transformer folder** (:func:`transformer_dir`, :func:`transformer_folder`): the folder of the model's
  Transformer module per ``modules.json`` (``0_Transformer/`` in the oldest sentence-transformers layout,
  the root otherwise and for folders without ``modules.json`` such as plain cross-encoders; the rule is
  ``source.st_modules.transformer_path``). Graphs and IRs go there because that is where
  ``model_kwargs={"file_name": ...}`` is resolved.
- **Files into the stage** (:func:`scratch`, :func:`place`): a backend writes into a scratch folder beside
  the destination (same filesystem), then each result is renamed into place with the files that belong
  to it (an ONNX graph's external data, an IR's ``.bin``). Renames make new inodes, so an artifact
  staged as a hard-linked clone of the previous one is never written through; a failed build leaves
  nothing behind. A single file rewritten in place uses ``exporter.fsutil.atomic_path``.
- **Failures** (:func:`backend_errors`): whatever a backend raises becomes one typed ``ExportFailed`` line
  naming the step; the library's own typed errors pass through unchanged.
- **Cosine** (:func:`row_cosines`): the one row-wise cosine every builder check and search uses.
- **A kind's own traced graph** (:func:`traced_onnx`, :func:`traced_openvino`, :class:`RuntimeVariant`): the
  traced ONNX graph placed, its fp32 IR converted from it, and a built variant served by the kind's runtime
  (ColBERT, bge-m3).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from exporter.errors import ExporterError, ExportFailed
from exporter.fsutil import is_disk_full

ZERO_NORM = 1e-12  # a row at or below this L2 norm is the zero vector (as exporter.quality.parity)

T = TypeVar("T")

if TYPE_CHECKING:
    import numpy as np


# ------------------------------------------------------------------------------------ Transformer folder
def transformer_dir(root: Path, *, require: bool = False) -> Path:
    """The folder of ``root``'s Transformer module (SPLADE's ``MLMTransformer`` too); ``root`` itself when
    it has no ``modules.json`` or, unless ``require``, when ``modules.json`` lists no Transformer.

    Raises:
        ExportFailed: ``require`` and ``modules.json`` lists no Transformer module.
    """
    from exporter.source import st_modules

    root = Path(root)
    entries = st_modules.read_modules(root) if (root / "modules.json").is_file() else ()
    if require and entries and st_modules.transformer_entry(entries) is None:
        names = ", ".join(m.type.rsplit(".", 1)[-1] for m in entries)
        raise ExportFailed(
            f"the model's modules ({names}) have no Transformer module to export.",
            "Only transformer-based sentence-transformers models export this way.",
        )
    return st_modules.transformer_path(root, entries)


def transformer_folder(root: Path) -> str:
    """:func:`transformer_dir` relative to ``root``, as a posix path ("." for the root)."""
    return transformer_dir(root).relative_to(root).as_posix()


# ------------------------------------------------------------------------------------- files into stage
@contextlib.contextmanager
def scratch(folder: Path, prefix: str = ".build-") -> Iterator[Path]:
    """A temp folder inside ``folder`` (created if needed), removed when the block ends, however it ends."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def companions(path: Path) -> list[Path]:
    """The files that belong to ``path``: an ONNX graph's external-data files, an OpenVINO IR's ``.bin``."""
    if path.suffix == ".onnx":
        from exporter.builders import external_data

        return [path.parent / loc for loc in external_data.locations(path)]
    if path.suffix == ".xml":
        return [path.with_suffix(".bin")]
    return []


def place(src: Path, dest: Path) -> list[Path]:
    """Rename ``src`` (written in a :func:`scratch` folder) to ``dest`` with its :func:`companions`, which
    keep their names (an IR's ``.bin`` follows ``dest``'s stem). Returns ``dest`` and its companions.

    Raises:
        ExportFailed: the backend did not write ``src`` or one of its companions.
    """
    for path in [src, *(companions(src) if src.is_file() else [])]:
        if not path.is_file():
            raise ExportFailed(f"the backend did not write {path.name}.", "This is a bug in the exporter.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    placed = []
    for part in companions(src):
        target = dest.with_suffix(".bin") if src.suffix == ".xml" else dest.parent / part.name
        os.replace(part, target)
        placed.append(target)
    os.replace(src, dest)
    return [dest, *placed]


# --------------------------------------------------------------------------------------------- failures
def one_line(exc: BaseException) -> str:
    """The first line of an exception's text, at most 300 characters."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


@contextlib.contextmanager
def backend_errors(what: str, hint: str | None = None) -> Iterator[None]:
    """Turn anything the block raises into ``ExportFailed("<what> failed: <Type>: <first line>", hint)``;
    the library's typed errors (``ExporterError``) pass through as they are."""
    try:
        yield
    except ExporterError:
        raise
    except Exception as exc:  # backends (optimum, onnxruntime, openvino, nncf, quanto) raise anything
        if is_disk_full(exc):
            raise  # not this variant's failure: the export stops (staged_dir says where and how much)
        raise ExportFailed(f"{what} failed: {type(exc).__name__}: {one_line(exc)}", hint) from exc


def options_of(spec, cls: type[T]) -> T:
    """The catalogue entry's typed build options (``exporter.builders.options``), or ``cls()`` when it has none.

    Raises:
        ExportFailed: the entry holds options of another builder (a catalogue bug).
    """
    if spec.options is None:
        return cls()
    if not isinstance(spec.options, cls):
        raise ExportFailed(
            f"{spec.id}: the catalogue gives {type(spec.options).__name__}, its builder reads {cls.__name__}.",
            "This is a bug in the catalogue (exporter/variants.py).",
        )
    return spec.options


# ----------------------------------------------------------------------------------------------- cosine
def row_cosines(a, b) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b`` (float64), by the rule of
    ``exporter.quality.parity.compare``: a zero row (norm <= ``ZERO_NORM``) against a non-zero row has
    cosine 0; two zero rows have cosine 1 (the candidate reproduced the reference: a StaticEmbedding's
    empty text, a SPLADE vector with nothing active)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    za, zb = na <= ZERO_NORM, nb <= ZERO_NORM
    cos = np.clip((a * b).sum(1) / np.where(za | zb, 1.0, na * nb), -1.0, 1.0)
    cos[za | zb] = 0.0
    cos[za & zb] = 1.0
    return cos


# Texts for the post-export sanity check: mixed lengths (padding), case, accents, CJK, one over-long.
CHECK_TEXTS = (
    "Hello world",
    "A",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé ÀCCENTS and MiXeD CaSe",
    "東京は日本の首都です",
    "what is the capital city of the country where the river runs fast? " * 60,
)


def save_ir(model, stage_dir: Path, xml_rel: str, *, compress_to_fp16: bool = False) -> list[Path]:
    """Write the IR (``.xml`` and ``.bin``) at ``xml_rel`` in the stage: saved in scratch, renamed into place."""
    import openvino as ov

    dest = stage_dir / xml_rel
    with scratch(dest.parent, prefix=".ov-") as tmp:
        ov.save_model(model, tmp / dest.name, compress_to_fp16=compress_to_fp16)
        return place(tmp / dest.name, dest)


# ----------------------------------------------------------------------------- a kind's own traced graph
def traced_onnx(ctx, spec, onnx_graph, what: str) -> list[Path]:
    """A kind's own traced ONNX graph (ColBERT, bge-m3), written by ``onnx_graph(dest)`` in scratch and placed
    at the variant's file (with its external data, if any)."""
    dest = ctx.stage_dir / spec.file_name
    with backend_errors(f"ONNX export of the {what} model"), scratch(dest.parent, ".traced-") as tmp:
        return place(onnx_graph(tmp / dest.name), dest)


def traced_openvino(ctx, spec, onnx_graph, what: str) -> tuple[list[Path], dict]:
    """``(files, build facts)``: the fp32 OpenVINO IR of a kind's own traced ONNX graph (ColBERT, bge-m3),
    converted with ``openvino.convert_model`` from the graph ``onnx_graph(dest)`` writes in scratch."""
    import openvino as ov

    from exporter.environment import package_versions

    with backend_errors(f"OpenVINO conversion of the {what} graph"), scratch(ctx.stage_dir, ".traced-ov-") as tmp:
        ir = ov.convert_model(str(onnx_graph(tmp / "model.onnx")))
        files = save_ir(ir, ctx.stage_dir, spec.file_name, compress_to_fp16=False)
    facts = {
        "export_source": f"the traced {what} ONNX graph, openvino.convert_model",
        "precision": "fp32",
        "weights_dtype": "f32",
        "versions": package_versions(("openvino", "torch")),
    }
    return files, facts


class RuntimeVariant:
    """A built variant served by its kind's own runtime encoder (``encoder``, with a backend ``session``),
    exposing that session where bench reads the execution provider (``model[0].auto_model.session``, or
    ``.request`` for OpenVINO), as sentence-transformers' ONNX / OpenVINO backends do."""

    def __init__(self, encoder):
        from types import SimpleNamespace

        self.encoder = encoder
        raw = getattr(encoder.session, "session", None) or getattr(encoder.session, "compiled", None)
        self._module = SimpleNamespace(auto_model=SimpleNamespace(session=raw, request=raw))

    def __getitem__(self, index: int):
        return self._module
