"""The local Hugging Face Hub cache: where it is, and how to lay out an entry in it.

``seed_snapshot`` writes the same layout ``huggingface_hub`` writes when it downloads a repo::

    <cache>/models--ORG--NAME/blobs/<hash>                  file contents, named by their hash
    <cache>/models--ORG--NAME/snapshots/<commit>/<relpath>  relative symlinks into blobs/
    <cache>/models--ORG--NAME/refs/<ref>                    the commit sha the ref points at

so the real ``snapshot_download(..., local_files_only=True)`` path resolves a seeded model exactly as it
resolves a downloaded one. Blobs are named like the Hub names them: large / binary (LFS) files by their
sha256, ordinary git files by their git blob sha1. ``blob_hash_matches`` checks a blob against its name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from exporter.errors import SourceError
from exporter.fsutil import atomic_path, sha256_file

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TRUE = {"1", "on", "yes", "true"}

# Extensions the Hub's default .gitattributes stores in LFS (so their blob is named by sha256).
_LFS_SUFFIXES = set(
    ".safetensors .bin .pt .pth .ckpt .onnx .h5 .msgpack .ot .model .pb .tflite .npy .npz .pkl .joblib "
    ".zip .gz .tar .xz .7z .arrow".split()
)
_LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub refuses plain git files above 10 MB
_SKIP_DIRS = {".git", "__pycache__", ".cache", ".huggingface"}


def hub_cache_dir() -> Path:
    """The Hub cache folder, computed from the environment *now* (huggingface_hub reads it at import).

    ``HF_HUB_CACHE`` (or legacy ``HUGGINGFACE_HUB_CACHE``), else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``.
    """
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(os.path.expanduser(explicit)))
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, read from the environment now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def repo_folder(repo_id: str, cache_dir: Path | None = None) -> Path:
    """``<cache>/models--ORG--NAME`` for a model repo."""
    return (cache_dir or hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def snapshot_folder(repo_id: str, sha: str, cache_dir: Path | None = None) -> Path:
    """``<cache>/models--ORG--NAME/snapshots/<sha>``: where the pinned files of a model repo live."""
    return repo_folder(repo_id, cache_dir) / "snapshots" / sha


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file's contents (what the Hub names a non-LFS blob)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def blob_hash_matches(blob: Path, sha256: str | None = None) -> bool | None:
    """Whether a cache blob's content matches the hash in its name.

    True / False for blobs named by a sha256 (LFS) or a git sha1; None when the name is neither, so
    nothing can be said. Pass ``sha256`` when already computed to avoid hashing twice.
    """
    name = blob.name
    if _SHA256_RE.match(name):
        return (sha256 or sha256_file(blob)) == name
    if COMMIT_RE.match(name):
        return git_blob_sha1(blob) == name
    return None


def _blob_name(path: Path) -> str:
    if path.suffix.lower() in _LFS_SUFFIXES or path.stat().st_size >= _LFS_MIN_SIZE:
        return sha256_file(path)
    return git_blob_sha1(path)


def _write_blob(src: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:
        return
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _link(target: str, dest: Path) -> None:
    if dest.is_symlink() and os.readlink(dest) == target:
        return
    with atomic_path(dest) as tmp:
        os.symlink(target, tmp)


def _write_ref(path: Path, sha: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(sha, encoding="utf-8")  # the Hub writes the bare sha, no newline


def _source_files(files_dir: Path) -> list[Path]:
    out = []
    for path in sorted(files_dir.rglob("*")):
        rel = path.relative_to(files_dir)
        if path.is_file() and not any(part in _SKIP_DIRS for part in rel.parts[:-1]):
            out.append(path)
    return out


def seed_snapshot(
    repo_id: str,
    revision: str,
    files_dir: Path,
    cache_dir: Path | None = None,
    ref: str | None = "main",
) -> Path:
    """Lay out ``files_dir`` as the cached snapshot of ``repo_id`` at commit ``revision``.

    Every regular file under ``files_dir`` (except inside .git / __pycache__) becomes a blob plus a
    relative symlink under ``snapshots/<revision>/``; ``refs/<ref>`` (unless ``ref`` is None) records the
    commit. Idempotent: re-seeding the same files changes nothing; blobs and links are written through a
    temp file and an atomic rename. Returns the snapshot folder.
    """
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise SourceError(f"cannot seed {repo_id!r}: a repo id is org/name.", "Pass an id like org/name.")
    if not COMMIT_RE.match(revision):
        raise SourceError(
            f"cannot seed {repo_id} at {revision!r}: snapshots are named by a full 40-hex commit sha.",
            "Pass the commit sha, not a branch, tag or short sha.",
        )
    files_dir = Path(files_dir)
    if not files_dir.is_dir():
        raise SourceError(f"cannot seed {repo_id}: {files_dir} is not a folder.", "Pass the model's folder.")
    storage = repo_folder(repo_id, Path(cache_dir) if cache_dir else None)
    blobs = storage / "blobs"
    snapshot = storage / "snapshots" / revision
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for src in _source_files(files_dir):
        rel = src.relative_to(files_dir)
        name = _blob_name(src)
        _write_blob(src, blobs / name)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        _link(os.path.relpath(blobs / name, link.parent), link)
    if ref:
        ref_path = storage / "refs" / ref
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        _write_ref(ref_path, revision)
    return snapshot
