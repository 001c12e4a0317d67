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
