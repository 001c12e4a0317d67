"""File hashing and atomic writes: the two file-system promises every stage relies on."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.errors import DiskFullError, OutputError

if TYPE_CHECKING:
    from exporter.manifest_types import AdjustedFrom, FileEntry

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


def current_umask() -> int:
    """The process umask (read by setting it and back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class FileRecord:
    """One file as the manifest records it: path relative to a root, size in bytes, sha256."""

    path: str
    size: int
    sha256: str
    adjusted_from: AdjustedFrom | None = None  # rewritten by the exporter: {sha256 (of the file it came from), reason}

    @classmethod
    def of(cls, root: Path, path: Path) -> FileRecord:
        rel = path.relative_to(root).as_posix()
        return cls(path=rel, size=path.stat().st_size, sha256=sha256_file(path))

    def to_dict(self) -> FileEntry:
        entry: FileEntry = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.adjusted_from is not None:
            entry["adjusted_from"] = self.adjusted_from.copy()
        return entry


def record_files(root: Path, paths: Iterable[Path] | None = None) -> list[FileRecord]:
    """Records for ``paths`` (default: every regular file under ``root``), sorted by path."""
    chosen = paths if paths is not None else (p for p in root.rglob("*") if p.is_file())
    return sorted((FileRecord.of(root, Path(p)) for p in chosen), key=lambda r: r.path)


# ------------------------------------------------------------------------------------------- disk full
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it was raised from, is the disk running out of space (ENOSPC /
    EDQUOT): backends wrap it in their own errors, and a caller that turns failures into a verdict must not."""
    return _full_oserror(exc) is not None


def _full_oserror(exc: BaseException | None) -> OSError | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _mount_of(path: Path) -> Path:
    """The mount point holding ``path`` (its nearest existing folder)."""
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    dev = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


def disk_full_error(where: Path, needed: int, exc: BaseException | None = None) -> DiskFullError:
    """The one line for a write to ``where`` that ran out of space, ``needed`` bytes being about what it takes.

    The mount named is the fuller of ``where``'s and that of the file the OS error names (a backend writing
    to its temp folder), since an error's filename may also be the source of a copy."""
    mounts = {_mount_of(where)}
    refused = getattr(_full_oserror(exc), "filename", None)
    if isinstance(refused, str | os.PathLike):
        mounts.add(_mount_of(Path(refused)))
    mount = min(mounts, key=_free_bytes)
    return DiskFullError(
        f"no space left on {mount} (needed about {max(1, round(needed / 1e6))} MB to write {where}).",
        "Free space there or write elsewhere; nothing partial was left.",
    )


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def written_bytes(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else tree_size(path)
    except OSError:
        return 0


@contextlib.contextmanager
def atomic_path(dest: Path, suffix: str = ".tmp", *, needs: int = 0) -> Iterator[Path]:
    """Yield a free temp path beside ``dest``; when the block completes, rename it onto ``dest``.

    Whatever the block writes there (a file, a symlink) replaces ``dest`` in one step; on any exception
    (Ctrl-C included) the temp path is removed and ``dest`` is untouched. A full disk becomes one
    DiskFullError naming the mount point and about how much was needed (``needs`` bytes, or what was written).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException as exc:
        written = written_bytes(tmp) if tmp.exists() else 0
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if is_disk_full(exc):
            raise disk_full_error(dest, max(needs, written), exc) from exc
        raise


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON to ``path`` through a temp file in the same folder and an atomic rename."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def ensure_writable_parent(dest: Path) -> None:
    """Create ``dest``'s parent and write a probe file in it, or raise OutputError saying why it cannot.

    A real write, not ``os.access``: root passes every permission check yet still cannot write into
    /proc, a read-only mount or a full disk.
    """
    parent = dest.parent
    hint = "Choose a writable location with --out."
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {parent}: {exc.strerror or exc}.", hint) from exc
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.probe-", dir=parent)
    except OSError as exc:
        raise OutputError(f"output folder {parent} is not writable: {exc.strerror or exc}.", hint) from exc
    os.close(fd)
    os.unlink(name)


def check_output_file(dest: Path, *, option: str, replace: bool) -> None:
    """Refuse, before any work, a file output (``--out FILE``, ``--save-recipe``, ``--junit``) that is a
    folder or a link, that exists while ``replace`` is False (the caller's ``--force``), or whose folder
    cannot be written (a real probe write). OutputError (exit 2) naming ``option``."""
    dest = Path(dest)
    if dest.is_symlink():
        raise OutputError(f"{option} {dest} is a symbolic link.", "Pass the path of a new file.")
    if dest.is_dir():
        raise OutputError(
            f"{option} {dest} is a folder; it takes a file path.", f"Pass a file path, e.g. {dest / 'out'}."
        )
    if dest.exists() and not replace:
        raise OutputError(
            f"{option} {dest} already exists; exporter does not overwrite a file without --force.",
            "Pass --force to replace it, or another path.",
        )
    hint = f"Choose a writable location for {option}."
    try:
        ensure_writable_parent(dest)
    except OutputError as exc:
        raise OutputError(exc.message, hint) from None


def check_writable_folder(folder: Path, *, option: str) -> None:
    """Refuse, before any work, an output root (``run --artifacts``) that cannot be created or written."""
    try:
        ensure_writable_parent(Path(folder) / ".exporter-write-probe")
    except OutputError as exc:
        raise OutputError(f"{option} {folder}: {exc.message}", f"Choose a writable folder for {option}.") from None


def tree_size(path: Path) -> int:
    return sum(p.stat(follow_symlinks=False).st_size for p in path.rglob("*") if not p.is_dir())


def find_links(root: Path) -> list[str]:
    """Every symbolic link under ``root`` (files and folders, hidden ones too) as posix relpaths, sorted.

    Links are reported, never followed: a linked folder's content is not walked.
    """
    found = []
    for top, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(top, n)
            if p.is_symlink():
                found.append(p.relative_to(root).as_posix())
    return sorted(found)
