"""The command line. The only place that prints, catches errors and chooses exit codes.

Heavy packages (torch, onnxruntime, openvino) are imported inside the commands that use them, so
``exporter --help`` and ``exporter list-variants`` start fast.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from exporter import __version__
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
)

_state = {"verbose": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"exporter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["verbose"] = verbose
    _log_to_stderr(verbose)


def _log_to_stderr(verbose: bool) -> None:
    """With --verbose, the library's debug log goes to stderr: the tracebacks of failures it records and
    goes on from (a variant that could not be built), which the final summary error does not carry."""
    import logging

    logger = logging.getLogger("exporter")
    for handler in [h for h in logger.handlers if getattr(h, "exporter_cli", False)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.exporter_cli = True
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class RichProgress:
    """Shows a spinner per long step on stderr and leaves a tick line with its duration."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = stderr_console()
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.quiet:
            yield
            return
        with self.console.status(f"{label}..."):
            yield
        self.console.print(f"[green]✓[/] {label} [dim]({time.perf_counter() - start:.1f}s)[/]")

    def note(self, message: str) -> None:
        """A line about something done on the user's behalf (e.g. a killed run's leftovers removed)."""
        from rich.markup import escape

        self.console.print(f"[yellow]![/] {escape(message)}", soft_wrap=True)  # one line, never wrapped


@contextlib.contextmanager
def library_stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for results (the summary, --json): what backends print while building goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def wide_console():
    """A console for result tables: full width when piped, so ids and file names are not cut."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def fail(exc: ExporterError) -> None:
    """Print one error line (and its hint) to stderr and exit with the error's code."""
    msg = f"Error: {exc.message}"
    if exc.hint:
        msg += f" {exc.hint}"
    typer.echo(msg, err=True)
    raise SystemExit(int(exc.exit_code))


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


# --------------------------------------------------------------------------------------------- export
@app.command()
def export(
    model: Annotated[
        str, typer.Argument(help="org/name@<40-hex commit sha>, org/name with --revision, or a local folder.")
    ] = "sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
    revision: Annotated[str | None, typer.Option(help="The 40-hex commit sha to pin (if MODEL has no @sha).")] = None,
    variants: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated variant ids, 'all', or 'best' (the candidates that fit this CPU, gated, benched "
            "and the fastest passing one recommended; see list-variants). Default: onnx."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Artifact folder. Default: artifacts/<org>--<name>/<sha12>/.")
    ] = None,
    probe: Annotated[Path | None, typer.Option(help="Probe texts (.txt one per line, or .jsonl).")] = None,
    calibration: Annotated[Path | None, typer.Option(help="Calibration texts for static int8 (.txt/.jsonl).")] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            help="Override a fidelity threshold: [CLASS_OR_VARIANT:]metric=value, e.g. int8:cosine_min=0.985. "
            "Repeatable."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if a complete artifact is already there.")] = False,
    allow_unpinned: Annotated[
        bool, typer.Option(help="Accept a branch/tag; it is resolved to its commit and both are recorded.")
    ] = False,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow models that ship their own Python code.")] = False,
    allow_pickle: Annotated[bool, typer.Option(help="Allow pickle weights (*.bin/*.pt) when no safetensors.")] = False,
    kind: Annotated[
        str | None,
        typer.Option(
            help="Model kind: sentence-transformer, cross-encoder or sparse-encoder. Default: detected from "
            "the model's files; a kind the files state cannot be changed."
        ),
    ] = None,
    truncate_dim: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Matryoshka: keep the first N dimensions of the embedding (as SentenceTransformer(truncate_dim=N)); "
            "recorded in the manifest, inside the ONNX graph, and in every variant's load options.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the summary.")] = False,
    save_recipe: Annotated[
        Path | None, typer.Option("--save-recipe", help="Write this command as a recipe file (YAML).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (pin, variants, outputs, thresholds); build nothing.")
    ] = False,
    consumers: Annotated[
        str | None,
        typer.Option(
            help="Also load each variant through these consumers (all, or a comma list; see `verify --consumers`) "
            "and record each as a row in variants[].parity.consumers; one that disagrees fails the variant."
        ),
    ] = None,
) -> None:
    """Resolve MODEL at a pinned commit, build variants, check parity against torch, write the manifest."""
    from exporter.cli.recipes import handle_save_and_dry_run
    from exporter.pipeline import ExportPlan, raise_for_failures, run_export
    from exporter.quality import best
    from exporter.quality.consumers import parse_names
    from exporter.quality.parity import parse_threshold_overrides

    plan = ExportPlan(
        model=model,
        revision=revision,
        variants=variants.split(",") if variants else None,
        out=out,
        probe=probe,
        calibration=calibration,
        thresholds=parse_threshold_overrides(threshold or []),
        force=force,
        allow_unpinned=allow_unpinned,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
        kind=kind,
        consumers=parse_names(consumers),
        truncate_dim=truncate_dim,
    )
    if handle_save_and_dry_run(plan, save_recipe=save_recipe, dry_run=dry_run):
        return
    with library_stdout_to_stderr():
        outcome = run_export(plan, RichProgress())
    if best.wants_best(plan.variants):
        _bench_best(outcome, as_json)
        return
    if as_json:
        print_json(export_summary(outcome))
    else:
        print_export_summary(outcome)
    raise_for_failures(outcome)


def _bench_best(outcome, as_json: bool) -> None:
    """--variants best: bench the candidates in the same command; exit 0 when one passed and is recommended.
    The export summary is printed before the bench, so a failing bench (or none to run) still shows it."""
    from exporter.cli.quality import bench_bar, print_bench
    from exporter.pipeline import raise_for_failures
    from exporter.quality import best

    if not as_json:
        print_export_summary(outcome)
    try:
        if not best.bench_ids(outcome.manifest):  # nothing passed, no int8 built: the gate/build failure
            raise_for_failures(outcome)
        with library_stdout_to_stderr(), bench_bar() as on_step:
            result, manifest = best.bench_and_recommend(outcome.artifact, outcome.manifest, on_step=on_step)
    except Exception:
        if as_json:
            print_json(export_summary(outcome))
        raise
    outcome.manifest = manifest
    if as_json:
        print_json({**export_summary(outcome), "bench": manifest["bench"], "recommended": manifest["recommended"]})
    else:
        print_bench(result, manifest)
    best.raise_unless_recommended(outcome.artifact, manifest)


def export_summary(outcome) -> dict:
    m = outcome.manifest
    return {
        "artifact": str(outcome.artifact),
        "manifest": str(outcome.artifact / "manifest.json"),
        "skipped": outcome.skipped,
        "source": {"repo": m["source"]["repo"], "revision": m["source"]["revision"], "pinned": m["source"]["pinned"]},
        "publishable": m["publishable"],
        "variants": [
            {
                "id": v["id"],
                "status": v["status"],
                "file_name": v["load"].get("file_name"),
                "cosine_min": (v["parity"] or {}).get("cosine_min"),
                "cosine_mean": (v["parity"] or {}).get("cosine_mean"),
                "failures": (v["parity"] or {}).get("failures", []),
                "error": v.get("error"),
            }
            for v in m["variants"]
        ],
    }


def print_export_summary(outcome) -> None:
    from rich.table import Table

    console = wide_console()
    m = outcome.manifest
    if outcome.skipped:
        console.print(f"Already complete, nothing rebuilt (pass --force to rebuild): {outcome.artifact}")
    table = Table(title=f"{m['source']['repo'] or m['source']['local_path']} @ {m['source']['revision'] or 'unpinned'}")
    for col in ("variant", "file", "cosine min", "cosine mean", "nn@10", "verdict"):
        table.add_column(col)
    for v in m["variants"]:
        p = v["parity"] or {}
        verdict = {"passed": "[green]passed[/]", "failed": "[red]FAILED[/]", "error": "[red]ERROR[/]"}[v["status"]]
        table.add_row(
            v["id"],
            v["load"].get("file_name") or "",
            _fmt(p.get("cosine_min")),
            _fmt(p.get("cosine_mean")),
            _fmt(p.get("neighbour_agreement_at_10"), 3),
            verdict,
        )
    console.print(table)
    for v in m["variants"]:
        for line in (v["parity"] or {}).get("failures", []) + ([v["error"]] if v.get("error") else []):
            console.print(f"  {v['id']}: {line}")
    console.print(f"Artifact: {outcome.artifact}")


def _fmt(x: float | None, digits: int = 6) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# ------------------------------------------------------------------------------------- list-variants
@app.command("list-variants")
def list_variants(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON.")] = False,
) -> None:
    """Print every variant the tool can build (no heavy imports)."""
    from exporter.hostcaps import this_host
    from exporter.quality.parity import DEFAULT_THRESHOLDS
    from exporter.variants import CATALOGUE

    host = this_host()
    rows = [
        {
            "id": s.id,
            "backend": s.backend.value,
            "precision": s.precision.value,
            "file_name": s.file_name,
            "derives_from": s.derives_from,
            "default_threshold": DEFAULT_THRESHOLDS[s.precision].to_dict(),
            "in_all": not s.on_request_only,
            "requires_any_of": [f.value for f in s.requires],
            "not_applicable_here": s.missing_on(host),
            "best_candidate_here": s.best is not None and s.best.fits(host) and s.missing_on(host) is None,
            "summary": s.summary,
        }
        for s in CATALOGUE
    ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        extra = ("" if r["in_all"] else " [on request only]") + (" [best]" if r["best_candidate_here"] else "")
        if r["not_applicable_here"]:
            extra += f" [not applicable here: needs {' or '.join(r['requires_any_of'])}]"
        typer.echo(
            f"{r['id']:<24} {r['backend']:<9} {r['precision']:<5} {r['file_name']:<46} "
            f"cos>={r['default_threshold']['cosine_min']}{extra}\n    {r['summary']}"
        )


# ------------------------------------------------------------------------------- list-architectures
@app.command("list-architectures")
def list_architectures(
    as_json: Annotated[bool, typer.Option("--json", help="Print the support table as JSON.")] = False,
) -> None:
    """Print the support table: architecture families x module chains, allowed and refused variants."""
    from exporter.source import shapes

    if as_json:
        print_json(shapes.table_rows())
        return
    typer.echo(shapes.markdown_table())


# ------------------------------------------------------------------------------------- seed-default
@app.command("seed-default")
def seed_default() -> None:
    """Put the embedded default model (all-MiniLM-L6-v2 @ 1110a243) into the local Hub cache, hash-checked."""
    from exporter.source.default_model import REPO_ID, REVISION
    from exporter.source.default_model import seed_default as seed

    path = seed()
    typer.echo(f"Seeded {REPO_ID}@{REVISION} into {path}")


def _register_command_modules() -> None:
    """Commands that live in their own modules (each imports its heavy parts lazily)."""
    from exporter.cli import quality as cli_quality
    from exporter.cli import recipes as cli_recipes
    from exporter.cli import registry as cli_registry

    for fn in (
        cli_quality.verify,
        cli_quality.bench,
        cli_quality.report,
        cli_registry.package,
        cli_registry.publish,
        cli_registry.pull,
        cli_registry.sign,
        cli_registry.inspect,
        cli_registry.promote,
        cli_recipes.run,
        cli_recipes.plan,
    ):
        app.command()(fn)


_register_command_modules()


def main() -> None:
    """Console entry point: runs the app and turns every failure into one line and an exit code.

    Usage errors (exit 2), --help and Ctrl-C (exit 130) are handled by typer itself.
    """
    try:
        app()
    except ExporterError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        fail(exc)
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a line
        if _state["verbose"]:
            traceback.print_exc()
        typer.echo(
            f"Error: unexpected {type(exc).__name__}: {exc}. Re-run with --verbose for the traceback and report it.",
            err=True,
        )
        raise SystemExit(ExitCode.FAILURE) from None
