"""The artifact folder an export fills, across runs: the source files every variant shares, what a re-run
keeps of an existing artifact, and the files a rebuild leaves stale.

A re-run keeps a variant when the artifact is of the same source, built with the same packages, probe
set, max length, kind and Matryoshka width, its files still match the manifest and its verdict was
judged by the thresholds and consumers asked for now; anything else is rebuilt.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporter import manifest as mf
from exporter.errors import UsageError
from exporter.fsutil import FileRecord, record_files
from exporter.kinds import DEFAULT_KIND
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
    out: Path, source_entry: dict, env: dict, probe_set, kind: str, thresholds: dict, plan
) -> dict[str, VariantEntry]:
    """Variants of an existing artifact at ``out`` that this run keeps (none with ``plan.force``): files intact,
    same source, toolchain, probe set, length and kind, judged by the same thresholds and consumers."""
    if plan.force:
        return {}
    kept = _reusable_variants(out, source_entry, env, probe_set, plan.max_seq_length, kind)
    kept = {vid: v for vid, v in kept.items() if _judged_as_asked(v, kind, thresholds.get(vid), plan.consumers)}
    if kept and mf.load(out)["model"].get("truncate_dim") != plan.truncate_dim:
        return {}  # another Matryoshka width: every variant is rebuilt
    return kept


def _reusable_variants(
    out: Path, source_entry: dict, env: dict, probe_set, max_seq_length: int | None, kind: str = DEFAULT_KIND
) -> dict[str, VariantEntry]:
    """Variants of an existing artifact at ``out`` that a re-run may keep (files intact, same inputs)."""
    if not out.exists():
        return {}
    if not (out / mf.MANIFEST_NAME).is_file():  # an empty folder (outdir.check_out refused any other)
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
    if (
        existing["environment"]["packages"] != env["packages"]
        or existing["probe"]["sha256"] != probe_set.sha256
        or (max_seq_length and existing["model"]["max_seq_length"] != max_seq_length)
        or existing["model"]["kind"] != kind
    ):
        return {}  # a new toolchain, probe set, length or kind: every variant is rebuilt and re-checked
    if not mf.check_files(out, existing, []).ok:  # shared files changed: start again
        return {}
    return {
        v["id"]: v
        for v in existing["variants"]
        if v["status"] != "error" and mf.check_files(out, existing, [v["id"]]).ok
    }


def _judged_as_asked(variant: VariantEntry, kind: str, threshold, names: list[str]) -> bool:
    """Whether a kept variant's verdict holds for this run: judged by ``threshold`` (None: a variant not asked
    for now, kept as it was) with a row for every consumer in ``names`` that applies to it."""
    if threshold is None:
        return True
    from exporter.quality import consumers

    parity = variant.get("parity") or {}
    want = threshold.to_dict()
    recorded = parity.get("threshold") or {}
    if {k: recorded.get(k) for k in want} != want or any(v is not None for k, v in recorded.items() if k not in want):
        return False  # another threshold: rebuilt and judged again
    rows = {r["consumer"] for r in parity.get("consumers") or []}
    return all(n in rows for n in names if n == "sentence-transformers" or consumers.BY_NAME[n].applies(variant, kind))


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
