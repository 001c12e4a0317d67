"""Deterministic packages and safe unpacking."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from exporter import manifest as mf
from exporter.errors import FidelityError, IntegrityError, UsageError
from exporter.ship.package import FIXED_MTIME, build_package, unpack_package
from tests.artifact_factory import make_artifact


@pytest.fixture
def artifact(tmp_path) -> Path:
    return make_artifact(tmp_path / "art" / "0123456789ab", recommended="onnx")


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def test_same_input_same_bytes_even_with_other_mtimes_modes_and_location(artifact, tmp_path):
    first = build_package(artifact, "onnx", tmp_path / "a.tar")
    copy = tmp_path / "elsewhere" / "0123456789ab"
    shutil.copytree(artifact, copy)
    for p in copy.rglob("*"):
        if p.is_file():
            os.utime(p, (1_700_000_000, 1_700_000_000))
            p.chmod(0o600)
    second = build_package(copy, "onnx", tmp_path / "b.tar")
    assert first.sha256 == second.sha256
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_gzip_package_is_deterministic_too(artifact, tmp_path):
    a = build_package(artifact, "onnx", tmp_path / "a.tar.gz")
    b = build_package(artifact, "onnx", tmp_path / "b.tgz")
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.tar.gz").read_bytes()[4:8] == b"\0\0\0\0"  # gzip MTIME field


def test_entries_sorted_fixed_metadata_and_only_that_variant(artifact, tmp_path):
    result = build_package(artifact, "onnx-qint8", tmp_path / "p.tar")
    members = _members(result.path)
    names = [m.name for m in members]
    assert names == sorted(names)
    assert "onnx/model_qint8_avx2.onnx" in names and "onnx/model.onnx" not in names
    assert {"config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json", "manifest.json"} <= set(names)
    for m in members:
        assert m.isreg() and (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (FIXED_MTIME, 0, 0, "", "", 0o644)
    with tarfile.open(result.path) as tar:
        narrowed = json.loads(tar.extractfile("manifest.json").read())
    assert [v["id"] for v in narrowed["variants"]] == ["onnx-qint8"]
    assert narrowed["publishable"] is True


def test_default_variant_is_the_recommended_one(artifact):
    result = build_package(artifact)
    assert result.variant == "onnx"
    assert result.path == artifact.parent / "0123456789ab-onnx.tar"


def test_several_variants_and_no_recommendation_asks_for_variant(tmp_path):
    art = make_artifact(tmp_path / "a")
    with pytest.raises(UsageError, match="--variant"):
        build_package(art)
    with pytest.raises(UsageError, match="one variant"):
        build_package(art, "all")


def test_failed_variant_refused_unless_allowed(tmp_path):
    art = make_artifact(tmp_path / "a", failed=("onnx-qint8",))
    with pytest.raises(FidelityError, match="--allow-failed"):
        build_package(art, "onnx-qint8", tmp_path / "p.tar")
    assert not (tmp_path / "p.tar").exists()
    result = build_package(art, "onnx-qint8", tmp_path / "p.tar", allow_failed=True)
    with tarfile.open(result.path) as tar:
        assert json.loads(tar.extractfile("manifest.json").read())["publishable"] is False


def test_tampered_file_refused_and_nothing_written(artifact, tmp_path):
    (artifact / "onnx" / "model.onnx").write_bytes(b"changed")
    with pytest.raises(IntegrityError, match="onnx/model.onnx"):
        build_package(artifact, "onnx", tmp_path / "p.tar", allow_failed=True)
    assert list(tmp_path.glob("*p.tar*")) == []


def test_unpack_round_trip_is_byte_identical(artifact, tmp_path):
    result = build_package(artifact, "onnx", tmp_path / "p.tar")
    narrowed = unpack_package(result.path, tmp_path / "out")
    for rel in mf.listed_files(narrowed):
        assert (tmp_path / "out" / rel).read_bytes() == (artifact / rel).read_bytes()
    mf.require_intact(tmp_path / "out", mf.load(tmp_path / "out"))


def _rewrite(src: Path, dest: Path, edit) -> Path:
    """Copy a package, letting ``edit(members) -> members`` change (TarInfo, bytes) entries."""
    with tarfile.open(src) as tar:
        entries = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(dest, "w") as out:
        for info, data in edit(entries):
            info.size = len(data) if info.isreg() else 0
            out.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return dest


def _with_member(name: str, data: bytes = b"x", kind=tarfile.REGTYPE, link: str = ""):
    def edit(entries):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        return [*entries, (info, data)]

    return edit


def _tamper(entries):
    out = []
    for info, data in entries:
        out.append((info, data[:-1] + bytes([data[-1] ^ 1]) if info.name == "onnx/model.onnx" else data))
    return out


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_with_member("../evil"), "unsafe"),
        (_with_member("/tmp/evil"), "unsafe"),
        (_with_member("link", kind=tarfile.SYMTYPE, link="/etc/passwd"), "link"),
        (_with_member("hard", kind=tarfile.LNKTYPE, link="config.json"), "link"),
        (_with_member("config.json", b"{}"), "twice"),
        (_with_member("extra.txt"), "exactly the files"),
        (_tamper, "sha256"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "duplicate", "unlisted", "tampered"],
)
def test_unpack_refuses_bad_packages_writing_nothing(artifact, tmp_path, edit, match):
    good = build_package(artifact, "onnx", tmp_path / "good.tar").path
    bad = _rewrite(good, tmp_path / "bad.tar", edit)
    work = tmp_path / "w"
    work.mkdir()
    with pytest.raises(IntegrityError, match=match):
        unpack_package(bad, work / "out")
    assert list(work.iterdir()) == []
    assert not (tmp_path / "evil").exists()
