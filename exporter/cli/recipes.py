"""The recipe command group: ``exporter run`` and ``exporter plan``, and ``worker``, the command each of
``run``'s processes runs (``python -m exporter.cli.fleet_worker``, registered by ``cli/app.py``).

Plain functions with typer annotations; ``cli/app.py`` registers them. They print through ``cli/output``;
errors are raised as ``ExporterError`` and turned into one line and an exit code by the app's one boundary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from exporter.fleet.matrix import MatrixFormat


# ------------------------------------------------------------------------------------------------ run
def run(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe files (.yaml) or folders of them.")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Models exported in parallel.")] = 1,
    variants: Annotated[
        str | None, typer.Option(help="Comma-separated variant ids for every recipe, instead of its own list.")
    ] = None,
    artifacts: Annotated[
        Path, typer.Option("--artifacts", help="Root folder of the artifacts (artifacts/<org>--<name>/<sha12>/).")
    ] = Path("artifacts"),
    force: Annotated[bool, typer.Option("--force", help="Rebuild every variant, even those already complete.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    allow_remote_code: Annotated[
        bool,
        typer.Option(
            "--allow-remote-code", help="Run recipes with trust_remote_code: true (they run the repository's code)."
        ),
    ] = False,
) -> None:
    """Run recipes, each model in its own process; resumable; a summary table and non-zero exit on any failure."""
    from exporter.fleet.recipe_loading import load_all, require_remote_code_allowed
    from exporter.fsutil import check_writable_folder

    check_writable_folder(artifacts, option="--artifacts")
    loaded = load_all(recipes)
    remote = require_remote_code_allowed(loaded, allow_remote_code)
    if remote:
        typer.echo(f"Runs remote code (--allow-remote-code): {', '.join(remote)}", err=True)
    for path, recipe in loaded:  # refuse what a run would refuse, before any model starts
        _plan_for(path, recipe, variants=variants, artifacts=artifacts, force=force)
    code = _run_fleet(loaded, jobs=jobs, variants=variants, artifacts=artifacts, force=force, as_json=as_json)
    if code:
        raise typer.Exit(code)


def _plan_for(path: Path, recipe, *, variants: str | None, artifacts: Path, force: bool):
    """The recipe's plan, refused here as the export would refuse it (``plan_check.decide``: the kind is the
    recipe's, or read from the model's files when its snapshot is in the local Hub cache)."""
    from exporter import plan_check
    from exporter.fleet.recipe_plan import recipe_to_plan

    overrides: dict = {"artifacts_root": artifacts, "force": force}
    if variants:
        overrides["variants"] = [v.strip() for v in variants.split(",") if v.strip()]
    plan = recipe_to_plan(recipe, path.parent, **overrides)
    folder = plan_check.model_files(recipe.source.repo, recipe.source.revision)
    plan_check.decide(plan, folder=folder, check_host=False)  # the CPU is checked where it builds
    return plan


def worker(
    path: Annotated[Path, typer.Argument(help="One recipe file.")],
    variants: Annotated[str | None, typer.Option()] = None,
    artifacts: Annotated[Path, typer.Option("--artifacts")] = Path("artifacts"),
    force: Annotated[bool, typer.Option("--force")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    result: Annotated[Path | None, typer.Option("--result", help="Also write the summary JSON here.")] = None,
) -> None:
    """Run one recipe in this process (what each process of ``exporter run`` does)."""
    from exporter.cli.output import RichProgress, end_export, export_summary
    from exporter.fleet.recipe_loading import load_recipe
    from exporter.fsutil import atomic_path
    from exporter.pipeline import run_export
    from exporter.quality import best

    plan = _plan_for(path, load_recipe(path), variants=variants, artifacts=artifacts, force=force)
    outcome = run_export(plan, RichProgress())
    if outcome.manifest is None:  # every variant is published already with the same fingerprint: nothing here
        summary = {"recipe": str(path), "artifact": None, "skipped": True, "published": outcome.published}
    else:
        summary = {"recipe": str(path), **export_summary(outcome)}
    if result is not None:  # the fleet reads the artifact's manifest (bench and recommendation too) from it
        with atomic_path(result) as tmp:
            tmp.write_text(json.dumps(summary, indent=2), "utf-8")
    if outcome.manifest is None:
        shown = ", ".join(f"{vid} ({where})" for vid, where in outcome.published.items())
        typer.echo(json.dumps(summary) if as_json else f"Already published with the same fingerprint: {shown}")
        return
    end_export(outcome, best=best.wants_best(plan.variants), as_json=as_json, summary=summary)


def _run_fleet(loaded, *, jobs: int, variants, artifacts: Path, force: bool, as_json: bool) -> int:
    from exporter.cli.output import print_json, print_summary_table, stderr_console
    from exporter.fleet import runs as fleet

    console = stderr_console()
    console.print(f"Running {len(loaded)} recipe(s), {jobs} at a time; logs in {artifacts / '.logs'}/")

    def done(r: fleet.ModelRun) -> None:
        mark = "[green]✓[/]" if r.ok else "[red]✗[/]"
        tail = "" if r.ok else f" exit {r.exit_code}: {r.error or 'see ' + str(r.log)}"
        console.print(f"{mark} {r.name} ({r.model}) [dim]{r.seconds:.1f}s[/]{tail}", markup=True)
        for vid, where in r.published.items():
            console.print(f"  {vid}: already published with the same fingerprint at {where}; not rebuilt")

    runs = fleet.run_fleet(loaded, jobs=jobs, artifacts_root=artifacts, force=force, variants=variants, on_done=done)
    rows = fleet.summary_rows(runs)
    code = fleet.fleet_exit_code(runs)
    if as_json:
        print_json({"exit_code": code, "passed": code == 0, "rows": rows})
    else:
        print_summary_table(rows)
    return code


# ----------------------------------------------------------------------------------------------- plan
def plan(
    folder: Annotated[list[Path], typer.Argument(help="Recipe folders or files.")],
    fmt: Annotated[MatrixFormat, typer.Option("--format", help='github-matrix ({"include": [...]}) or json.')] = (
        MatrixFormat.GITHUB
    ),
    per_variant: Annotated[
        bool, typer.Option("--per-variant", help="One entry per model and variant instead of per model.")
    ] = False,
) -> None:
    """Print the work of a recipe folder as a matrix for a CI runner fleet (nothing runs)."""
    from exporter.fleet.matrix import matrix_entries, render
    from exporter.fleet.recipe_loading import load_all, remote_code_recipes

    notes: list[str] = []
    loaded = load_all(folder)
    text = render(matrix_entries(loaded, per_variant=per_variant, notes=notes), fmt)
    remote = remote_code_recipes(loaded)
    if remote:
        notes.append(
            f"runs remote code (trust_remote_code: true; `exporter run` needs --allow-remote-code): {', '.join(remote)}"
        )
    for note in notes:
        typer.echo(f"Note: {note}", err=True)
    typer.echo(text)
