"""The CLI's one error boundary (``exporter.cli.app``): the console script, the fleet worker and verify's
parity process turn a failure into the same record, one ``Error:`` line and the error's exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from exporter.cli.app import error_line, error_record
from exporter.errors import ExitCode, IntegrityError, ProbeError
from tests.cli_runner import invoke


@pytest.mark.parametrize(
    ("exc", "shown", "line", "code"),
    [
        (IntegrityError("model.onnx changed.", "Re-export it."), False, "Error: model.onnx changed. Re-export it.", 4),
        (ProbeError("probe.txt is empty.", ""), False, "Error: probe.txt is empty.", 2),
        (
            RuntimeError("boom"),
            False,
            "Error: unexpected RuntimeError: boom. Re-run with --verbose for the traceback and report it.",
            1,
        ),
        (KeyError("k"), True, "Error: unexpected KeyError: 'k'.", 1),  # the traceback is already above
    ],
    ids=["integrity", "usage, empty hint", "unexpected", "unexpected, traceback shown"],
)
def test_error_record_and_line(exc, shown, line, code):
    record = error_record(exc, traceback_shown=shown)
    assert record["type"] == type(exc).__name__ and record["exit_code"] == code
    assert error_line(record) == line
    assert json.loads(json.dumps(record)) == record  # it crosses a process boundary as JSON


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (IntegrityError("seed.tar changed.", "Re-download it."), ExitCode.INTEGRITY, "Error: seed.tar changed."),
        (RuntimeError("disk on fire"), ExitCode.FAILURE, "Error: unexpected RuntimeError: disk on fire."),
    ],
    ids=["typed", "unexpected"],
)
def test_main_ends_every_failure_as_one_line_and_its_exit_code(monkeypatch, raised, code, line):
    from exporter.source import default_model

    def fail():
        raise raised

    monkeypatch.setattr(default_model, "seed_default", fail)
    quiet = invoke("seed-default")
    assert quiet.code == code and quiet.out == ""
    assert quiet.err.startswith(line) and len(quiet.err.strip().splitlines()) == 1, quiet.err
    loud = invoke("--verbose", "seed-default")
    assert loud.code == code
    assert "Traceback" in loud.err and "in fail" in loud.err and loud.err.strip().splitlines()[-1].startswith(line)


def _run(module: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], input=stdin, capture_output=True, text=True, timeout=300
    )


def test_the_fleet_worker_ends_through_the_same_boundary(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("source: {repo: a/b, revision: main}\n", encoding="utf-8")
    proc = _run("exporter.cli.fleet_worker", "--artifacts", str(tmp_path / "art"), str(recipe))
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: ") and "source.revision" in proc.stderr
    assert "Warning" not in proc.stderr  # runpy's "found in sys.modules" warning of a command module run as -m


def test_the_parity_process_sends_a_typed_error_as_the_cli_record(tmp_path):
    """verify's fresh process answers with ``error_record``; the parent raises the same class again."""
    from exporter import errors

    request = {"kind": None, "artifact": str(tmp_path), "probe": str(tmp_path / "missing.txt"), "variants": []}
    proc = _run("exporter.cli.parity_worker", stdin=json.dumps(request))
    assert proc.returncode == 0, proc.stderr
    fatal = json.loads(proc.stdout.strip().splitlines()[-1])["fatal"]
    cls = errors.error_class(fatal["type"])
    assert issubclass(cls, errors.UsageError) and fatal["exit_code"] == ExitCode.USAGE == cls.exit_code
    assert "missing.txt" in fatal["message"]
