"""CLI commands of the CI gate and the speed report: ``verify``, ``bench``, ``report``.

Plain functions with typer annotations; ``cli.py`` registers them with ``app.command()(fn)``. They print;
the library modules they call raise typed errors, which ``cli.main`` turns into one line and an exit code.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

ArtifactArg = Annotated[Path, typer.Argument(help="The artifact folder (with manifest.json).")]
VariantsOpt = Annotated[
    str | None, typer.Option("--variants", help="Comma-separated variant ids (default: every variant in the artifact).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the summary.")]


def _ids(variants: str | None) -> list[str] | None:
    if not variants:
        return None
    return [v.strip() for v in variants.split(",") if v.strip()] or None


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def verify(
    artifact: ArtifactArg,
    variants: VariantsOpt = None,
    probe: Annotated[
        Path | None, typer.Option(help="Probe texts (.txt / .jsonl) to re-run parity on (default: built-in set).")
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here (one case per variant + integrity).")] = None,
    consumers: Annotated[
        str | None,
        typer.Option(
            help="Also load each variant through these consumers (all, or a comma list of: sentence-transformers, "
            "optimum, fastembed, transformers.js, runtime) and judge each with the variant's gate."
        ),
    ] = None,
    integrity: Annotated[
        bool, typer.Option("--integrity", help="Only re-hash the files (exit 4 on a mismatch); needs no torch.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every file (exit 4 on a mismatch) and re-run each variant's parity against the pinned torch
    reference in a fresh process (exit 3 if a variant, or with --consumers any consumer, misses its recorded
    thresholds)."""
    from exporter.quality import junit as junit_xml
    from exporter.quality.consumers import parse_names
    from exporter.quality.verify import raise_for
    from exporter.quality.verify import verify as run_verify

    report = run_verify(artifact, _ids(variants), probe, parse_names(consumers), integrity_only=integrity)
    if junit:
        junit_xml.write(junit, report)
    if as_json:
        _echo_json(report.to_dict())
    else:
        for case in report.cases:
            mark = {"passed": "ok  ", "failed": "FAIL", "error": "ERR ", "skipped": "skip"}[case.status]
            typer.echo(f"{mark} {case.name:<28} {case.message}")
            for line in case.failures if case.status != "passed" else []:
                if not line.startswith("consumer "):  # said on the consumer's own row below
                    typer.echo(f"       {line}")
            for row in (case.parity or {}).get("consumers", []):
                mark = {"passed": "ok  ", "failed": "FAIL", "error": "ERR ", "skipped": "skip"}[row["status"]]
                metric = f"cosine_min {row['cosine_min']:.6f}" if row.get("cosine_min") is not None else ""
                typer.echo(f"  {mark} {case.name + ' x ' + row['consumer']:<36} {row['message'] or metric}".rstrip())
        if junit:
            typer.echo(f"JUnit: {junit}")
    raise_for(report)


def bench(
    artifact: ArtifactArg,
    variants: VariantsOpt = None,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes.")] = "1,8,32",
    threads: Annotated[
        int | None, typer.Option(help="Threads for torch, ONNX Runtime and OpenVINO (default: all cores).")
    ] = None,
    texts: Annotated[
        Path | None, typer.Option(help="Texts to encode (.txt / .jsonl; default: the built-in probe set).")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Interleaved timed rounds after the warm-up.")] = 3,
    max_texts: Annotated[int, typer.Option(help="Use at most this many texts per timed pass.")] = 256,
    report: Annotated[bool, typer.Option(help="Also refresh REPORT.md and report.png.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Throughput at each batch size and batch-1 latency of each variant and the torch reference, in one run;
    records ratios to torch in the manifest and the recommended variant."""
    from exporter.cli import library_stdout_to_stderr
    from exporter.quality import bench as bench_mod
    from exporter.quality.report import write_report

    with library_stdout_to_stderr(), bench_bar() as on_step:
        result = bench_mod.bench(
            artifact,
            _ids(variants),
            batch_sizes=bench_mod.parse_batch_sizes(batch_sizes),
            threads=threads,
            texts=texts,
            max_texts=max_texts,
            rounds=rounds,
            on_step=on_step,
        )
    manifest = bench_mod.record(artifact, result)
    if report:
        write_report(artifact, manifest)
    if as_json:
        _echo_json({"bench": manifest["bench"], "variants": result.variants, "recommended": manifest["recommended"]})
        return
    print_bench(result, manifest)


@contextlib.contextmanager
def bench_bar() -> Iterator:
    """A progress bar on stderr for a bench run: one bar over its (round, runner) passes, naming the runner
    and stage now running, and a tick line with the figures as each pass ends. Yields the ``on_step``."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from exporter.cli import stderr_console

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
    rec = manifest.get("recommended") or {}
    if rec.get("variant"):
        typer.echo(f"Recommended: {rec['variant']} ({rec['throughput_ratio']:.2f}x torch). Rule: {rec['rule']}.")
    elif rec:
        typer.echo(f"No variant recommended: {rec.get('reason')}. Rule: {rec['rule']}.")


def report(artifact: ArtifactArg) -> None:
    """Write REPORT.md and report.png beside the manifest (source, variants table, speed vs fidelity plot)."""
    from exporter.quality.report import write_report

    md, png = write_report(artifact)
    typer.echo(f"Wrote {md} and {png}")
