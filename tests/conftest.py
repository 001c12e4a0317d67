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


def _shared_root(tmp_path_factory) -> Path:
    """A folder every worker of this run sees: the run's base temp (under pytest-xdist, its workers' parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def default_best_export(tmp_path_factory) -> DefaultExport:
    """The embedded default (all-MiniLM-L6-v2) exported with ``--variants best`` once per run (about
    3 minutes on 2 cores), whichever worker asks first: the tests of the real default read it, or export more
    variants into a copy. The others wait on its lock, then read what it printed."""
    import json

    from filelock import FileLock

    from exporter.source.default_model import DEFAULT_MODEL, seed_default
    from tests.cli_runner import Result, invoke

    root = _shared_root(tmp_path_factory) / "default-best"
    home, out, printed = root / "hf", root / "out" / "minilm", root / "result.json"
    env = {"HF_HOME": home, "HF_HUB_CACHE": home / "hub", "EXPORTER_CACHE_DIR": home / "exporter-cache"}
    root.mkdir(exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not printed.exists():
            with pytest.MonkeyPatch.context() as mp:
                for name, value in env.items():
                    mp.setenv(name, str(value))
                mp.setenv("HF_HUB_OFFLINE", "1")
                seed_default(env["HF_HUB_CACHE"])
                result = invoke("export", DEFAULT_MODEL, "--variants", "best", "--out", str(out), "--json")
            printed.write_text(json.dumps(vars(result)), encoding="utf-8")
    return DefaultExport(
        out, Result(**json.loads(printed.read_text(encoding="utf-8"))), home / "hub", home / "exporter-cache"
    )


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


# The modules that read the one real `--variants best` export: under pytest-xdist they run on one worker, in
# turn, so no worker waits on another's build of it (the other worker runs everything else meanwhile).
DEFAULT_BEST_MODULES = (
    "tests/builders/test_onnx_variants.py",
    "tests/quality/test_gate.py",
    "tests/quality/test_best.py",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope`` (a module's tests on one worker), with DEFAULT_BEST_MODULES as one scope."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "default-best" if module in DEFAULT_BEST_MODULES else super()._split_scope(nodeid)

    return Scheduler(config, log) if config.getvalue("dist") == "loadscope" else None


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: torch's OpenMP pool of one thread each
        os.environ.setdefault("OMP_NUM_THREADS", "1")
