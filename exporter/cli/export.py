"""The export command group: ``export``, ``list-variants``, ``list-architectures``, ``seed-default``.

Plain functions with typer annotations; ``cli/app.py`` registers them. They print through ``cli/output``;
the library raises typed errors, which the app's one boundary (``cli.app.main``) turns into a line and an
exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from exporter.cli.output import print_json

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41"

ModelArg = Annotated[
    str, typer.Argument(help="org/name@<40-hex commit sha>, org/name with --revision, or a local folder.")
]
RevisionOpt = Annotated[str | None, typer.Option(help="The 40-hex commit sha to pin (if MODEL has no @sha).")]
VariantsOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated variant ids, 'all', or 'best' (the candidates that fit this CPU, gated, benched "
        "and the fastest passing one recommended; see list-variants). Default: onnx."
    ),
]
OutOpt = Annotated[Path | None, typer.Option(help="Artifact folder. Default: artifacts/<org>--<name>/<sha12>/.")]
ProbeOpt = Annotated[Path | None, typer.Option(help="Probe texts (.txt one per line, or .jsonl).")]
CalibrationOpt = Annotated[Path | None, typer.Option(help="Calibration texts for static int8 (.txt/.jsonl).")]
ThresholdOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Override a gate threshold: [CLASS_OR_VARIANT:]metric=value, e.g. int8:cosine_min=0.985. Repeatable."
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rebuild even if a complete artifact is already there.")]
AllowUnpinnedOpt = Annotated[
    bool,
    typer.Option("--allow-unpinned", help="Accept a branch/tag; it is resolved to its commit and both are recorded."),
]
TrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow models that ship their own Python code.")
]
AllowPickleOpt = Annotated[
    bool, typer.Option("--allow-pickle", help="Allow pickle weights (*.bin/*.pt) when no safetensors.")
]
KindOpt = Annotated[
    str | None,
    typer.Option(
        help="Model kind: sentence-transformer, cross-encoder, sparse-encoder, colbert or bge-m3. Default: detected "
        "from the model's files; a kind the files state cannot be changed."
    ),
]
TruncateDimOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Matryoshka: keep the first N dimensions of the embedding (as SentenceTransformer(truncate_dim=N)); "
        "recorded in the manifest, inside the ONNX graph, and in every variant's load options.",
    ),
]
MaxSeqLengthOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=32768,
        help="Tokens per input the model keeps (the recipe's max_seq_length); default: the model's own. Recorded "
        "in the manifest and the tokenizer files, so every consumer truncates there.",
    ),
]
PromptOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="A prompt prepended to one role's inputs, NAME=TEXT (the recipe's prompts), e.g. "
        "--prompt 'query=query: '. NAME is query or passage. Repeatable.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the summary.")]
SaveRecipeOpt = Annotated[
    Path | None, typer.Option("--save-recipe", help="Write this command as a recipe file (YAML).")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan (pin, variants, outputs, thresholds); build nothing.")
]
ConsumersOpt = Annotated[
    str | None,
    typer.Option(
        help="Also load each variant through these consumers (all, or a comma list; see `verify --consumers`) "
        "and record each as a row in variants[].parity.consumers; one that disagrees fails the variant."
    ),
]


# --------------------------------------------------------------------------------------------- export
def export(
    model: ModelArg = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    variants: VariantsOpt = None,
    out: OutOpt = None,
    probe: ProbeOpt = None,
    calibration: CalibrationOpt = None,
    threshold: ThresholdOpt = None,
    force: ForceOpt = False,
    allow_unpinned: AllowUnpinnedOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    allow_pickle: AllowPickleOpt = False,
    kind: KindOpt = None,
    truncate_dim: TruncateDimOpt = None,
    max_seq_length: MaxSeqLengthOpt = None,
    prompt: PromptOpt = None,
    as_json: JsonOpt = False,
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    consumers: ConsumersOpt = None,
) -> None:
    """Resolve MODEL at a pinned commit, build variants, gate each against torch, write the manifest."""
    from exporter.cli.dry_run import handle_save_and_dry_run
    from exporter.cli.output import RichProgress, end_export, library_stdout_to_stderr
    from exporter.fleet.recipe import parse_prompt_flags
    from exporter.pipeline import ExportPlan, run_export
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
        max_seq_length=max_seq_length,
        prompts=parse_prompt_flags(prompt or []),
    )
    if handle_save_and_dry_run(plan, save_recipe=save_recipe, dry_run=dry_run):
        return
    with library_stdout_to_stderr():
        outcome = run_export(plan, RichProgress())
    end_export(outcome, best=best.wants_best(plan.variants), as_json=as_json)


# ------------------------------------------------------------------------------------- list-variants
def list_variants(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON.")] = False,
) -> None:
    """Print every variant the tool can build (no heavy imports)."""
    from exporter.hostcaps import this_host
    from exporter.quality.parity import DEFAULT_THRESHOLDS
    from exporter.variants import CATALOGUE

    host = this_host()
    rows: list[dict[str, Any]] = [
        {
            "id": s.id,
            "backend": s.backend.value,
            "precision": s.precision.value,  # the gate's precision class
            "compute": s.compute_label,
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
            f"{r['id']:<28} {r['backend']:<9} {r['compute']:<9} {r['file_name']:<46} "
            f"cos>={r['default_threshold']['cosine_min']}{extra}\n    {r['summary']}"
        )


# ------------------------------------------------------------------------------- list-architectures
def list_architectures(
    as_json: Annotated[bool, typer.Option("--json", help="Print the support table as JSON.")] = False,
) -> None:
    """Print the support table: architecture families x module chains, allowed and refused variants."""
    from exporter import support

    if as_json:
        print_json(support.table_rows())
        return
    typer.echo(support.markdown_table())


# ------------------------------------------------------------------------------------- seed-default
def seed_default() -> None:
    """Put the embedded default model (all-MiniLM-L6-v2 @ 1110a243) into the local Hub cache, hash-checked."""
    from exporter.source.default_model import REPO_ID, REVISION
    from exporter.source.default_model import seed_default as seed

    path = seed()
    typer.echo(f"Seeded {REPO_ID}@{REVISION} into {path}")
