"""The rules a model folder must pass before anything loads it: which of its files are used, links that
stay inside it, the weights policy (safetensors; pickle only when allowed), remote code, and the integrity of
cached blobs and safetensors files. ``exporter.source.resolve`` applies them to a Hub snapshot or a local
folder; ``exporter.source.hub`` applies the file selection and the weights policy before downloading.

Every refusal is a SourceError (exit 2), except a cached blob whose content contradicts its Hub hash, an
IntegrityError (exit 4).
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from exporter.errors import IntegrityError, SourceError, UsageError
from exporter.fsutil import FileRecord
from exporter.source.hubcache import blob_hash_matches
from exporter.user_files import MODEL_JSON_MAX_BYTES, read_user_json

SAFETENSORS = ".safetensors"
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth"})
_ALLOWED_SUFFIXES = frozenset({".json", ".txt", ".model", ".spm", SAFETENSORS}) | PICKLE_SUFFIXES
# The repo's own exports and other frameworks' weights are never part of the source.
_EXCLUDED_DIRS = frozenset({"onnx", "openvino", "tf", "flax", "rust", "coreml", "ct2", "gguf", "runs"})
_NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.pt"})
TOKENIZER_FILES = frozenset(
    {"tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model"}
)


# What a sentence-transformers load reads from the model's root and from each module's folder (the paths
# modules.json names): the configs, the tokenizer files and the weights, by name. Any other file of a model
# folder (a .env, a key, notes, a private/ folder) is not loaded, so it is neither copied nor published.
_LOADED_NAMES = TOKENIZER_FILES | frozenset(
    {
        "modules.json",
        "config.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "merges.txt",
        "generation_config.json",
    }
)


def _is_loaded_name(name: str) -> bool:
    return (
        name in _LOADED_NAMES
        or is_marker_file(name)
        or name.endswith(("config.json", SAFETENSORS, ".safetensors.index.json", ".spm", ".model"))
        or _is_pickle_weight(name)
    )


def loaded_files(root: Path, chosen: list[str], label: str) -> list[str]:
    """The files of ``chosen`` a sentence-transformers load reads: those named like a config, tokenizer or
    weights file, directly in the root or in a module folder that ``modules.json`` names (no modules.json:
    the root only). The rule, not the folder's content, decides what is copied into the artifact."""
    folders = {PurePosixPath(".")}
    if "modules.json" in chosen:
        modules = read_json(root, "modules.json", label)
        for mod in modules if isinstance(modules, list) else []:
            path = mod.get("path") if isinstance(mod, dict) else None
            if isinstance(path, str):
                folders.add(PurePosixPath(path.strip("/") or "."))
    return [r for r in chosen if PurePosixPath(r).parent in folders and _is_loaded_name(PurePosixPath(r).name)]


def is_marker_file(rel: str) -> bool:
    """A kind's marker file in the model's root (``exporter.kinds.KindSpec.marker_files``: bge-m3's heads):
    a torch pickle of a plain state dict that its kind loads with ``weights_only=True``. It is kept beside
    safetensors weights and hashed like every source file, and is not pickle *weights*: no --allow-pickle."""
    from exporter.kinds import KINDS

    markers = {f for spec in KINDS.values() for f in spec.marker_files}
    return PurePosixPath(rel).parent == PurePosixPath(".") and PurePosixPath(rel).name in markers


def _is_pickle_weight(rel: str) -> bool:
    name = PurePosixPath(rel).name
    if is_marker_file(rel):
        return False
    if name.endswith(".bin.index.json"):
        return True
    return PurePosixPath(rel).suffix in PICKLE_SUFFIXES and name not in _NOT_WEIGHTS


def select_candidates(relpaths) -> list[str]:
    """The files (posix relpaths) a sentence-transformers load may need: configs, tokenizer, module
    subfolders, safetensors and pickle weights; never the repo's own onnx/, openvino/, tf/flax/rust
    weights, checkpoints or training state."""
    out = []
    for rel in relpaths:
        p = PurePosixPath(rel)
        dirs = p.parts[:-1]
        if any(d in _EXCLUDED_DIRS or d.startswith((".", "checkpoint-")) for d in dirs):
            continue
        if p.suffix not in _ALLOWED_SUFFIXES or p.name in _NOT_WEIGHTS or p.name.startswith("rng_state"):
            continue
        out.append(p.as_posix())
    return sorted(out)


def prefer_safetensors(rels: list[str]) -> list[str]:
    """Drop pickle weights from every folder that also has safetensors weights."""
    st_dirs = {PurePosixPath(r).parent for r in rels if r.endswith(SAFETENSORS)}
    return [r for r in rels if not (_is_pickle_weight(r) and PurePosixPath(r).parent in st_dirs)]


def link_roots(root: Path) -> list[Path]:
    """Where links inside a model folder may point: the folder itself, and for a Hub cache snapshot
    (``models--ORG--NAME/snapshots/<sha>/``) that repo's ``blobs/`` folder."""
    roots = [root]
    if root.parent.name == "snapshots":
        roots.append(root.parent.parent / "blobs")
    return [Path(os.path.realpath(r)) for r in roots]


def refuse_link_out(root: Path, rel: Path, allowed: list[Path], label: str) -> None:
    """SourceError naming the link when ``rel`` (or a folder on its way) leads out of ``allowed``."""
    real = Path(os.path.realpath(root / rel))
    if any(real == r or r in real.parents for r in allowed):
        return
    prefixes = [Path(*rel.parts[: i + 1]) for i in range(len(rel.parts))]
    link = next((q for q in prefixes if (root / q).is_symlink()), rel)
    target = os.readlink(root / link) if (root / link).is_symlink() else str(real)
    raise SourceError(
        f"{label}: {link.as_posix()} is a link to {target}, outside the model folder.",
        "exporter does not follow links out of a model folder (it would copy and ship what they point to); "
        "copy the file into the folder, or remove the link.",
    )


def listing(root: Path, label: str) -> list[str]:
    """Every file under ``root`` as posix relpaths (skipping dot-folders); dangling cache links fail, and
    so does any link (file or folder) that leads out of ``root`` (or, for a cache snapshot, its blobs)."""
    rels = []
    allowed = link_roots(root)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts[:-1]):
            continue
        if p.is_symlink():
            refuse_link_out(root, rel, allowed, label)
        if p.is_symlink() and not p.exists():
            raise SourceError(
                f"{label}: {rel.as_posix()} points to a missing file (incomplete cache entry).",
                "Delete the snapshot folder and download it again (unset HF_HUB_OFFLINE) or re-seed it.",
            )
        if p.is_file():
            rels.append(rel.as_posix())
    return rels


def read_json(root: Path, rel: str, label: str):
    try:
        return read_user_json(root / rel, what=f"{label}: {rel}", max_bytes=MODEL_JSON_MAX_BYTES)
    except UsageError as exc:
        raise SourceError(exc.message, "Fix or re-download the file.") from None


def weights_policy(chosen: list[str], label: str, allow_pickle: bool) -> list[str]:
    """The pickle weight files in ``chosen``; SourceError if there are no weights, or pickle ones
    without ``allow_pickle``."""
    pickles = [r for r in chosen if _is_pickle_weight(r) and not r.endswith(".json")]
    if not pickles and not any(r.endswith(SAFETENSORS) for r in chosen):
        raise SourceError(f"{label} has no model weights (*.safetensors).", "Check that MODEL is a model repo/folder.")
    if pickles and not allow_pickle:
        raise SourceError(
            f"{label} has only pickle weights ({', '.join(pickles[:3])}); loading pickle can run arbitrary code.",
            "Use a revision with *.safetensors weights, or pass --allow-pickle if you trust the source.",
        )
    return pickles


# Module types of installed libraries other than sentence-transformers that a model's modules.json may name
# without running code from the model repository: PyLate's Dense (ColBERT, exporter.kinds COLBERT).
LIBRARY_MODULE_TYPES = frozenset({"pylate.models.Dense.Dense"})


def remote_code_reason(root: Path, chosen: list[str], label: str) -> str | None:
    if "modules.json" in chosen:
        modules = read_json(root, "modules.json", label)
        for mod in modules if isinstance(modules, list) else []:
            mtype = str(mod.get("type", "")) if isinstance(mod, dict) else ""
            if not mtype.startswith("sentence_transformers.") and mtype not in LIBRARY_MODULE_TYPES:
                return f"modules.json uses the custom module type {mtype!r}"
    for rel in chosen:
        if PurePosixPath(rel).name in ("config.json", "tokenizer_config.json"):
            data = read_json(root, rel, label)
            if isinstance(data, dict) and data.get("auto_map"):
                return f"{rel} maps to custom code (auto_map)"
    return None


def check_blobs(root: Path, files: list[FileRecord], label: str, repo_id: str, sha: str) -> None:
    """A cached file must match the hash the Hub named its blob by (sha256 for LFS, git sha1 else)."""
    for rec in files:
        link = root / rec.path
        blob = Path(os.path.realpath(link))
        if not link.is_symlink() or blob.parent.name != "blobs":
            continue
        if blob_hash_matches(blob, rec.sha256) is False:
            raise IntegrityError(
                f"{label}: cached file {rec.path} does not match the hash the Hub recorded for it "
                f"(blob {blob.name[:16]}...).",
                f"The cache is damaged: delete {blob} and {root}, then download again or re-seed {repo_id}@{sha}.",
            )


def check_weights(root: Path, chosen: list[str], label: str, *, hub: bool) -> None:
    hint = (
        "The cached copy is damaged: delete the snapshot and its blobs, then download or seed it again."
        if hub
        else "Re-save or re-copy the model's weights."
    )
    for rel in chosen:
        if rel.endswith(SAFETENSORS):
            problem = safetensors_problem(root / rel)
            if problem:
                raise SourceError(f"{label}: {rel} is not a valid safetensors file ({problem}).", hint)


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (None if it is).

    Checks the 8-byte little-endian header length, that the header is a JSON object whose tensors have
    sane ``data_offsets``, and that the file size is exactly 8 + header length + the largest offset end.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than the 8-byte header length"
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > 100 * 1024 * 1024:
            return f"header length {n} exceeds the file size {size}: truncated or not safetensors"
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "the header is not valid JSON"
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"tensor {name!r} has no valid data_offsets"
        if not 0 <= offsets[0] <= offsets[1]:
            return f"tensor {name!r} has inverted data_offsets"
        end = max(end, offsets[1])
    expected = 8 + n + end
    if size < expected:
        return f"{size} bytes but the header needs {expected}: truncated"
    if size > expected:
        return f"{size - expected} unexpected trailing bytes"
    return None
