"""The typer app, its commands, and the one error boundary every process of the tool enters through.

``main`` (the ``exporter`` console script), ``fleet_worker_main`` (each process of ``exporter run``) and the
parity process of ``verify`` (``cli/parity_worker.py``, through ``error_record``) all turn a failure into the
same record: one ``Error: ...`` line (what was wrong, what to do) and the error's exit code. The library
raises typed errors (``exporter.errors``); only this module catches them.

The command modules (``export``, ``quality``, ``recipes``, ``registry``) import only ``cli/output`` and the
library, never this module; heavy packages are imported inside the commands, so ``exporter --help`` is fast.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from typing import Annotated

import typer

from exporter import __version__, environment
from exporter.cli import export, quality, recipes, registry
from exporter.errors import ExitCode, ExporterError

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 any other failure (one line saying what to do); 2 bad input or usage; "
    "3 a variant failed its fidelity gate; 4 an integrity check failed (a hash did not match); "
    "130 interrupted."
)

app = typer.Typer(
    name="exporter",
    help="Export sentence-transformers models pinned to a Hub commit into verified CPU variants "
    "(ONNX, OpenVINO, int8, quanto), each with a manifest of its provenance, hashes and fidelity.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Every command, in the order `exporter --help` lists them: (name, function).
COMMANDS = (
    ("export", export.export),
    ("list-variants", export.list_variants),
    ("list-architectures", export.list_architectures),
    ("seed-default", export.seed_default),
    ("verify", quality.verify),
    ("bench", quality.bench),
    ("report", quality.report),
    ("package", registry.package),
    ("publish", registry.publish),
    ("pull", registry.pull),
    ("sign", registry.sign),
    ("inspect", registry.inspect),
    ("promote", registry.promote),
    ("run", recipes.run),
    ("plan", recipes.plan),
)
for _name, _fn in COMMANDS:
    app.command(_name)(_fn)

_state = {"verbose": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"exporter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr; results and errors still print.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    from exporter.cli import output

    _state["verbose"] = verbose
    output.SETTINGS["quiet"] = quiet
    _log_to_stderr(verbose)


class _StderrHandler(logging.StreamHandler):
    """The handler ``--verbose`` adds (one per process: a second CLI call in it replaces it)."""


def _log_to_stderr(verbose: bool) -> None:
    """With --verbose, the library's debug log goes to stderr: the tracebacks of failures it records and
    goes on from (a variant that could not be built), which the final summary error does not carry."""
    logger = logging.getLogger("exporter")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)


# ----------------------------------------------------------------------------------- the error boundary
def error_record(exc: Exception, *, traceback_shown: bool = False) -> dict:
    """What the tool says about a failure: its type, one-line message, hint and exit code.

    A typed ``ExporterError`` keeps its own message, hint and exit code; anything else is unexpected
    (exit 1), and its hint asks for the traceback unless it was already shown. JSON-ready: the parity
    process sends it to ``verify``, which raises it again (``errors.error_class``).
    """
    if isinstance(exc, ExporterError):
        return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint, "exit_code": int(exc.exit_code)}
    return {
        "type": type(exc).__name__,
        "message": f"unexpected {type(exc).__name__}: {exc}.",
        "hint": None if traceback_shown else "Re-run with --verbose for the traceback and report it.",
        "exit_code": int(ExitCode.FAILURE),
    }


def error_line(record: dict) -> str:
    """The one line a failure ends with on stderr (``exporter run`` reads it back from a worker's log)."""
    return f"Error: {record['message']}" + (f" {record['hint']}" if record["hint"] else "")


def run_guarded(entry: Callable[[], object], *, traceback_unexpected: bool = False) -> None:
    """Run ``entry`` (a typer app); a failure ends as one line on stderr and its exit code.

    The traceback is printed with --verbose, and for an unexpected error also when ``traceback_unexpected``
    (a worker, whose log is all that is left of it). Usage errors (exit 2), --help and Ctrl-C (exit 130)
    are handled by typer itself.
    """
    try:
        entry()
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into a line and an exit code
        shown = _state["verbose"] or (traceback_unexpected and not isinstance(exc, ExporterError))
        if shown:
            traceback.print_exc()
        record = error_record(exc, traceback_shown=shown)
        typer.echo(error_line(record), err=True)
        raise SystemExit(record["exit_code"]) from None


def readable_metavars(command) -> None:
    """Name each option's value after the option (``--probe PROBE``), as click does by default, where
    typer would print its Python type (``<list[str]>``); an explicit metavar is kept. Recurses into groups."""
    from typer.core import TyperArgument, TyperOption

    for param in command.params:
        if isinstance(param, TyperOption) and not (param.is_flag or param.count) and param.metavar is None:
            param.metavar = param.name.upper()
        elif isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = param.name.upper()
            # the name says it; typer would add "<list[Path]>" and has no setting to hide it
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        readable_metavars(sub)


def cli_command():
    """The click command ``main`` runs: the typer app with readable metavars and ``-h``."""
    command = typer.main.get_command(app)
    readable_metavars(command)
    return command


def main() -> None:
    """The ``exporter`` console script (``exporter.cli:main``)."""
    environment.idle_threads_sleep()
    run_guarded(lambda: cli_command()(prog_name="exporter"))


def fleet_worker_main() -> None:
    """``python -m exporter.cli.fleet_worker RECIPE [--json] ...``: one recipe of ``exporter run``, in its own
    process (started by ``exporter.fleet.runs``); an unexpected error also leaves its traceback in its log."""
    environment.die_with_parent()  # a kill -9 of `exporter run` takes its workers with it
    environment.idle_threads_sleep()
    worker = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    worker.command()(recipes.worker)
    run_guarded(worker, traceback_unexpected=True)
