"""What the commands print, and where: consoles, JSON, progress, and the summary tables.

Every command module prints through these; results go to stdout, progress and notes to stderr. Rich is
imported inside the functions, so ``exporter --help`` does not pay for it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Annotated

import typer

# Process-wide output settings, set once by the root callback (``exporter -q ...``).
SETTINGS = {"quiet": False}


def quiet() -> bool:
    """True under ``exporter --quiet``: no progress, notes or tick lines; results and errors still print."""
    return SETTINGS["quiet"]


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class RichProgress:
    """Shows a spinner per long step on stderr and leaves a tick line with its duration."""

    def __init__(self, quiet: bool | None = None) -> None:
        self.console = stderr_console()
        self.quiet = globals()["quiet"]() if quiet is None else quiet

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

        if self.quiet:
            return

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


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_result_json(result: object) -> None:
    """A command's result (a dataclass, or a list of them) as JSON: fields by name, paths as strings."""
    import dataclasses
    from pathlib import Path

    def plain(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    print_json(plain(result))


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object instead of lines.")]


# ------------------------------------------------------------------------------- how an export ends
def end_export(outcome, *, best: bool, as_json: bool, summary: dict | None = None) -> None:
    """The end of ``export`` and of each fleet worker: the summary (``summary``, else the outcome's, as JSON
    or a table), or with ``--variants best`` the bench and recommendation; then the failures' exit."""
    from exporter.pipeline import raise_for_failures

    if best:
        bench_best(outcome, as_json)
        return
    if as_json:
        print_json(summary or export_summary(outcome))
    else:
        print_export_summary(outcome)
    raise_for_failures(outcome)


@contextlib.contextmanager
def bench_bar() -> Iterator:
    """A progress bar on stderr for a bench run: one bar over its (round, runner) passes, naming the runner
    and stage now running, and a tick line with the figures as each pass ends. Yields the ``on_step``."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    if quiet():
        yield lambda step: None
        return
    console = stderr_console()
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("bench", total=None)

        def on_step(step) -> None:
            where = f"bench round {step.round}/{step.rounds} {step.runner}"
            bar.update(task, total=step.total, completed=step.position - 1 + step.fraction)
            bar.update(task, description=escape(f"{where}: {step.stage}"))
            if step.done:
                console.print(f"[green]✓[/] bench {escape(str(step))}", soft_wrap=True)

        yield on_step


def bench_best(outcome, as_json: bool) -> None:
    """--variants best: bench the candidates in the same command; exit 0 when one passed and is recommended.
    The export summary is printed before the bench, so a failing bench (or none to run) still shows it."""
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
    from exporter import kinds

    m = outcome.manifest
    shown = kinds.of_manifest(m).summary  # the kind's own metrics (cosine for embedders, scores for rerankers)
    return {
        "artifact": str(outcome.artifact),
        "manifest": str(outcome.artifact / "manifest.json"),
        "skipped": outcome.skipped,
        "published": outcome.published,
        "source": {"repo": m["source"]["repo"], "revision": m["source"]["revision"], "pinned": m["source"]["pinned"]},
        "publishable": m["publishable"],
        "variants": [
            {
                "id": v["id"],
                "status": v["status"],
                "file_name": v["load"].get("file_name"),
                **{metric.key: (v["parity"] or {}).get(metric.key) for metric in shown},
                "strata": (v["parity"] or {}).get("strata"),
                "failures": (v["parity"] or {}).get("failures", []),
                "error": v.get("error"),
            }
            for v in m["variants"]
        ],
    }


def print_export_summary(outcome) -> None:
    from rich.table import Table

    from exporter import kinds

    console = wide_console()
    m = outcome.manifest
    shown = kinds.of_manifest(m).summary
    if outcome.skipped:
        console.print(f"Already complete, nothing rebuilt (pass --force to rebuild): {outcome.artifact}")
    table = Table(title=f"{m['source']['repo'] or m['source']['local_path']} @ {m['source']['revision'] or 'unpinned'}")
    for col in ("variant", "file", *(metric.label for metric in shown), "verdict"):
        table.add_column(col)
    for v in m["variants"]:
        p = v["parity"] or {}
        verdict = {"passed": "[green]passed[/]", "failed": "[red]FAILED[/]", "error": "[red]ERROR[/]"}[v["status"]]
        table.add_row(
            v["id"], v["load"].get("file_name") or "", *(metric.format(p.get(metric.key)) for metric in shown), verdict
        )
    console.print(table)
    print_strata(console, kinds.of_manifest(m), m["variants"])
    for v in m["variants"]:
        for line in (v["parity"] or {}).get("failures", []) + ([v["error"]] if v.get("error") else []):
            console.print(f"  {v['id']}: {line}")
    console.print(f"Artifact: {outcome.artifact}")


def print_strata(console, kspec, variants: list[dict]) -> None:
    """The worst case per stratum of the probe set (rows) for each variant (columns)."""
    from rich.table import Table

    rows = kspec.strata_rows([v.get("parity") for v in variants])
    if not rows:
        return
    table = Table(title=f"worst case per probe stratum ({kspec.strata_label()})")
    for col in ("stratum (texts)", *(v["id"] for v in variants)):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


# --------------------------------------------------------------------------- bench and fleet tables
def print_bench(result, manifest: dict) -> None:
    """The figures of every variant next to torch (and next to the all-int8 variant when it ran), and the
    recommendation."""
    from exporter.quality.best import ALL_INT8

    sizes = result.config["batch_sizes"]
    cfg = result.config
    load = cfg.get("loadavg_1min") or {}
    typer.echo(
        f"{cfg['cpu']['model']} [{' '.join(cfg['cpu']['flags'])}], {cfg['threads']} thread(s), "
        f"{cfg['rounds']} rounds on {cfg.get('n_inputs', cfg['texts']['n'])} {cfg.get('unit', 'texts')}"
        + (f", load average {load['before']:.2f} -> {load['after']:.2f}" if load else "")
    )
    if cfg.get("memory"):
        typer.echo(
            f"Batches {cfg['batching'].split(':')[0]}; one runner resident at a time, "
            f"peak resident memory {cfg['memory']['peak_rss_mb']:.0f} MiB"
        )
    unit = cfg.get("unit", "texts")  # pairs for rerankers
    int8 = result.runners.get(ALL_INT8)
    width = max(26, *(len(n) + 2 for n in result.runners))
    head = f"{'runner':<{width}}" + "".join(f"{f'{unit}/s @{b}':>14}{'x torch':>9}" for b in sizes)
    head += f"{f'x {ALL_INT8} @{sizes[-1]}':>26}" if int8 else ""
    typer.echo(head + f"{'p50 ms':>9}{'p95 ms':>9}  runs on")
    for name, s in result.runners.items():
        row = f"{name:<{width}}" + "".join(
            f"{s['throughput'][str(b)]:>14.1f}{s['ratio_to_torch'][str(b)]:>8.2f}x" for b in sizes
        )
        if int8:
            key = str(sizes[-1])
            row += f"{s['throughput'][key] / int8['throughput'][key]:>25.2f}x"
        lat = s.get("latency_ms") or {}
        rt = s["runtime"]
        where = f"{rt.get('provider') or rt.get('device') or rt.get('engine')} x{rt.get('threads')}"
        p50, p95 = (f"{lat[k]:>9.2f}" if lat.get(k) is not None else f"{'-':>9}" for k in ("p50", "p95"))
        typer.echo(row + f"{p50}{p95}  {where}")
    for vid, why in (cfg.get("not_applicable") or {}).items():
        typer.echo(f"{vid:<{width}}not applicable here, not timed: {why}")
    for vid, why in (cfg.get("not_timed") or {}).items():
        typer.echo(f"{vid:<{width}}passed, not timed: {why}")
    rec = manifest.get("recommended") or {}
    if rec.get("variant"):
        typer.echo(f"Recommended: {rec['variant']} ({rec['throughput_ratio']:.2f}x torch). Rule: {rec['rule']}.")
    elif rec:
        typer.echo(f"No variant recommended: {rec.get('reason')}. Rule: {rec['rule']}.")


def _fidelity(row: dict, primaries: dict, one: bool) -> str:
    """The row's primary fidelity metric, formatted; named too when the table mixes kinds."""
    if not row["metric"] or row.get(row["metric"]) is None:
        return "-"
    metric = primaries[row["metric"]]
    return metric.format(row[metric.key]) if one else f"{metric.label} {metric.format(row[metric.key])}"


def print_consumer_bench(result) -> None:
    """``bench --consumers``: per variant, texts/s through each consumer and the bare runtime, with ratios."""
    from rich.table import Table

    cfg = result.config
    sizes = [str(b) for b in cfg["batch_sizes"]]
    table = Table(title=f"speed through the consumers ({cfg['threads']} threads, {cfg['rounds']} rounds)")
    for col in ("variant", "runs through", *[f"texts/s @{b}" for b in sizes], *[f"× bare @{b}" for b in sizes]):
        table.add_column(col)
    for r in result.rows:
        if r["status"] != "timed":
            blank = [""] * (2 * len(sizes) - 1)
            table.add_row(r["variant"], r["runner"], f"[yellow]not run: {r['message']}[/]", *blank)
            continue
        rates = [f"{r['throughput'][b]:.1f}" for b in sizes]
        ratios = [f"{r['ratio_to_bare'][b]:.2f}" for b in sizes]
        table.add_row(r["variant"], r["runner"], *rates, *ratios)
    wide_console().print(table)
    typer.echo(
        f"CPU: {cfg['cpu']['model']}, load {cfg['loadavg_1min']:.2f} (1 min). "
        "× bare: the consumer's throughput over the bare engine session's in the same round (1.00 = no overhead)."
    )


def print_summary_table(rows: list[dict]) -> None:
    from rich.table import Table

    from exporter import kinds

    primaries = {k.primary.key: k.primary for k in kinds.KINDS.values()}
    shown = [primaries[r["metric"]] for r in rows if r["metric"]]
    one = len({m.key for m in shown}) == 1  # one metric: in the header; several: each cell names its own
    table = Table(title="exporter run")
    for col in ("model", "variant", "verdict", shown[0].label if one else "fidelity", "speed ×torch", "artifact"):
        table.add_column(col)
    style = {"passed": "green", "failed": "red", "error": "red", "crashed": "red", "published": "green"}
    for r in rows:
        table.add_row(
            r["recipe"],
            r["variant"] or "-",
            f"[{style.get(r['verdict'], 'red')}]{r['verdict']}[/]",
            _fidelity(r, primaries, one),
            "-" if r["speed_ratio"] is None else f"{r['speed_ratio']:.2f}",
            r["artifact"] or r.get("published") or (r["error"] or "")[:120],
        )
    wide_console().print(table)
