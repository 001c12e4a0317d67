"""Less work in plain `export` for the same checks: the base graph is traced from the pipeline's torch
reference (no second load), its post-export check reads the torch side from the reference cache, and the
runtime's bare run reuses the graph check's run (the same session on the same feeds)."""

from __future__ import annotations

import numpy as np

from exporter import runtime
from exporter.builders import export_onnx
from exporter.builders.context import BuildContext
from exporter.quality import parity_replay, refcache
from tests.builders.test_onnx import TEXTS, exported_tiny, stage_artifact


class _LinesOf:
    """Collects what a logger hands its handlers while in a ``with`` block (a logger's filters come first)."""

    def __init__(self, name: str) -> None:
        import logging

        self.logger, self.lines = logging.getLogger(name), []
        self.handler = logging.Handler(logging.DEBUG)
        self.handler.emit = lambda record: self.lines.append(record.getMessage())

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel("DEBUG")
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


def test_the_base_graph_is_built_from_the_shared_reference_and_its_check_is_cached(
    tiny_model_dir, tmp_path, monkeypatch
):
    from exporter.runners import reference

    ctx = BuildContext(source_dir=tiny_model_dir, stage_dir=tmp_path, reference_key="k1")
    model = ctx.reference_model()
    before = model.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    loads = []
    real_load = reference.load_reference
    monkeypatch.setattr(reference, "load_reference", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    ctx.stage_dir = stage_artifact(tiny_model_dir, tmp_path / "a")
    seen = _LinesOf("optimum.exporters.onnx.base")  # what reaches that logger's handlers
    with seen:
        first = export_onnx.build_embedder_graph(ctx, None)
    assert loads == [] and ctx.reference_model() is model  # the one loaded model, traced
    np.testing.assert_array_equal(model.encode(TEXTS, batch_size=4, convert_to_numpy=True), before)  # unchanged
    assert first.build["graph_min_cosine"] >= export_onnx.CHECK_MIN_COSINE
    assert first.build["runtime_min_cosine"] >= export_onnx.CHECK_MIN_COSINE
    assert first.build["outputs"][:2] == [export_onnx.TOKEN_OUTPUT, export_onnx.SENTENCE_OUTPUT]
    assert list((refcache.cache_dir() / "reference").glob("*.npy"))  # the torch side of the check
    assert not [line for line in seen.lines if "Weight deduplication" in line]  # exporter.upstream_noise

    model.encode = lambda *a, **k: (_ for _ in ()).throw(AssertionError("the cache should have answered"))
    ctx.stage_dir = stage_artifact(tiny_model_dir, tmp_path / "b")
    again = export_onnx.build_embedder_graph(ctx, None)
    assert again.build == first.build


def test_the_runtime_reuses_only_a_run_with_the_graph_checks_exact_feeds(tmp_path_factory):
    _, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    encoder = runtime.load(art)
    texts = sorted(TEXTS, key=len, reverse=True)
    feeds, _ = encoder.tokenize(texts)
    (result,) = encoder.session.run([export_onnx.SENTENCE_OUTPUT], feeds)
    tape = parity_replay.Tape().add(feeds, {export_onnx.SENTENCE_OUTPUT: result})
    session = parity_replay.ReplayingSession(encoder.session, tape, same_session=True)
    encoder.session = session
    assert encoder.encode(texts) is not None and session.replayed == 1
    fresh = runtime.load(art).encode(texts)
    np.testing.assert_array_equal(encoder.encode(texts), fresh)
    encoder.encode(texts[1:])  # other feeds: a real run
    encoder.encode(texts, prompt="query: ")
    assert session.replayed == 2


def test_every_command_lets_torchs_idle_threads_sleep_unless_the_user_chose(monkeypatch):
    import os

    from exporter import environment

    monkeypatch.delitem(__import__("sys").modules, "torch", raising=False)  # as at a command's start
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    environment.idle_threads_sleep()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    environment.idle_threads_sleep()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_only_the_listed_upstream_lines_are_dropped(caplog):
    import logging

    from exporter import upstream_noise

    upstream_noise.quiet()
    upstream_noise.quiet()  # idempotent: one filter per line
    with caplog.at_level(logging.WARNING):
        for noise in upstream_noise.NOISE:
            log = logging.getLogger(noise.logger)
            assert len(log.filters) == len({f.starts_with for f in log.filters})
            log.warning(noise.starts_with + " ... and the rest of the line")
            log.warning("a warning that matters, from %s", noise.logger)
    shown = [r.getMessage() for r in caplog.records]
    assert shown == [f"a warning that matters, from {noise.logger}" for noise in upstream_noise.NOISE]


def test_only_the_listed_upstream_warnings_are_dropped():
    import warnings

    from exporter import upstream_noise

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        upstream_noise.quiet()
        for noise in upstream_noise.WARNING_NOISE:
            scope = {"__name__": noise.module}  # issued from the upstream module, as the trace does
            exec(f"import warnings\nwarnings.warn({noise.starts_with + ' ...'!r})", scope)
            exec("import warnings\nwarnings.warn('a warning that matters')", scope)
    assert [str(w.message) for w in caught] == ["a warning that matters"] * len(upstream_noise.WARNING_NOISE)


def test_upstream_progress_bars_stay_off_stdout():
    """NNCF draws its bars on rich's shared console (stdout, where --json goes); after ``quiet`` it draws
    nothing there, and the exporter's own consoles still print."""
    import subprocess
    import sys

    code = (
        "import sys, rich\n"
        "from nncf.common.logging.track_progress import track\n"
        "from rich.console import Console\n"
        "if sys.argv[1] == 'quiet':\n"
        "    from exporter import upstream_noise; upstream_noise.quiet()\n"
        "for _ in track(range(3), description='Statistics collection'): pass\n"
        "Console(highlight=False).print('result line')\n"
    )
    runs = {
        m: subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True) for m in ("loud", "quiet")
    }
    assert "Statistics collection" in runs["loud"].stdout  # the bar that users saw under -q
    assert "Statistics collection" not in runs["quiet"].stdout + runs["quiet"].stderr
    assert runs["quiet"].stdout.strip() == "result line"
