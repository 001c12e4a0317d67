"""CLI commands of the CI gate and the speed report: ``verify``, ``bench``, ``report``.

Plain functions with typer annotations; ``cli/app.py`` registers them. They print through ``cli/output``;
the library modules they call raise typed errors, which ``cli.app.main`` turns into one line and an exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exporter.cli.export import ThresholdOpt
from exporter.cli.output import print_json

ArtifactArg = Annotated[Path, typer.Argument(help="The artifact folder (with manifest.json).")]
VariantsOpt = Annotated[
    str | None, typer.Option("--variants", help="Comma-separated variant ids (default: every variant in the artifact).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the summary.")]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        help="Policy file (YAML/JSON, under 1 MB) whose thresholds: {SCOPE: {metric: value}} change the kind's "
        "defaults; the artifact's recorded thresholds never judge.",
    ),
]
RecipeOpt = Annotated[Path | None, typer.Option("--recipe", help="Judge by this recipe's thresholds (after --policy).")]


def _ids(variants: str | None) -> list[str] | None:
    if not variants:
        return None
    return [v.strip() for v in variants.split(",") if v.strip()] or None


def verify(
    artifact: ArtifactArg,
    variants: VariantsOpt = None,
    probe: Annotated[
        Path | None, typer.Option(help="Probe texts (.txt / .jsonl) to re-run the gate on (default: built-in set).")
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
    policy: PolicyOpt = None,
    recipe: RecipeOpt = None,
    threshold: ThresholdOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every file (exit 4 on a mismatch) and re-run each variant's gate against the pinned torch
    reference in a fresh process, judged by the policy (the kind's defaults, changed only by --policy,
    --recipe, --threshold; never by the artifact): exit 3 if a variant, or with --consumers any consumer,
    misses it, or if the manifest records looser thresholds than it."""
    from exporter.api import verify as run_verify
    from exporter.cli.output import RichProgress
    from exporter.fsutil import check_output_file
    from exporter.quality import junit as junit_xml
    from exporter.quality.consumers import parse_names
    from exporter.quality.policy import Policy
    from exporter.quality.verify import raise_for

    if junit:  # before the parity run, not after it: a report that cannot be written is bad input
        check_output_file(junit, option="--junit", replace=True)  # CI re-runs write the same report file
    rules = Policy.load(policy, recipe=recipe, flags=threshold or [])
    step = "hashing every file" if integrity else "hashing every file, then the gate against the reference"
    with RichProgress().step(f"verify {artifact}: {step}"):
        report = run_verify(
            artifact,
            variants=_ids(variants),
            probe=probe,
            consumers=parse_names(consumers),
            integrity_only=integrity,
            policy=rules,
            check=False,  # the report is written and printed first; raise_for below picks the exit code
        )
    if junit:
        junit_xml.write(junit, report)
    if as_json:
        print_json(report.to_dict())
    else:
        for case in report.cases:
            mark = {"passed": "ok  ", "failed": "FAIL", "error": "ERR ", "skipped": "skip"}[case.status]
            typer.echo(f"{mark} {case.name:<28} {case.message}")
            if case.parity:
                typer.echo(f"       {threshold_line(case.parity.get('threshold'), case.recorded)}")
            for line in case.failures if case.status != "passed" else []:
                if not line.startswith("consumer "):  # said on the consumer's own row below
                    typer.echo(f"       {line}")
            for row in (case.parity or {}).get("consumers", []):
                mark = {"passed": "ok  ", "failed": "FAIL", "error": "ERR ", "skipped": "skip"}[row["status"]]
                metric = f"cosine_min {row['cosine_min']:.6f}" if row.get("cosine_min") is not None else ""
                typer.echo(f"  {mark} {case.name + ' x ' + row['consumer']:<36} {row['message'] or metric}".rstrip())
        if report.policy:
            typer.echo(f"policy: {report.policy['judged_by']}")
        if junit:
            typer.echo(f"JUnit: {junit}")
    raise_for(report)


def threshold_line(policy: dict | None, recorded: dict | None) -> str:
    """``thresholds, policy (recorded): cosine_min 0.9999 (-1), ...``: what judged, and what the artifact says."""
    from exporter.quality.parity_gates import RETIRED_METRICS, UPPER_BOUNDS

    rec = (recorded or {}).get("threshold") or {}
    names = [n for n, v in (policy or {}).items() if v is not None] + [n for n in rec if n not in (policy or {})]
    parts = []
    for name in names:
        mine = (policy or {}).get(name)
        bound = "<=" if name in UPPER_BOUNDS | RETIRED_METRICS else ">="  # the retired one was a maximum
        said = f" ({rec[name] if rec[name] is not None else 'off'})" if name in rec else " (-)"
        parts.append(f"{name} {bound}{mine if mine is not None else ' not judged'}{said}")
    return "thresholds, policy (recorded): " + ", ".join(parts)


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
    consumers: Annotated[
        str | None,
        typer.Option(
            "--consumers",
            help="Instead: time the variants through these consumers (all, or names: runtime, sentence-transformers, "
            "fastembed, optimum) beside the bare runtime, with ratios; nothing is recorded.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Throughput at each batch size and batch-1 latency of each variant and the torch reference, in one run;
    records ratios to torch in the manifest and the recommended variant."""
    from exporter.cli.output import bench_bar, library_stdout_to_stderr, print_bench
    from exporter.quality import bench as bench_mod
    from exporter.quality.report import write_report

    if consumers is not None:
        _bench_consumers(artifact, variants, consumers, batch_sizes, threads, texts, rounds, max_texts, as_json)
        return
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
        print_json({"bench": manifest["bench"], "variants": result.variants, "recommended": manifest["recommended"]})
        return
    print_bench(result, manifest)


def _bench_consumers(artifact, variants, names: str, batch_sizes: str, threads, texts, rounds, max_texts, as_json):
    from exporter.cli.output import bench_bar, library_stdout_to_stderr, print_consumer_bench
    from exporter.quality import bench as bench_mod
    from exporter.quality import consumers
    from exporter.quality.bench_consumers import bench_consumers

    with library_stdout_to_stderr(), bench_bar() as on_step:
        result = bench_consumers(
            artifact,
            _ids(variants),
            consumers.parse_names(names),
            batch_sizes=bench_mod.parse_batch_sizes(batch_sizes),
            threads=threads,
            texts=texts,
            max_texts=max_texts,
            rounds=rounds,
            on_step=on_step,
        )
    if as_json:
        print_json({"config": result.config, "rows": result.rows})
        return
    print_consumer_bench(result)


def report(artifact: ArtifactArg, as_json: JsonOpt = False) -> None:
    """Write REPORT.md and report.png beside the manifest (source, variants table, speed vs fidelity plot)."""
    from exporter.quality.report import write_report

    md, png = write_report(artifact)
    if as_json:
        print_json({"report": str(md), "plot": str(png)})
        return
    typer.echo(f"Wrote {md} and {png}")
