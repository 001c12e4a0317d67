"""The source stage on a tiny model laid out as a real Hub cache entry, resolved offline."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from exporter.errors import ExitCode, HubError, IntegrityError, SourceError
from exporter.fsutil import sha256_file
from exporter.source import resolve as source
from exporter.source.hubcache import hub_cache_dir
from exporter.source.vetting import safetensors_problem
from tests import hub_fixtures as hf
from tests.hub_fixtures import OTHER_SHA, TINY_REPO, TINY_SHA


def _resolve(model: str, revision: str | None = None, **kw) -> source.ResolvedSource:
    return source.resolve(source.parse_model_ref(model, revision), **kw)


@pytest.fixture
def seeded(tiny_model_dir) -> Path:
    return hf.seed_tiny(tiny_model_dir)


# ----------------------------------------------------------------------------- table of bad inputs
def _plain(d):
    return d


BAD_INPUTS = [
    # id, damage to the model before seeding, MODEL, --revision, resolve kwargs, error, message fragment
    ("branch", _plain, f"{TINY_REPO}@main", None, {}, SourceError, "branch or tag"),
    ("branch-flag", _plain, TINY_REPO, "main", {}, SourceError, "only a full 40-hex commit sha pins"),
    ("tag", _plain, f"{TINY_REPO}@v1.0", None, {}, SourceError, "branch or tag"),
    ("no-revision", _plain, TINY_REPO, None, {}, SourceError, "is not pinned to a commit"),
    ("short-sha", _plain, f"{TINY_REPO}@{TINY_SHA[:7]}", None, {}, SourceError, "is a short sha"),
    ("upper-sha", _plain, f"{TINY_REPO}@{TINY_SHA.upper()}", None, {}, SourceError, "lowercase"),
    (
        "sha-not-cached",
        _plain,
        f"{TINY_REPO}@{OTHER_SHA}",
        None,
        {},
        SourceError,
        f"{TINY_REPO}@{OTHER_SHA} is not in the local Hub cache",
    ),
    (
        "unknown-repo",
        _plain,
        f"nobody/missing@{TINY_SHA}",
        None,
        {},
        SourceError,
        "nobody/missing is not in the local Hub cache",
    ),
    (
        "unpinned-ref-not-cached",
        _plain,
        f"{TINY_REPO}@dev",
        None,
        {"allow_unpinned": True},
        SourceError,
        "is not in the local Hub cache",
    ),
    ("remote-code", hf.add_auto_map, f"{TINY_REPO}@{TINY_SHA}", None, {}, SourceError, "needs trust_remote_code"),
    (
        "custom-module",
        hf.add_custom_module,
        f"{TINY_REPO}@{TINY_SHA}",
        None,
        {},
        SourceError,
        "custom module type 'custom_pkg.Evil'",
    ),
    ("pickle-only", hf.make_pickle_only, f"{TINY_REPO}@{TINY_SHA}", None, {}, SourceError, "only pickle weights"),
    ("missing-tokenizer", hf.drop_tokenizer, f"{TINY_REPO}@{TINY_SHA}", None, {}, SourceError, "has no tokenizer"),
    ("truncated-safetensors", hf.truncate_safetensors, f"{TINY_REPO}@{TINY_SHA}", None, {}, SourceError, "truncated"),
]


@pytest.mark.parametrize(
    "damage, model, revision, kwargs, error, fragment",
    [pytest.param(*row[1:], id=row[0]) for row in BAD_INPUTS],
)
def test_bad_inputs(tiny_model_copy, damage, model, revision, kwargs, error, fragment):
    hf.seed_tiny(damage(tiny_model_copy))
    with pytest.raises(error) as info:
        _resolve(model, revision, **kwargs)
    assert fragment in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE
    assert info.value.hint, "every error says what to do"
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    "model, revision",
    [
        ("a/b/c", None),
        (f"@{TINY_SHA}", None),
        ("org/na me", None),
        (f"org/name@{TINY_SHA} extra", None),
        ("org/name@", None),
        ("org/name@a@b", None),
        ("", None),
        ("org--x/y", None),
        ("justaname", None),
        (f"org/name@{TINY_SHA}", OTHER_SHA),
        ("org/name", " "),
    ],
)
def test_malformed_model_is_refused_with_the_accepted_forms(model, revision):
    with pytest.raises(SourceError) as info:
        source.parse_model_ref(model, revision)
    assert info.value.exit_code == ExitCode.USAGE
    assert "org/name@<40-hex commit sha>" in str(info.value)


def test_missing_local_folder_is_refused(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        source.parse_model_ref(str(tmp_path / "nope"))


def test_parse_forms(tiny_model_dir):
    assert source.parse_model_ref(f"{TINY_REPO}@{TINY_SHA}") == source.ModelRef(TINY_REPO, TINY_SHA)
    assert source.parse_model_ref(TINY_REPO, TINY_SHA) == source.ModelRef(TINY_REPO, TINY_SHA)
    assert source.parse_model_ref(f"{TINY_REPO}@{TINY_SHA}", TINY_SHA).revision == TINY_SHA
    assert source.parse_model_ref(str(tiny_model_dir)) == source.ModelRef(local_path=tiny_model_dir.resolve())
    with pytest.raises(SourceError, match="--revision does not apply"):
        source.parse_model_ref(str(tiny_model_dir), TINY_SHA)


# ------------------------------------------------------------------------------------- good paths
def test_pinned_resolve_reads_the_cache_snapshot_and_records_files(tiny_model_dir, seeded):
    src = _resolve(f"{TINY_REPO}@{TINY_SHA}")
    assert src.path == hub_cache_dir() / "models--tests-org--tiny-st" / "snapshots" / TINY_SHA
    assert src.path == seeded
    assert (src.repo_id, src.revision, src.requested_ref, src.pinned) == (TINY_REPO, TINY_SHA, TINY_SHA, True)
    assert (src.kind, src.weights_format, src.local_path) == ("sentence-transformer", "safetensors", None)
    paths = [r.path for r in src.files]
    assert {"model.safetensors", "config.json", "modules.json", "tokenizer.json", "1_Pooling/config.json"} <= set(paths)
    assert "README.md" not in paths  # not needed to load
    for rec in src.files:
        original = tiny_model_dir / rec.path
        assert rec.sha256 == sha256_file(original)
        assert rec.size == original.stat().st_size
    d = src.to_dict()
    assert d["repo"] == TINY_REPO and d["revision"] == TINY_SHA and d["files"][0].keys() == {"path", "size", "sha256"}


def test_resolution_goes_through_snapshot_download(seeded, monkeypatch):
    import huggingface_hub

    calls = []
    real = huggingface_hub.snapshot_download

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    _resolve(TINY_REPO, TINY_SHA)
    ((args, kwargs),) = calls
    assert args == (TINY_REPO,)
    assert kwargs["revision"] == TINY_SHA and kwargs["local_files_only"] is True
    assert Path(kwargs["cache_dir"]) == hub_cache_dir()


def test_env_is_read_at_call_time(tiny_model_dir, tmp_path, monkeypatch):
    """HF_HOME alone (no HF_HUB_CACHE) is honoured even though huggingface_hub was imported earlier."""
    import huggingface_hub  # noqa: F401 - imported before the env changes

    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home2"))
    snap = hf.seed_tiny(tiny_model_dir)
    assert snap.is_relative_to(tmp_path / "home2" / "hub")
    assert _resolve(f"{TINY_REPO}@{TINY_SHA}").path == snap


@pytest.mark.parametrize("ref", ["main", "v1.0", TINY_SHA[:8]])
def test_allow_unpinned_records_ref_and_commit(tiny_model_dir, ref):
    hf.seed_tiny(tiny_model_dir, ref="main")
    hf.seed_tiny(tiny_model_dir, ref="v1.0")
    src = _resolve(f"{TINY_REPO}@{ref}", allow_unpinned=True)
    assert (src.revision, src.requested_ref, src.pinned) == (TINY_SHA, ref, False)
    assert src.path.name == TINY_SHA


def test_allow_unpinned_without_revision_uses_main(seeded):
    src = _resolve(TINY_REPO, allow_unpinned=True)
    assert (src.revision, src.requested_ref, src.pinned) == (TINY_SHA, "main", False)


def test_local_folder_is_unpinned_and_every_file_it_loads_hashed(tiny_model_dir):
    src = _resolve(str(tiny_model_dir))
    assert (src.repo_id, src.revision, src.requested_ref, src.pinned) == (None, None, None, False)
    assert src.local_path == src.path == tiny_model_dir.resolve()
    every = sorted(p.relative_to(tiny_model_dir).as_posix() for p in tiny_model_dir.rglob("*") if p.is_file())
    assert sorted([r.path for r in src.files] + src.skipped) == every  # each file is either hashed or skipped
    assert src.skipped == ["README.md"]  # a model card: not loaded, not copied (issue 21 row 1)
    assert all(r.sha256 == sha256_file(tiny_model_dir / r.path) for r in src.files)


def test_local_folder_is_vetted_too(tiny_model_copy):
    hf.truncate_safetensors(tiny_model_copy)
    with pytest.raises(SourceError, match="truncated"):
        _resolve(str(tiny_model_copy))


def test_pickle_only_is_accepted_with_allow_pickle(tiny_model_copy):
    hf.seed_tiny(hf.make_pickle_only(tiny_model_copy))
    src = _resolve(f"{TINY_REPO}@{TINY_SHA}", allow_pickle=True)
    assert src.weights_format == "pickle"
    assert "pytorch_model.bin" in [r.path for r in src.files]


def test_safetensors_preferred_over_pickle(tiny_model_copy):
    hf.seed_tiny(hf.make_pickle_only(tiny_model_copy, keep_safetensors=True))
    for allow in (False, True):
        src = _resolve(f"{TINY_REPO}@{TINY_SHA}", allow_pickle=allow)
        assert src.weights_format == "safetensors"
        assert "pytorch_model.bin" not in [r.path for r in src.files]


def test_remote_code_is_accepted_with_trust_remote_code(tiny_model_copy):
    hf.seed_tiny(hf.add_auto_map(tiny_model_copy))
    assert _resolve(f"{TINY_REPO}@{TINY_SHA}", trust_remote_code=True).pinned


def test_repo_exports_and_training_state_are_never_used(tiny_model_copy):
    hf.seed_tiny(hf.add_repo_exports(tiny_model_copy))
    paths = [r.path for r in _resolve(f"{TINY_REPO}@{TINY_SHA}").files]
    assert not [p for p in paths if p.startswith(("onnx/", "openvino/")) or p in ("tf_model.h5", "training_args.bin")]


def test_kind_from_config_sentence_transformers(tiny_model_copy):
    import json

    cfg = tiny_model_copy / "config_sentence_transformers.json"
    data = json.loads(cfg.read_text())
    data["model_type"] = "SparseEncoder"
    cfg.write_text(json.dumps(data))
    assert _resolve(str(tiny_model_copy)).kind == "sparse-encoder"


def test_the_resolved_snapshot_loads_with_sentence_transformers(seeded):
    from sentence_transformers import SentenceTransformer

    src = _resolve(f"{TINY_REPO}@{TINY_SHA}")
    model = SentenceTransformer(str(src.path), device="cpu", local_files_only=True)
    assert model.encode(["hello world"]).shape[0] == 1


# ------------------------------------------------------------------------------ damaged cache entries
def test_tampered_cache_blob_is_an_integrity_error(seeded):
    blob = Path(os.path.realpath(seeded / "config.json"))
    blob.write_text(blob.read_text().replace("2", "3"))
    with pytest.raises(IntegrityError) as info:
        _resolve(f"{TINY_REPO}@{TINY_SHA}")
    assert info.value.exit_code == ExitCode.INTEGRITY
    assert "config.json does not match the hash the Hub recorded" in str(info.value)


def test_truncated_cached_weights_blob_is_an_integrity_error(seeded):
    blob = Path(os.path.realpath(seeded / "model.safetensors"))
    blob.write_bytes(blob.read_bytes()[:-100])
    with pytest.raises(IntegrityError):
        _resolve(f"{TINY_REPO}@{TINY_SHA}")


def test_dangling_cache_link_is_refused(seeded):
    os.unlink(os.path.realpath(seeded / "tokenizer.json"))
    with pytest.raises(SourceError, match="points to a missing file"):
        _resolve(f"{TINY_REPO}@{TINY_SHA}")


# ------------------------------------------------------------------------- Hub errors (mocked Hub)
def _http_error(cls, msg="boom"):
    return cls(msg, response=None)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


@pytest.mark.parametrize(
    "exc_name, error, fragment, code",
    [
        ("RepositoryNotFoundError", SourceError, "was not found on the Hub", ExitCode.USAGE),
        ("GatedRepoError", SourceError, "is gated", ExitCode.USAGE),
        ("RevisionNotFoundError", SourceError, f"has no revision {TINY_SHA}", ExitCode.USAGE),
        ("HfHubHTTPError", HubError, "the Hub failed", ExitCode.FAILURE),
    ],
)
def test_hub_errors_become_one_line(online, monkeypatch, exc_name, error, fragment, code):
    import huggingface_hub
    from huggingface_hub import errors

    def fail(self, *a, **k):
        raise _http_error(getattr(errors, exc_name))

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", fail)
    with pytest.raises(error) as info:
        _resolve(f"{TINY_REPO}@{TINY_SHA}")
    assert fragment in str(info.value) and info.value.exit_code == code


def test_network_down_is_a_hub_error(online, monkeypatch):
    import huggingface_hub
    import requests

    def fail(self, *a, **k):
        raise requests.exceptions.ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", fail)
    with pytest.raises(HubError, match="could not reach the Hub"):
        _resolve(f"{TINY_REPO}@{TINY_SHA}")


def test_online_downloads_only_what_a_load_needs(online, tiny_model_copy, monkeypatch):
    import huggingface_hub

    snap = hf.seed_tiny(tiny_model_copy)
    listing = [p.relative_to(tiny_model_copy).as_posix() for p in tiny_model_copy.rglob("*") if p.is_file()]
    listing += [
        "onnx/model.onnx",
        "onnx/config.json",
        "openvino/openvino_model.xml",
        "pytorch_model.bin",
        "tf_model.h5",
        "flax_model.msgpack",
        "rust_model.ot",
        ".gitattributes",
        "training_args.bin",
    ]
    seen = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo, revision: listing)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, revision: SimpleNamespace(sha=TINY_SHA))

    def fake_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    src = _resolve(TINY_REPO, "main", allow_unpinned=True)
    assert (src.revision, src.requested_ref) == (TINY_SHA, "main")
    assert seen["revision"] == TINY_SHA and seen["local_files_only"] is False
    patterns = seen["allow_patterns"]
    assert "model.safetensors" in patterns and "tokenizer.json" in patterns and "1_Pooling/config.json" in patterns
    for unwanted in (
        "onnx/model.onnx",
        "onnx/config.json",
        "pytorch_model.bin",
        "tf_model.h5",
        "rust_model.ot",
        "flax_model.msgpack",
        "training_args.bin",
        "openvino/openvino_model.xml",
    ):
        assert unwanted not in patterns


def test_online_pickle_only_is_refused_before_download(online, monkeypatch):
    import huggingface_hub

    listing = ["config.json", "modules.json", "tokenizer.json", "pytorch_model.bin"]
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo, revision: listing)

    def must_not_download(*a, **k):
        raise AssertionError("downloaded pickle weights")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", must_not_download)
    with pytest.raises(SourceError, match="only pickle weights"):
        _resolve(f"{TINY_REPO}@{TINY_SHA}")


# ------------------------------------------------------------------------------- safetensors check
def _st_file(path: Path, header: bytes, data: bytes) -> Path:
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize(
    "header, data, problem",
    [
        (b'{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8, None),
        (b'{"__metadata__":{"a":"b"},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  ', b"\0" * 4, None),
        (b'{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 4, "truncated"),
        (b'{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 9, "trailing bytes"),
        (b"not json at all", b"", "not valid JSON"),
        (b'{"t":{"dtype":"F32"}}', b"", "no valid data_offsets"),
        (b"[1,2]", b"", "not a JSON object"),
    ],
)
def test_safetensors_problem(tmp_path, header, data, problem):
    found = safetensors_problem(_st_file(tmp_path / "m.safetensors", header, data))
    assert (found is None) if problem is None else (problem in found)


def test_safetensors_problem_short_and_huge_header(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"\1\2")
    assert "shorter than" in safetensors_problem(tmp_path / "a.safetensors")
    (tmp_path / "b.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    assert "exceeds the file size" in safetensors_problem(tmp_path / "b.safetensors")


def test_uncached_default_model_hint_says_seed_default():
    from exporter.source.default_model import DEFAULT_MODEL

    with pytest.raises(SourceError) as info:
        _resolve(DEFAULT_MODEL)
    assert "exporter seed-default" in info.value.hint
