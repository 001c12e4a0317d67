"""CLI commands for recipes: ``exporter run`` and ``exporter plan``, and the export command's
``--save-recipe`` / ``--dry-run`` handling.

The command functions are plain functions with typer annotations; ``cli.py`` registers them::

    from exporter import cli_recipes
    app.command("run")(cli_recipes.run)
    app.command("plan")(cli_recipes.plan)

Like ``cli.py``, this is a place that prints; errors are raised as ``ExporterError`` and turned into
one line and an exit code by ``cli.main``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from exporter.errors import SourceError
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
    force: Annotated[bool, typer.Option(help="Rebuild every variant, even those already complete.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
) -> None:
    """Run recipes, each model in its own process; resumable; a summary table and non-zero exit on any failure."""
    from exporter.fleet import recipe as rc

    loaded = rc.load_all(recipes)
    for path, recipe in loaded:  # refuse what a run would refuse, before any model starts
        _plan_for(path, recipe, variants=variants, artifacts=artifacts, force=force)
    code = _run_fleet(loaded, jobs=jobs, variants=variants, artifacts=artifacts, force=force, as_json=as_json)
    if code:
        raise typer.Exit(code)


def _plan_for(path: Path, recipe, *, variants: str | None, artifacts: Path, force: bool):
    from exporter import kinds
    from exporter import variants as catalogue
    from exporter.fleet.recipe import recipe_to_plan
    from exporter.quality import parity

    overrides: dict = {"artifacts_root": artifacts, "force": force}
    if variants:
        overrides["variants"] = [v.strip() for v in variants.split(",") if v.strip()]
    plan = recipe_to_plan(recipe, path.parent, **overrides)
    catalogue.select(plan.variants, check_host=False)  # unknown ids first; the CPU is checked where it builds
    kind = kinds.get(plan.kind).kind  # the recipe's kind (the export checks it against the model's files)
    specs = catalogue.select_for_kind(plan.variants, kind, check_host=False)
    parity.thresholds_for(specs, plan.thresholds, kind.value)
    return plan


def worker(
    path: Annotated[Path, typer.Argument(help="One recipe file.")],
    variants: Annotated[str | None, typer.Option()] = None,
    artifacts: Annotated[Path, typer.Option("--artifacts")] = Path("artifacts"),
    force: Annotated[bool, typer.Option()] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    result: Annotated[Path | None, typer.Option("--result", help="Also write the summary JSON here.")] = None,
) -> None:
    """Run one recipe in this process (what each process of ``exporter run`` does)."""
    from exporter.cli import RichProgress, _bench_best, export_summary, print_export_summary, print_json
    from exporter.fleet.recipe import load_recipe
    from exporter.fsutil import atomic_path
    from exporter.pipeline import raise_for_failures, run_export
    from exporter.quality import best

    plan = _plan_for(path, load_recipe(path), variants=variants, artifacts=artifacts, force=force)
    outcome = run_export(plan, RichProgress())
    summary = {"recipe": str(path), **export_summary(outcome)}
    if result is not None:  # the fleet reads the artifact's manifest (bench and recommendation too) from it
        with atomic_path(result) as tmp:
            tmp.write_text(json.dumps(summary, indent=2), "utf-8")
    if best.wants_best(plan.variants):  # what `export --variants best` does: bench, recommend, exit
        _bench_best(outcome, as_json)
        return
    if as_json:
        print_json(summary)
    else:
        print_export_summary(outcome)
    raise_for_failures(outcome)


def _run_fleet(loaded, *, jobs: int, variants, artifacts: Path, force: bool, as_json: bool) -> int:
    from exporter.cli import print_json, stderr_console
    from exporter.fleet import runs as fleet

    console = stderr_console()
    console.print(f"Running {len(loaded)} recipe(s), {jobs} at a time; logs in {artifacts / '.logs'}/")

    def done(r: fleet.ModelRun) -> None:
        mark = "[green]✓[/]" if r.ok else "[red]✗[/]"
        tail = "" if r.ok else f" exit {r.exit_code}: {r.error or 'see ' + str(r.log)}"
        console.print(f"{mark} {r.name} ({r.model}) [dim]{r.seconds:.1f}s[/]{tail}", markup=True)

    runs = fleet.run_fleet(loaded, jobs=jobs, artifacts_root=artifacts, force=force, variants=variants, on_done=done)
    rows = fleet.summary_rows(runs)
    code = fleet.fleet_exit_code(runs)
    if as_json:
        print_json({"exit_code": code, "passed": code == 0, "rows": rows})
    else:
        print_summary_table(rows)
    return code


def worker_main() -> None:
    """``python -m exporter.cli.recipes RECIPE [--json] ...``: the fleet's worker process.

    Errors end as one ``Error: ...`` line and the error's exit code, like ``exporter``; an unexpected
    exception also leaves its traceback in the worker's log.
    """
    import traceback

    from exporter.cli import fail
    from exporter.errors import ExitCode, ExporterError

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(worker)
    try:
        app()
    except ExporterError as exc:
        fail(exc)
    except Exception as exc:  # noqa: BLE001 - the worker's boundary, like cli.main
        traceback.print_exc()
        typer.echo(f"Error: unexpected {type(exc).__name__}: {exc}.", err=True)
        raise SystemExit(ExitCode.FAILURE) from None


def _fidelity(row: dict, primaries: dict, one: bool) -> str:
    """The row's primary fidelity metric, formatted; named too when the table mixes kinds."""
    if not row["metric"] or row.get(row["metric"]) is None:
        return "-"
    metric = primaries[row["metric"]]
    return metric.format(row[metric.key]) if one else f"{metric.label} {metric.format(row[metric.key])}"


def print_summary_table(rows: list[dict]) -> None:
    from rich.table import Table

    from exporter import kinds

    primaries = {k.primary.key: k.primary for k in kinds.KINDS.values()}
    shown = [primaries[r["metric"]] for r in rows if r["metric"]]
    one = len({m.key for m in shown}) == 1  # one metric: in the header; several: each cell names its own
    table = Table(title="exporter run")
    for col in ("model", "variant", "verdict", shown[0].label if one else "fidelity", "speed ×torch", "artifact"):
        table.add_column(col)
    style = {"passed": "green", "failed": "red", "error": "red", "crashed": "red"}
    for r in rows:
        table.add_row(
            r["recipe"],
            r["variant"] or "-",
            f"[{style.get(r['verdict'], 'red')}]{r['verdict']}[/]",
            _fidelity(r, primaries, one),
            "-" if r["speed_ratio"] is None else f"{r['speed_ratio']:.2f}",
            r["artifact"] or (r["error"] or "")[:120],
        )
    from exporter.cli import wide_console

    wide_console().print(table)


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
    from exporter.fleet.recipe import load_all

    typer.echo(render(matrix_entries(load_all(folder), per_variant=per_variant), fmt))


# -------------------------------------------------------------------------- export --save-recipe/--dry-run
def handle_save_and_dry_run(plan, *, save_recipe: Path | None, dry_run: bool) -> bool:
    """For ``exporter export``: write the recipe and/or print the plan. True means stop (dry run).

    Call it after building the plan and before ``run_export``. A dry run validates everything a run
    would check up front (form of MODEL, pin, variants, thresholds, probe files) and builds nothing.
    """
    if save_recipe is None and not dry_run:
        return False
    pin = resolve_pin(plan) if (dry_run or plan.allow_unpinned) else None
    if dry_run:
        typer.echo(dry_run_text(plan, pin))
    if save_recipe is not None:
        from exporter.fleet.recipe import save_recipe as save

        path = save(plan, save_recipe, revision=pin.sha if pin else None)
        typer.echo(f"Recipe written: {path}", err=True)
    return dry_run


class Pin:
    """What a plan's MODEL pins to, found without touching the network."""

    def __init__(self, repo: str | None, sha: str | None, note: str, local: Path | None = None) -> None:
        self.repo, self.sha, self.note, self.local = repo, sha, note, local


def resolve_pin(plan) -> Pin:
    """The commit ``plan`` will use: its own 40-hex sha, or (``allow_unpinned``) the local cache's ref.

    Raises:
        SourceError: MODEL is malformed, or not pinned and ``allow_unpinned`` is off (as ``export`` would).
    """
    from exporter.source import resolve as source
    from exporter.source.hubcache import COMMIT_RE, hub_offline, repo_folder

    ref = source.parse_model_ref(plan.model, plan.revision)
    if ref.local_path is not None:
        return Pin(None, None, "a local folder: not pinned, recorded with the sha256 of every file", ref.local_path)
    storage = repo_folder(ref.repo_id)
    wanted = ref.revision or "main"
    if COMMIT_RE.match(wanted):
        if (storage / "snapshots" / wanted).is_dir():
            where = "in the local Hub cache"
        elif hub_offline():
            where = "not in the local Hub cache, and HF_HUB_OFFLINE is set: the export will fail"
        else:
            where = "not in the local Hub cache: the export downloads it"
        return Pin(ref.repo_id, wanted, f"pinned, {where}")
    if not plan.allow_unpinned:
        raise SourceError(
            f"{ref.repo_id}@{wanted} is not pinned to a commit.",
            f"Pin it: {ref.repo_id}@<40-hex commit sha>, or pass --allow-unpinned to resolve it to its commit.",
        )
    ref_file = storage / "refs" / wanted
    if ref_file.is_file():
        sha = ref_file.read_text("utf-8").strip()
        return Pin(ref.repo_id, sha, f"unpinned: {wanted} points at this commit in the local Hub cache")
    return Pin(ref.repo_id, None, f"unpinned: {wanted} is resolved on the Hub when the export runs")


def dry_run_text(plan, pin: Pin | None = None) -> str:
    """The plan as a person reads it: pin, variants (and the bases they pull in), outputs, thresholds.

    Raises:
        UsageError: anything the export would refuse before building (variants, thresholds, probe files).
    """
    from exporter import variants as catalogue
    from exporter.quality import parity, probes
    from exporter.source import preflight

    pin = pin or resolve_pin(plan)
    catalogue.select(plan.variants)  # unknown ids are named before the kind is looked at
    kind = _plan_kind(plan, pin)
    specs = catalogue.select_for_kind(plan.variants, kind)
    folder = _model_folder(pin)
    if folder is not None:  # the model's files are here: its chain and architecture narrow the plan too
        specs, _ = preflight.narrow(folder, kind.value, specs, plan.variants)
    limits = parity.thresholds_for(specs, plan.thresholds, kind.value)
    asked = {v.lower() for v in catalogue.expand(list(plan.variants or catalogue.DEFAULT_VARIANTS))}
    probe = probes.load_text_set(plan.probe, "probe")
    calib = probes.load_text_set(plan.calibration, "calibration") if plan.calibration else None
    out = _out_text(plan, pin)
    lines = [
        "Export plan (dry run: nothing is resolved, downloaded or built)",
        f"  model        {pin.repo or pin.local}",
        f"  pin          {pin.sha or '-'}  ({pin.note})",
        f"  output       {out}",
        f"  probe        {_textset(probe)}",
    ]
    if calib:
        lines.append(f"  calibration  {_textset(calib)}")
    lines.append(f"  kind         {kind.value}{'' if plan.kind else ' (from the model files)'}")
    for name in ("max_seq_length", "truncate_dim", "prompts", "publish"):
        if getattr(plan, name, None) is not None:
            lines.append(f"  {name:<12} {getattr(plan, name)}")
    flags = [f for f in ("force", "allow_unpinned", "trust_remote_code", "allow_pickle") if getattr(plan, f)]
    if flags:
        lines.append(f"  options      {', '.join(flags)}")
    lines.append(f"  variants     {len(specs)} to build:")
    for s in specs:
        why = "" if s.id in asked else f" (base of {', '.join(_derived_from(s.id, specs, asked))})"
        gate = ", ".join(
            f"{k}{'<=' if k in parity.UPPER_BOUNDS else '>='}{v}"
            for k, v in limits[s.id].to_dict().items()
            if v is not None
        )
        lines.append(f"    {s.id}{why}")
        lines.append(f"      file {out}{s.file_name}   [{s.backend.value}, {s.precision.value}]  gate: {gate}")
    return "\n".join(lines)


def _model_folder(pin: Pin) -> Path | None:
    """The model's files, when they are on this machine: a local folder, or the pinned snapshot in the
    local Hub cache."""
    from exporter.source.hubcache import repo_folder

    folder = pin.local
    if folder is None and pin.repo and pin.sha:
        folder = repo_folder(pin.repo) / "snapshots" / pin.sha
    return Path(folder) if folder is not None and Path(folder).is_dir() else None


def _plan_kind(plan, pin: Pin):
    """The model kind a dry run plans for: read from the model's files when they are here, as the export
    will detect it; else the plan's ``kind``."""
    from exporter import kinds

    folder = _model_folder(pin)
    return kinds.kind_of_folder(folder, plan.kind) if folder is not None else kinds.get(plan.kind).kind


def _derived_from(base: str, specs, asked: set[str]) -> list[str]:
    by_id = {s.id: s for s in specs}
    out = []
    for s in specs:
        d = s.derives_from
        while d:
            if d == base and s.id in asked:
                out.append(s.id)
                break
            d = by_id[d].derives_from if d in by_id else None
    return out


def _out_text(plan, pin: Pin) -> str:
    if plan.out is not None:
        return f"{Path(plan.out).as_posix().rstrip('/')}/"
    root = Path(plan.artifacts_root).as_posix().rstrip("/")
    if pin.local is not None:
        return f"{root}/local--{pin.local.name}/<first 12 hex of the hash of its files>/"
    sha12 = pin.sha[:12] if pin.sha else "<sha12 of the resolved commit>"
    return f"{root}/{pin.repo.replace('/', '--')}/{sha12}/"


def _textset(ts) -> str:
    return f"{ts.name} ({len(ts.texts)} texts, sha256 {ts.sha256[:12]})"


if __name__ == "__main__":
    worker_main()
