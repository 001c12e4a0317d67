"""File hashing and atomic writes: the two file-system promises every stage relies on."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
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
    adjusted_from: dict | None = None  # rewritten by the exporter: {sha256 (of the file it came from), reason}

    @classmethod
    def of(cls, root: Path, path: Path) -> FileRecord:
        rel = path.relative_to(root).as_posix()
        return cls(path=rel, size=path.stat().st_size, sha256=sha256_file(path))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


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


@contextlib.contextmanager
def staged_dir(
    dest: Path, *, replace: bool = False, clone: bool = False, exists_hint: str = "Pass --force to replace it."
) -> Iterator[Path]:
    """Yield a temp folder beside ``dest``; when the block completes, rename it to ``dest``.

    On any exception (Ctrl-C included) the temp folder is removed and ``dest`` is untouched. The temp
    folder is named ``.NAME.partial-PID-XXXX`` (and a replaced ``dest`` is set aside as ``.NAME.old-PID``),
    so what a killed process left behind can be told from a live one's: see ``clean_stale_staging``.
    ``clone`` starts the temp folder as a hard-linked copy of an existing ``dest`` (cheap, no bytes
    copied) so a step can add files and swap the result in; builders must therefore write new files,
    never modify existing ones in place. ``replace`` allows swapping out an existing ``dest``; without it an
    existing ``dest`` is refused with ``exists_hint`` (a caller without --force says what to do instead).
    """
    ensure_writable_parent(dest)
    if dest.exists() and not (replace or clone):
        raise OutputError(f"{dest} already exists.", exists_hint)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-{os.getpid()}-", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700: the folder a user gets follows the umask
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


_PARTIAL = r"\.{name}\.partial-(?P<pid>\d+)-[^/]+"
_OLD = r"\.{name}\.old-(?P<pid>\d+)"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _tree_size(path: Path) -> int:
    return sum(p.stat(follow_symlinks=False).st_size for p in path.rglob("*") if not p.is_dir())


def clean_stale_staging(dest: Path) -> list[str]:
    """Remove the staging folders of ``dest`` that a killed ``staged_dir`` left; one line per folder.

    Only folders named for this ``dest`` whose process (the pid in the name, on this machine) is gone
    are touched; a live writer's are left alone, and so is anything not named by ``staged_dir``. A
    previous ``dest`` set aside (``.NAME.old-PID``) is put back if the kill came before the new one was
    renamed in, else removed. Call it while holding the lock of ``dest`` (``exporter.outdir.claim``).
    """
    notes: list[str] = []
    parent, name = dest.parent, re.escape(dest.name)
    if not parent.is_dir():
        return notes
    partial, old = re.compile(_PARTIAL.format(name=name)), re.compile(_OLD.format(name=name))
    for entry in sorted(parent.iterdir()):
        m = partial.fullmatch(entry.name) or old.fullmatch(entry.name)
        if not m or entry.is_symlink() or not entry.is_dir() or _pid_alive(int(m["pid"])):
            continue
        if m.re is old and not dest.exists():
            os.replace(entry, dest)
            notes.append(f"Restored {dest} from {entry.name}, set aside by a killed run (pid {m['pid']}).")
            continue
        size = _tree_size(entry)
        shutil.rmtree(entry)
        notes.append(f"Removed {entry} ({size / 1e6:.1f} MB), left by a run that was killed (pid {m['pid']} is gone).")
    return notes


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
