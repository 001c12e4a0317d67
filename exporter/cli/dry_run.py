"""``export --dry-run`` and ``--save-recipe``: the plan as a person reads it, and the commit a plan pins to,
found without touching the network. Used by the ``export`` command; prints only the plan and the recipe line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from exporter.errors import SourceError


def handle_save_and_dry_run(plan, *, save_recipe: Path | None, dry_run: bool) -> bool:
    """For ``exporter export``: write the recipe and/or print the plan. True means stop (dry run).

    Call it after building the plan and before ``run_export``. A dry run validates everything a run
    would check up front (form of MODEL, pin, variants, thresholds, probe files) and builds nothing.
    """
    if save_recipe is None and not dry_run:
        return False
    pin = resolve_pin(plan) if (dry_run or plan.allow_unpinned) else None
    if save_recipe is not None:  # first: an existing file refused is the only line a dry run prints
        from exporter.fleet.recipe_plan import save_recipe as save

        path = save(plan, save_recipe, revision=pin.sha if pin else None)
        typer.echo(f"Recipe written: {path}", err=True)
    if dry_run:
        typer.echo(dry_run_text(plan, pin))
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
    from exporter.source.hubcache import COMMIT_RE, hub_offline, repo_folder, snapshot_folder

    ref = source.parse_model_ref(plan.model, plan.revision)
    if ref.local_path is not None:
        return Pin(None, None, "a local folder: not pinned, recorded with the sha256 of every file", ref.local_path)
    assert ref.repo_id is not None  # parse_model_ref: a local folder or a Hub repo id
    storage = repo_folder(ref.repo_id)
    wanted = ref.revision or "main"
    if COMMIT_RE.match(wanted):
        if snapshot_folder(ref.repo_id, wanted).is_dir():
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

    The variants and thresholds are ``plan_check.decide``'s, as the export decides them; while the model's
    kind is unknown (not stated, files not here) the gates show the plan's own overrides only.

    Raises:
        UsageError: anything the export would refuse before building (variants, thresholds, probe files).
    """
    from exporter import plan_check
    from exporter.quality import probes

    pin = pin or resolve_pin(plan)
    folder = plan_check.model_files(pin.repo, pin.sha, pin.local)
    decided = plan_check.decide(plan, folder=folder, narrow=True)
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
    lines.append(f"  kind         {_kind_text(plan, decided.kind)}")
    for name in ("max_seq_length", "truncate_dim", "prompts", "publish"):
        if getattr(plan, name, None) is not None:
            lines.append(f"  {name:<12} {getattr(plan, name)}")
    flags = [f for f in ("force", "allow_unpinned", "trust_remote_code", "allow_pickle") if getattr(plan, f)]
    if flags:
        lines.append(f"  options      {', '.join(flags)}")
    return "\n".join(lines + _variant_lines(plan, decided, out))


def _kind_text(plan, kind) -> str:
    if kind is None:
        return "not stated: read from the model files when the export runs"
    return f"{kind.value}{'' if plan.kind else ' (from the model files)'}"


def _variant_lines(plan, decided, out: str) -> list[str]:
    """The variants to build, each with its file and gate (the plan's overrides only while the kind is unknown)."""
    from exporter import variants as catalogue
    from exporter.quality import parity, parity_gates

    specs = decided.specs
    asked = {v.lower() for v in catalogue.expand(list(plan.variants or catalogue.DEFAULT_VARIANTS))}
    unknown = "" if decided.kind else " (those of them that apply to the model's kind)"
    lines = [f"  variants     {len(specs)} to build{unknown}:"]
    for s in specs:
        why = "" if s.id in asked else f" (base of {', '.join(_derived_from(s.id, specs, asked))})"
        if decided.thresholds is not None:
            limits = decided.thresholds[s.id].to_dict()
        else:
            limits = parity_gates.scoped_overrides(s, plan.thresholds)
        gate = ", ".join(
            f"{k}{'<=' if k in parity.UPPER_BOUNDS else '>='}{v}" for k, v in limits.items() if v is not None
        )
        if decided.thresholds is None:
            gate = f"{gate}{' over ' if gate else ''}the defaults of the model's kind"
        lines.append(f"    {s.id}{why}")
        lines.append(f"      file {out}{s.file_name}   [{s.backend.value}, {s.precision.value}]  gate: {gate}")
    return lines


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
    from exporter import outdir

    if plan.out is not None:
        return f"{Path(plan.out).as_posix().rstrip('/')}/"
    if pin.local is not None:
        return f"{outdir.local_artifact_dir(plan.artifacts_root, pin.local).as_posix()}/"
    assert pin.repo is not None  # resolve_pin: a local folder or a Hub repo
    return f"{outdir.artifact_dir(plan.artifacts_root, pin.repo, pin.sha).as_posix()}/"


def _textset(ts) -> str:
    line = f"{ts.name} ({len(ts.texts)} texts, sha256 {ts.sha256[:12]})"
    if ts.strata is not None and ts.source.startswith("builtin:"):
        from exporter.quality.tokenizer_probes import COUNTS

        line += f" + {sum(COUNTS.values())} derived from the model's tokenizer at export"
    return line
