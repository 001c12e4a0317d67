"""Shared fixtures. Every test runs with its own Hub cache and home, so no test touches real user state
or the network."""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture
def tiny_model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model that a test may damage."""
    dest = tmp_path / "tiny-st"
    shutil.copytree(tiny_model_dir, dest)
    return dest


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
