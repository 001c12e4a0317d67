"""File hashing and atomic writes: the two file-system promises every stage relies on."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from exporter.errors import DiskFullError, OutputError, UsageError

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


# ------------------------------------------------------------------------------- reading user files
@contextlib.contextmanager
def open_user_file(path: Path, *, what: str, max_bytes: int, no_links: bool = False) -> Iterator[tuple]:
    """``(binary file, os.stat_result)`` of a file a user named, opened the one safe way.

    Opened without blocking (a FIFO or a device cannot hang the open), then checked on the SAME descriptor
    to be a regular file of at most ``max_bytes`` (a link to ``/dev/zero`` or a pipe is refused, not read);
    ``no_links`` also refuses a symbolic link (a private key). Every refusal is a UsageError (exit 2) naming
    ``what``, the path and the cap. Use ``read_user_file`` unless the caller must see the stat (a key's mode).
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0) if no_links else 0
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist.", "Check the path.") from None
    except OSError as exc:
        if no_links and path.is_symlink():
            raise UsageError(f"{what} {path} is a symbolic link.", "Pass the file itself.") from None
        raise UsageError(
            f"cannot read {what} {path}: {exc.strerror or exc}.", "Check the path and its permissions."
        ) from None
    st = os.fstat(fd)  # checked before fdopen, which refuses a folder with its own IsADirectoryError
    problem = None
    if stat.S_ISDIR(st.st_mode):
        problem = (f"{what} {path} is a folder, not a regular file.", "Pass the path of a file.")
    elif not stat.S_ISREG(st.st_mode):
        problem = (
            f"{what} {path} is not a regular file (a device, pipe or socket); it is not read.",
            "Pass the path of an ordinary file.",
        )
    elif st.st_size > max_bytes:
        problem = (
            f"{what} {path} is {st.st_size:,} bytes, more than the {max_bytes:,}-byte cap for a {what}.",
            "Pass a smaller file.",
        )
    if problem:
        os.close(fd)
        raise UsageError(*problem)
    with os.fdopen(fd, "rb") as fh:
        yield fh, st


def read_user_file(path: Path, *, what: str, max_bytes: int, max_lines: int | None = None) -> bytes:
    """The bytes of a file a user named (probe, calibration, recipe, policy, key, manifest...), capped.

    See ``open_user_file``: a regular file, opened without blocking, at most ``max_bytes`` (checked again
    on what is read, in case it grows) and, with ``max_lines``, at most that many lines. A refusal is a
    UsageError (exit 2) that names the cap.
    """
    with open_user_file(path, what=what, max_bytes=max_bytes) as (fh, _):
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UsageError(
            f"{what} {path} grew past the {max_bytes:,}-byte cap for a {what} while read.", "Pass a smaller file."
        )
    if max_lines is not None:
        lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        if lines > max_lines:
            raise UsageError(
                f"{what} {path} has {lines:,} lines, more than the {max_lines:,}-line cap for a {what}.",
                "Pass a shorter file.",
            )
    return data


def no_alias_yaml_loader(what: str):
    """PyYAML's SafeLoader, refusing any alias (``*name``, ``<<: *name``) where it meets one: an alias
    bomb (a few hundred bytes that expand to gigabytes) never gets past its first alias. Every YAML file a
    user gives (recipes, policies) is parsed with it."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"YAML aliases (*name) are not allowed in a {what}; write the value out", mark
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


MODEL_JSON_MAX_BYTES = 64_000_000  # a model's config/module JSON (not its tokenizer.json, which loaders read)


def read_user_json(path: Path, *, what: str, max_bytes: int):
    """``read_user_file`` parsed as UTF-8 JSON; UsageError (exit 2) for bad UTF-8, bad JSON or a nesting
    so deep that the parser would overflow (``[[[[...``)."""
    data = read_user_file(path, what=what, max_bytes=max_bytes)
    return parse_json(data, f"{what} {path}")


def parse_json(data: bytes | str, what: str):
    """``json.loads`` whose every failure, deep nesting included, is one UsageError naming ``what``."""
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} is not valid UTF-8 (bad byte at offset {exc.start}).", "") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc.msg}, line {exc.lineno}).", "") from None
    except RecursionError:
        raise UsageError(f"{what} is nested too deeply to be JSON the tool wrote or reads.", "") from None


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


def _written(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else _tree_size(path)
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
        written = _written(tmp) if tmp.exists() else 0
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
            written = _written(staging)
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


def _tree_size(path: Path) -> int:
    return sum(p.stat(follow_symlinks=False).st_size for p in path.rglob("*") if not p.is_dir())


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
