"""Staging folders: a folder output is built beside its destination and renamed in whole; each staging folder
is marked as ours, so what a killed run left can be cleaned (or set back) safely."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from exporter.errors import OutputError, UsageError
from exporter.fsutil import disk_full_error, ensure_writable_parent, is_disk_full, tree_size, written_bytes
from exporter.user_files import parse_json, read_user_file


@contextlib.contextmanager
def staged_dir(
    dest: Path,
    *,
    replace: bool = False,
    clone: bool = False,
    exists_hint: str = "Pass --force to replace it.",
    needs: int = 0,
) -> Iterator[Path]:
    """Yield a temp folder beside ``dest``; when the block completes, rename it to ``dest``.

    On any exception (Ctrl-C included) the temp folder is removed and ``dest`` is untouched. The temp
    folder is ``.NAME.partial-PID-XXXX/content`` (and a replaced ``dest`` is set aside in
    ``.NAME.old-PID-XXXX/``), each staging folder marked as ours, so what a killed process left behind can be
    told from a live one's and from a user's folder of the same name: see ``clean_stale_staging``.
    ``clone`` starts the temp folder as a hard-linked copy of an existing ``dest`` (cheap, no bytes
    copied) so a step can add files and swap the result in; builders must therefore write new files,
    never modify existing ones in place. ``replace`` allows swapping out an existing ``dest``; without it an
    existing ``dest`` is refused with ``exists_hint`` (a caller without --force says what to do instead).
    A full disk becomes one DiskFullError (see ``atomic_path``), ``needs`` being the bytes the caller expects.
    """
    ensure_writable_parent(dest)
    if dest.exists() and not (replace or clone):
        raise OutputError(f"{dest} already exists.", exists_hint)
    staging = _marked_dir(dest, "partial")
    try:
        work = staging / CONTENT
        if clone and dest.is_dir():
            shutil.copytree(dest, work, copy_function=os.link)
        else:
            work.mkdir()
        yield work
        if dest.exists():
            old = _marked_dir(dest, "old")
            try:
                os.replace(dest, old / SET_ASIDE)
            except BaseException:
                shutil.rmtree(old, ignore_errors=True)
                raise
            os.replace(work, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, dest)
    except BaseException as exc:
        if is_disk_full(exc):
            written = written_bytes(staging)
            shutil.rmtree(staging, ignore_errors=True)
            raise disk_full_error(dest, max(needs, written), exc) from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# A staging folder is ``.NAME.partial-PID-XXXX`` (the new content, in CONTENT) or ``.NAME.old-PID-XXXX`` (the
# replaced ``dest``, in SET_ASIDE), and holds STAGING_MARKER: who made it (tool, pid, host, for which NAME).
# The marker sits beside the content, never in it: what is renamed to ``dest`` holds only what was written.
# ``clean_stale_staging`` touches only folders whose marker says a dead process of ours made them here:
# a user's folder that merely has such a name is never deleted or "restored".
STAGING_MARKER = ".exporter-staging.json"


SET_ASIDE = "set-aside"


CONTENT = "content"


_TOOL = "exporter"


_PARTIAL = r"\.{name}\.partial-(?P<pid>\d+)-[^/]+"


_OLD = r"\.{name}\.old-(?P<pid>\d+)-[^/]+"


def _marked_dir(dest: Path, kind: str) -> Path:
    """A new staging folder beside ``dest`` (``kind``: partial or old) holding its marker."""
    import socket

    folder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{kind}-{os.getpid()}-", dir=dest.parent))
    marker = {"tool": _TOOL, "pid": os.getpid(), "host": socket.gethostname(), "dest": dest.name, "kind": kind}
    try:
        (folder / STAGING_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full_error(dest, 0, exc) from exc
        raise
    return folder


def _made_by_us(folder: Path, dest: Path, pid: int) -> bool:
    """True when ``folder`` holds a marker of ours for ``dest`` and ``pid``, made on this machine."""
    import socket

    try:
        marker = parse_json(read_user_file(folder / STAGING_MARKER, what="staging marker", max_bytes=4096), "marker")
    except UsageError:
        return False
    return (
        isinstance(marker, dict)
        and marker.get("tool") == _TOOL
        and marker.get("pid") == pid
        and (marker.get("host") == socket.gethostname() and marker.get("dest") == dest.name)
    )


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


def clean_stale_staging(dest: Path) -> list[str]:
    """Remove the staging folders of ``dest`` that a killed ``staged_dir`` left; one line per folder.

    Only folders named for this ``dest`` AND holding our marker for it, whose process (the pid in both,
    on this machine) is gone, are touched; a live writer's are left alone, and so is anything not made
    by ``staged_dir`` (a user's folder of the same name). A previous ``dest`` set aside (in
    ``.NAME.old-PID-XXXX``) is put back if the kill came before the new one was renamed in, else removed.
    Call it while holding the lock of ``dest`` (``exporter.outdir.claim``).
    """
    notes: list[str] = []
    parent, name = dest.parent, re.escape(dest.name)
    if not parent.is_dir():
        return notes
    partial, old = re.compile(_PARTIAL.format(name=name)), re.compile(_OLD.format(name=name))
    for entry in sorted(parent.iterdir()):
        m = partial.fullmatch(entry.name) or old.fullmatch(entry.name)
        if not m or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(m["pid"])
        if _pid_alive(pid) or not _made_by_us(entry, dest, pid):
            continue
        kept = entry / SET_ASIDE
        if m.re is old and not dest.exists() and kept.is_dir() and not kept.is_symlink():
            os.replace(kept, dest)
            shutil.rmtree(entry)
            notes.append(f"Restored {dest} from {entry.name}, set aside by a killed run (pid {m['pid']}).")
            continue
        size = tree_size(entry)
        shutil.rmtree(entry)
        notes.append(f"Removed {entry} ({size / 1e6:.1f} MB), left by a run that was killed (pid {m['pid']} is gone).")
    return notes
