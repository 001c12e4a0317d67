"""The artifact folder an export fills, across runs: the source files every variant shares, what a re-run
keeps of an existing artifact, and the files a rebuild leaves stale.

A re-run keeps a variant when its files still match the manifest and the fingerprint its entry records
(``exporter.fingerprint``: source, toolchain, CPU, settings, probe set, batching, the variant's spec and
options, its thresholds and consumers) is the one computed now; anything else is rebuilt.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from exporter import manifest as mf
from exporter.errors import UsageError
from exporter.fingerprint import INPUT_PARTS, Fingerprint
from exporter.fsutil import FileRecord, record_files
from exporter.manifest_types import AdjustedFrom, VariantEntry
from exporter.source import tokenizer_files

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".ckpt")


def copy_shared(src, stage: Path, max_seq_length: int | None = None) -> list[FileRecord]:
    """Copy the source files the model uses, except the Transformer's torch weights, into the artifact root.

    The weights of the other modules (``2_Dense/model.safetensors`` ...) are copied: sentence-transformers
    runs those modules in torch on top of an ONNX / OpenVINO transformer, and loads them from there.

    A ``max_seq_length`` override is written into the copy of sentence_bert_config.json, so every
    loader of the artifact (sentence-transformers, the torch-free runtime) truncates the same way.
    """
    from exporter.builders.kit import transformer_folder as transformer_folder_of

    copied = []
    transformer_folder = transformer_folder_of(src.path)
    for rec in src.files:
        rel = Path(rec.path)
        if rel.suffix in WEIGHT_SUFFIXES and rel.parent.as_posix() == transformer_folder:
            continue
        dest = stage / rec.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile((src.path / rec.path).resolve(), dest)
        copied.append(dest)
    if max_seq_length:
        cfg_path = stage / "sentence_bert_config.json"
        cfg = json.loads(cfg_path.read_text("utf-8")) if cfg_path.is_file() else {}
        cfg["max_seq_length"] = max_seq_length
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", "utf-8")
        if cfg_path not in copied:
            copied.append(cfg_path)
    changed = tokenizer_files.align(stage)  # before hashing: the manifest records the files as written
    return _with_adjustments(record_files(stage, copied), changed, src)


def _with_adjustments(records: list[FileRecord], changed: dict[str, str], src) -> list[FileRecord]:
    """``records`` with each file ``tokenizer_files.align`` rewrote marked with the source file's sha256."""
    from dataclasses import replace

    source = {rec.path: rec for rec in src.files}

    def adjusted(path: str) -> AdjustedFrom:
        entry: AdjustedFrom = {"sha256": changed[path], "reason": tokenizer_files.ADJUSTED}
        if path in source:
            entry["source"] = path
        return entry

    return [replace(r, adjusted_from=adjusted(r.path)) if r.path in changed else r for r in records]


def kept_variants(
    out: Path,
    source_entry: Mapping[str, Any],
    asked: Mapping[str, Fingerprint],
    inputs_of: Callable[[str], Fingerprint | None],
    *,
    force: bool = False,
) -> dict[str, VariantEntry]:
    """Variants of an existing artifact at ``out`` that this run keeps (none with ``force``): its files intact and
    the fingerprint its entry records equal to the one computed now: ``asked[id]`` for a variant this run asks
    for, else (a variant kept as it was judged) ``inputs_of(id)`` on every part but its judging. UsageError
    when ``out`` holds another source's artifact."""
    if force or not (out / mf.MANIFEST_NAME).is_file():  # absent, or an empty folder (outdir.check_out)
        return {}
    existing = mf.load(out)
    old_src = existing["source"]
    if (old_src["repo"], old_src["revision"]) != (source_entry["repo"], source_entry["revision"]) or (
        {f["sha256"] for f in old_src["files"]} != {f["sha256"] for f in source_entry["files"]}
    ):
        raise UsageError(
            f"{out} holds an artifact of {old_src['repo'] or old_src['local_path']}@{old_src['revision']}, "
            "not of this source.",
            "Pass --out with another folder, or --force to replace it.",
        )
    if not mf.check_files(out, existing, []).ok:  # shared files changed: start again
        return {}

    def same(v: dict) -> bool:
        if v["id"] in asked:
            return asked[v["id"]].matches(v.get("fingerprint"))
        now = inputs_of(v["id"])
        return now is not None and now.matches(v.get("fingerprint"), INPUT_PARTS)

    return {
        v["id"]: v
        for v in existing["variants"]
        if v["status"] != "error" and same(v) and mf.check_files(out, existing, [v["id"]]).ok
    }


def remove_stale_files(stage: Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Drop files of superseded builds: anything in a backend folder that no variant lists.

    And every signature bundle: a rebuild writes a new manifest.json (``created_at`` at least), which each
    variant's bundles sign, so none of them would still verify; re-run ``exporter sign``.
    """
    from exporter.manifest import SIGNATURE_DIR

    shutil.rmtree(stage / SIGNATURE_DIR, ignore_errors=True)
    listed = {f["path"] for e in entries.values() for f in e["files"]}
    for folder in ("onnx", "openvino", "quanto"):
        for p in (stage / folder).rglob("*") if (stage / folder).is_dir() else ():
            if p.is_file() and p.relative_to(stage).as_posix() not in listed:
                p.unlink()
