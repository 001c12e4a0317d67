"""File hashing and atomic writes: the two file-system promises every stage relies on."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from exporter.errors import OutputError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class FileRecord:
    """One file as the manifest records it: path relative to a root, size in bytes, sha256."""

    path: str
    size: int
    sha256: str

    @classmethod
    def of(cls, root: Path, path: Path) -> FileRecord:
        rel = path.relative_to(root).as_posix()
        return cls(path=rel, size=path.stat().st_size, sha256=sha256_file(path))

    def to_dict(self) -> dict:
        return asdict(self)


def record_files(root: Path, paths: Iterable[Path] | None = None) -> list[FileRecord]:
    """Records for ``paths`` (default: every regular file under ``root``), sorted by path."""
    chosen = paths if paths is not None else (p for p in root.rglob("*") if p.is_file())
    return sorted((FileRecord.of(root, Path(p)) for p in chosen), key=lambda r: r.path)


@contextlib.contextmanager
def atomic_path(dest: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a free temp path beside ``dest``; when the block completes, rename it onto ``dest``.

    Whatever the block writes there (a file, a symlink) replaces ``dest`` in one step; on any exception
    (Ctrl-C included) the temp path is removed and ``dest`` is untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON to ``path`` through a temp file in the same folder and an atomic rename."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def ensure_writable_parent(dest: Path) -> None:
    """Create ``dest``'s parent or raise OutputError saying why it cannot be written."""
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create output folder {parent}: {exc.strerror or exc}.",
            "Choose a writable location with --out.",
        ) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable.", "Choose a writable location with --out.")


@contextlib.contextmanager
def staged_dir(dest: Path, *, replace: bool = False, clone: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``dest``; when the block completes, rename it to ``dest``.

    On any exception (Ctrl-C included) the temp folder is removed and ``dest`` is untouched.
    ``clone`` starts the temp folder as a hard-linked copy of an existing ``dest`` (cheap, no bytes
    copied) so a step can add files and swap the result in; builders must therefore write new files,
    never modify existing ones in place. ``replace`` allows swapping out an existing ``dest``.
    """
    ensure_writable_parent(dest)
    if dest.exists() and not (replace or clone):
        raise OutputError(f"{dest} already exists.", "Pass --force to replace it.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        if clone and dest.is_dir():
            shutil.copytree(dest, tmp, copy_function=os.link, dirs_exist_ok=True)
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
