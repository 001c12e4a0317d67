"""Run the real console entry point (exporter.cli.main) in-process and capture what it prints."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass


@dataclass
class Result:
    code: int
    out: str
    err: str


def invoke(*args: str) -> Result:
    """Run ``exporter ARGS...`` through ``main()``, capturing stdout and stderr (usable outside tests too)."""
    from exporter.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["exporter", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())


def run_cli(capsys, *args: str) -> Result:
    """``invoke`` for tests that also hold pytest's capsys (kept for its call sites)."""
    capsys.readouterr()
    return invoke(*args)
