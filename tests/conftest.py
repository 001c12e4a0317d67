"""Shared fixtures. Every test runs with its own Hub cache and home, so no test touches real user state
or the network."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.consumer_fixtures import consumer_artifact, node_env, node_modules  # noqa: F401 - shared fixtures
from tests.tiny_models import build_tiny_sentence_transformer


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    """Point HF_HOME / HF_HUB_CACHE at a fresh temp dir and force offline mode."""
    home = tmp_path_factory.mktemp("hf-home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EXPORTER_CACHE_DIR", str(home / "exporter-cache"))  # reference outputs (refcache)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny mean-pooled, normalised sentence-transformer folder (built once per session)."""
    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny") / "tiny-st")


@dataclass(frozen=True)
class DefaultExport:
    """``export DEFAULT_MODEL --variants best`` run once: where it wrote, what it printed, and the Hub cache
    and reference-output cache (``refcache``) it ran with, for a later export of the same source to reuse."""

    out: Path
    result: object  # tests.cli_runner.Result
    hub_cache: Path
    exporter_cache: Path


@pytest.fixture(scope="session")
def default_best_export(tmp_path_factory) -> DefaultExport:
    """The embedded default (all-MiniLM-L6-v2) exported with ``--variants best`` once per session (about
    3 minutes on 2 cores): the tests of the real default read it, or export more variants into a copy."""
    from exporter.source.default_model import DEFAULT_MODEL, seed_default
    from tests.cli_runner import invoke

    home = tmp_path_factory.mktemp("hf-default")
    env = {"HF_HOME": home, "HF_HUB_CACHE": home / "hub", "EXPORTER_CACHE_DIR": home / "exporter-cache"}
    out = tmp_path_factory.mktemp("default") / "minilm"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, str(value))
        mp.setenv("HF_HUB_OFFLINE", "1")
        seed_default(env["HF_HUB_CACHE"])
        result = invoke("export", DEFAULT_MODEL, "--variants", "best", "--out", str(out), "--json")
    return DefaultExport(out, result, env["HF_HUB_CACHE"], env["EXPORTER_CACHE_DIR"])


@pytest.fixture(scope="session")
def fresh_server():
    """One interpreter, started on first use, that serves exported tiny models for test_shapes and
    test_families (``tests.fresh_serving``)."""
    from tests.fresh_serving import FreshServer

    server = FreshServer()
    yield server
    server.close()


@pytest.fixture
def tiny_model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model that a test may damage."""
    dest = tmp_path / "tiny-st"
    shutil.copytree(tiny_model_dir, dest)
    return dest


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
