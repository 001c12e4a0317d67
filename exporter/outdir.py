"""The output folder of a command that writes an artifact: is it safe to write, and who is writing it.

Three promises, checked before any heavy work:

- ``check_out``: the folder can be written (a real probe write), is not a file or a link, and holds
  nothing the tool did not write. A folder may be replaced (``--force``, ``pull --force``) only if it is
  empty or one of our artifacts: a valid exporter ``manifest.json`` and no file it does not list.
- ``claim``: one writer per folder. An exclusive ``flock`` on ``.NAME.lock`` beside the folder, holding
  who took it (pid, host, start time); a second writer is refused at once (exit 2) naming the holder,
  rather than waiting an unknown time behind a build. The kernel drops the lock when its process dies,
  so a killed run never blocks the next one.
- while holding the lock, the staging folders a killed run left beside the folder are removed (see
  ``staging.clean_stale_staging``); ``claim`` yields one line per folder for the CLI to print.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from exporter.errors import OutputError, UsageError
from exporter.fsutil import ensure_writable_parent, sha256_bytes, sha256_file
from exporter.staging import clean_stale_staging

_NEVER = "exporter never deletes or overwrites what it did not write"
UNRESOLVED_SHA = "<sha12 of the resolved commit>"  # a dry run's folder name before the pin is resolved
UNHASHED_FILES = "<first 12 hex of the hash of its files>"  # ... and a local folder's, before it is hashed


def artifact_dir(root: Path, repo: str, sha: str | None) -> Path:
    """Where an export of Hub repo ``repo`` at commit ``sha`` goes: ``root/<org>--<name>/<sha12>``.

    The one owner of the layout (the export, its dry run and ``exporter plan`` ask here); ``sha`` None (a
    dry run of a pin not resolved yet) names the last folder ``UNRESOLVED_SHA``."""
    return Path(root) / repo.replace("/", "--") / (sha[:12] if sha else UNRESOLVED_SHA)


def local_artifact_dir(root: Path, folder: Path, files=None) -> Path:
    """Where an export of the local model ``folder`` goes: ``root/local--<name>/<hash12>``, the hash over
    its ``files`` (FileRecords: path, size, sha256); None (a dry run, nothing hashed) gives ``UNHASHED_FILES``."""
    if files is None:
        return Path(root) / f"local--{Path(folder).name}" / UNHASHED_FILES
    listing = "".join(f"{r.path} {r.size} {r.sha256}\n" for r in files)
    return Path(root) / f"local--{Path(folder).name}" / sha256_bytes(listing.encode())[:12]


_SHOWN = 3  # unlisted files named in a refusal


def check_out(out: Path) -> None:
    """Refuse an output folder that cannot be written or holds anything but an artifact of ours."""
    if out.is_symlink():
        raise OutputError(f"{out} is a symbolic link.", "Pass the folder it points to, or a new folder.")
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"{out} is a file, not a folder; exporter will not replace a file with a folder.",
            "Pass a new folder path, or move the file away.",
        )
    if out.is_dir():
        reason = foreign_content(out)
        if reason:
            raise OutputError(f"{reason}; {_NEVER}.", "Pass a new or empty folder, or move that folder away.")
    ensure_writable_parent(out)


def foreign_content(folder: Path) -> str | None:
    """Why replacing ``folder`` could lose something the tool did not write (None: empty, or all ours)."""
    from exporter import manifest as mf

    entries = [p for p in folder.rglob("*") if p.is_symlink() or not p.is_dir()]
    if not entries:
        return None
    if not (folder / mf.MANIFEST_NAME).is_file() or (folder / mf.MANIFEST_NAME).is_symlink():
        return f"{folder} exists and is not an exporter artifact (it holds files but no {mf.MANIFEST_NAME})"
    try:
        manifest = mf.load(folder)
    except UsageError as exc:
        return f"{folder} exists and is not an exporter artifact ({exc.message.rstrip('.')})"
    listed, written = mf.listed_files(manifest), mf.load_written(folder)

    def ours(p: Path, rel: str) -> bool:
        """Listed by the manifest or the tool's record of what it wrote, with the bytes recorded there."""
        if p.is_symlink():
            return False
        if rel in (mf.MANIFEST_NAME, mf.WRITTEN_NAME):
            return True
        if rel in listed:
            return p.stat().st_size == listed[rel]["size"] and sha256_file(p) == listed[rel]["sha256"]
        return rel in written and sha256_file(p) == written[rel]

    unlisted = sorted(rel for p in entries if not ours(p, rel := p.relative_to(folder).as_posix()))
    if unlisted:
        more = f" and {len(unlisted) - _SHOWN} more" if len(unlisted) > _SHOWN else ""
        return (
            f"{folder} holds files its manifest does not list or that changed since the tool wrote them "
            f"({', '.join(unlisted[:_SHOWN])}{more})"
        )
    return None


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def claim(out: Path) -> Iterator[list[str]]:
    """Hold the lock of ``out`` for the block, after cleaning what killed runs left; yield those notes.

    Raises OutputError (exit 2) naming the holder when another process has the lock.
    """
    ensure_writable_parent(out)
    path = lock_path(out)
    fd = _acquire(path, out)
    try:
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        os.write(fd, json.dumps(holder).encode())
        yield clean_stale_staging(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: a waiter that opened it re-checks the inode
        os.close(fd)


def _acquire(path: Path, out: Path) -> int:
    """An fd holding an exclusive flock on the lock file now at ``path``."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {path}: {exc.strerror or exc}.", "") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise OutputError(
                f"{out} is being written by another exporter run ({holder}).",
                "Wait for it to finish (it will have written the artifact), or pass another --out.",
            ) from None
        try:
            current = os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)  # the holder released and removed it between our open and flock: try again


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet recorded itself"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
