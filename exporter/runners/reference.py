"""The torch reference: loaded from a source folder with the class of its kind, and the source folder a
manifest pins."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from exporter.errors import IntegrityError


def load_reference(
    kind: str | None,
    source_dir: Path,
    *,
    trust_remote_code: bool = False,
    max_seq_length: int | None = None,
    truncate_dim: int | None = None,
):
    """The torch model at ``source_dir`` with the class of its kind (``KindSpec.model_class``), on the CPU, with
    the max length and, for embedders, the Matryoshka ``truncate_dim`` set if given."""
    from exporter import kinds

    spec = kinds.get(kind)
    model = spec.model_cls()(str(source_dir), device="cpu", trust_remote_code=trust_remote_code, local_files_only=True)
    if max_seq_length:
        spec.set_max_length(model, max_seq_length)
    if truncate_dim:
        model.truncate_dim = truncate_dim
    return model


def encoder(model, kind: str | None) -> Callable[[list, int], object]:
    """``encode(inputs, batch_size)``: the kind's output function (encode / predict / sparse encode) on ``model``;
    the same for the reference and every variant, in export, verify and bench."""
    from exporter import kinds

    outputs = kinds.get(kind).outputs
    return lambda inputs, bs: outputs(model, inputs, bs)


def recorded_source(manifest: dict):
    """The torch reference's source folder, resolved as the manifest pins it and checked against its hashes.

    Raises:
        SourceError: the pinned source cannot be resolved (e.g. not in the Hub cache).
        IntegrityError: its files differ from the manifest's hashes.
    """
    from exporter.source import resolve as source

    rec = manifest["source"]
    allow_pickle = rec.get("weights_format") == "pickle"
    if rec["repo"] and rec["revision"]:
        ref = source.parse_model_ref(f"{rec['repo']}@{rec['revision']}")
        resolved = source.resolve(ref, allow_unpinned=False, allow_pickle=allow_pickle, trust_remote_code=False)
    else:  # a local folder: only the files the manifest lists are read, whatever local_path names
        resolved = source.resolve_recorded(Path(rec["local_path"] or ""), rec["files"], allow_pickle=allow_pickle)
    have = {f.path: f.sha256 for f in resolved.files}
    differ = sorted(f["path"] for f in rec["files"] if have.get(f["path"]) != f["sha256"])
    if differ:
        raise IntegrityError(
            f"the reference source {resolved} does not match the manifest's hashes ({', '.join(differ)}).",
            "Restore the source the artifact was exported from (re-download or re-seed it).",
        )
    return resolved
