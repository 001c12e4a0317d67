"""Deterministic packages of one variant: build the tar, and read one back safely.

A package holds exactly what a serving host needs for one variant: the shared config/tokenizer/module
files, the variant's own files, and ``manifest.json`` narrowed to that variant. Entries sit at the tar
root, sorted by path, with fixed mtime/uid/gid/owner names/mode, so the same input gives the same bytes
(and digest). ``.tar.gz``/``.tgz`` outputs are gzip'd with no file name and a zero timestamp.

This module also holds the rules every reader of a published variant shares (``safe_relpath``,
``variant_files``, ``select_variants``, ``manifest_bytes``), so package and registry agree on them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from exporter import manifest as mf
from exporter.errors import FidelityError, IntegrityError, OutputError, UsageError
from exporter.fsutil import atomic_path, check_output_file, sha256_file
from exporter.outdir import check_out
from exporter.staging import staged_dir

# 2000-01-01T00:00:00Z: a fixed, plausible timestamp (GNU tar warns about 0).
FIXED_MTIME = 946_684_800
FILE_MODE = 0o644
_CHUNK = 1 << 20


def manifest_bytes(manifest: dict) -> bytes:
    """The exact bytes a (narrowed) manifest is stored as, in packages and as the OCI config blob."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def safe_relpath(path: str, where: str) -> str:
    """Return ``path`` if it is a plain relative POSIX path inside its root, else raise IntegrityError.

    Refused: empty, absolute, drive or backslash, ``.``/``..``/empty components, NUL or control characters.
    """
    bad = (
        not path
        or path.startswith("/")
        or "\\" in path
        or ":" in PurePosixPath(path).parts[0]
        or any(ord(c) < 32 for c in path)
        or any(part in ("", ".", "..") for part in path.split("/"))
    )
    if bad:
        raise IntegrityError(
            f"{where} names an unsafe file path {path!r} (absolute, '..' or malformed).",
            "Refusing it; do not use this artifact, and tell whoever published it.",
        )
    return path


def check_layout(paths: list[str], where: str) -> None:
    """Refuse duplicate paths, the reserved manifest name, and a path that is also another's folder."""
    seen: set[str] = set()
    for p in paths:
        safe_relpath(p, where)
        if p in seen:
            raise IntegrityError(f"{where} lists {p!r} twice.", "Refusing it; re-publish the artifact.")
        seen.add(p)
    if mf.MANIFEST_NAME in seen:
        raise IntegrityError(f"{where} ships its own {mf.MANIFEST_NAME} as a file.", "Refusing it.")
    for p in seen:
        parts = p.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise IntegrityError(
                    f"{where} uses {'/'.join(parts[:i])!r} both as a file and a folder.", "Refusing it."
                )


def default_variant(manifest: dict) -> str:
    """The recommended variant, else the only one; otherwise ask for --variant."""
    rec = (manifest.get("recommended") or {}).get("variant")
    if rec:
        return rec
    ids = mf.variant_ids(manifest)
    if len(ids) == 1:
        return ids[0]
    raise UsageError(
        "this artifact has several variants and no recommended one.",
        f"Pass --variant with one of: {', '.join(ids) or '(none)'}.",
    )


def select_variants(manifest: dict, variants: str | None) -> list[str]:
    """``None`` -> the default variant, ``"all"`` -> every variant, else the comma-separated ids (checked)."""
    if variants is None:
        return [default_variant(manifest)]
    if variants == "all":
        return mf.variant_ids(manifest)
    ids = list(dict.fromkeys(v.strip() for v in variants.split(",") if v.strip()))
    for vid in ids:
        mf.get_variant(manifest, vid)
    return ids


def variant_files(manifest: dict, variant_id: str) -> list[dict]:
    """Shared files plus the variant's own, sorted by path (a variant file wins over a shared one)."""
    return [rec for _, rec in sorted(mf.listed_files(manifest, [variant_id]).items())]


def require_publishable(artifact: Path, manifest: dict, variant_id: str, *, allow_failed: bool) -> bool:
    """Check a variant may leave this machine; return True when it goes out only thanks to ``allow_failed``.

    Files that no longer match the manifest are always refused (a consumer could never verify them);
    a variant whose status or parity is not "passed" is refused unless ``allow_failed``.
    """
    v = mf.get_variant(manifest, variant_id)
    if not v["files"]:
        raise UsageError(f"variant {variant_id!r} has no files (status {v['status']}).", "Re-export it.")
    mf.require_intact(artifact, manifest, [variant_id])
    passed = v["status"] == "passed" and bool((v.get("parity") or {}).get("passed"))
    if not passed and not allow_failed:
        raise FidelityError(
            f"variant {variant_id!r} did not pass its gate (status {v['status']}).",
            "Publish a passing variant, or pass --allow-failed to publish it marked as failed.",
        )
    return not passed


@dataclass(frozen=True)
class PackageResult:
    path: Path
    variant: str
    sha256: str
    size: int
    files: int


def default_package_path(artifact: Path, variant_id: str) -> Path:
    artifact = artifact.resolve()
    return artifact.parent / f"{artifact.name}-{variant_id}.tar"


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _write_tar(fileobj, artifact: Path, manifest: dict, variant_id: str) -> int:
    narrowed = mf.narrow(manifest, variant_id)
    data = manifest_bytes(narrowed)
    entries: list[tuple[str, Path | bytes]] = [(mf.MANIFEST_NAME, data)]
    entries += [(rec["path"], artifact / rec["path"]) for rec in variant_files(manifest, variant_id)]
    entries.sort(key=lambda e: e[0])
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, src in entries:
            if isinstance(src, bytes):
                tar.addfile(_tarinfo(name, len(src)), io.BytesIO(src))
            else:
                with open(src, "rb") as fh:
                    tar.addfile(_tarinfo(name, os.fstat(fh.fileno()).st_size), fh)
    return len(entries)


def build_package(
    artifact: Path,
    variant: str | None = None,
    out: Path | None = None,
    *,
    allow_failed: bool = False,
    replace: bool = False,
) -> PackageResult:
    """Write the deterministic package of one variant to ``out`` (atomically) and return its digest.

    An existing ``out`` is refused unless ``replace`` (``--force``): it may be a file of the user's."""
    artifact = Path(artifact)
    manifest = mf.load(artifact)
    if variant == "all":
        raise UsageError("a package holds one variant.", "Pass --variant ID (not 'all').")
    (variant_id,) = select_variants(manifest, variant)
    require_publishable(artifact, manifest, variant_id, allow_failed=allow_failed)
    out = Path(out) if out is not None else default_package_path(artifact, variant_id)
    if out.is_dir():
        raise OutputError(
            f"{out} is a folder; a package is one file.", f"Pass a file path, e.g. --out {out / 'model.tar'}."
        )
    check_output_file(out, option="--out", replace=replace)
    gz = out.name.endswith((".tar.gz", ".tgz"))
    needs = sum(r["size"] for r in mf.listed_files(mf.narrow(manifest, variant_id)).values())
    with atomic_path(out, needs=needs) as tmp:
        with open(tmp, "wb") as raw:
            if gz:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as z:
                    count = _write_tar(z, artifact, manifest, variant_id)
            else:
                count = _write_tar(raw, artifact, manifest, variant_id)
        os.chmod(tmp, FILE_MODE)
    return PackageResult(out, variant_id, sha256_file(out), out.stat().st_size, count)


def _member_name(info: tarfile.TarInfo, where: str) -> str:
    if not info.isreg():
        kind = "link" if (info.issym() or info.islnk()) else "non-file entry"
        raise IntegrityError(f"{where} contains a {kind} {info.name!r}.", "Refusing it; packages hold files only.")
    return safe_relpath(info.name, where)


def unpack_package(package: Path, dest: Path, *, replace: bool = False) -> dict:
    """Extract a package into ``dest`` after checking it, writing nothing unless everything matches.

    Refuses links and other non-files, unsafe or duplicate paths, a missing or invalid manifest, files
    the manifest does not list (or lists but are absent), and any size/sha256 mismatch. Files are staged
    in a temp folder beside ``dest`` and renamed into place. Returns the (narrowed) manifest.
    """
    package, dest = Path(package), Path(dest)
    if replace:
        check_out(dest)  # replaces only an empty folder or an artifact of ours
    where = f"package {package.name}"
    try:
        tar = tarfile.open(package, mode="r:*")
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(f"cannot read {package}: {exc}.", "Pass a file made by `exporter package`.") from exc
    with tar, staged_dir(dest, replace=replace) as tmp:
        infos = tar.getmembers()
        names = [_member_name(i, where) for i in infos]
        check_layout([n for n in names if n != mf.MANIFEST_NAME], where)
        if names.count(mf.MANIFEST_NAME) != 1:
            raise IntegrityError(f"{where} has no single {mf.MANIFEST_NAME}.", "Re-create it with `exporter package`.")
        member = tar.extractfile(infos[names.index(mf.MANIFEST_NAME)])
        assert member is not None  # _member_name let regular files only through
        data = member.read()
        narrowed = parse_narrowed_manifest(data, where)
        expected = mf.listed_files(narrowed)
        got = sorted(n for n in names if n != mf.MANIFEST_NAME)
        if got != sorted(expected):
            raise IntegrityError(
                f"{where} does not hold exactly the files its manifest lists.", "Re-create it with `exporter package`."
            )
        for info, name in zip(infos, names, strict=True):
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(info)
            if name == mf.MANIFEST_NAME:
                target.write_bytes(data)
                continue
            digest = _copy_hashing(src, target)
            rec = expected[name]
            if digest != rec["sha256"] or target.stat().st_size != rec["size"]:
                raise IntegrityError(f"{where}: {name} does not match its sha256.", "Refusing it; re-create it.")
    return narrowed


def _copy_hashing(src, target: Path) -> str:
    """Copy a stream into a new file (never following links), return its hex sha256."""
    h = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def parse_narrowed_manifest(data: bytes, where: str) -> dict:
    """Parse and validate a manifest that must describe exactly one variant; errors are IntegrityErrors."""
    try:
        narrowed = json.loads(data.decode("utf-8"))
        mf.validate(narrowed, where)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{where} carries a manifest that is not JSON.", "Refusing it.") from exc
    except UsageError as exc:
        raise IntegrityError(exc.message, "Refusing it; re-publish the artifact.") from exc
    if len(narrowed["variants"]) != 1:
        n = len(narrowed["variants"])
        raise IntegrityError(f"{where} carries a manifest with {n} variants, not 1.", "Refusing it.")
    paths = [f["path"] for f in narrowed["shared_files"]] + [f["path"] for f in narrowed["variants"][0]["files"]]
    for p in paths:
        safe_relpath(p, where)
    return narrowed
