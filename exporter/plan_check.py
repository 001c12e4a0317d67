"""Which variants and thresholds a plan gets: decided here, once, for the export (``pipeline``), its dry run
(``cli/dry_run``), ``exporter run``'s up-front check of each recipe (``cli/recipes``) and ``exporter plan``
(``fleet/matrix``), so none of them refuses what another accepts.

The ids are always checked (unknown ids first). What depends on the model's kind (the variants that apply
to it, what ``all``/``best`` expand to, the gates and which metrics a threshold may name) is decided only
when the kind is known: given by the caller (the export, once the source is resolved), read from the
model's files when they are on this machine (a local folder, or the pinned snapshot in the local Hub
cache), or stated by the plan (``kind:`` / ``--kind``). Otherwise nothing kind-specific is refused: the
export decides it once it has the model's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.kinds import ModelKind

if TYPE_CHECKING:
    from exporter.support import Match


@dataclass(frozen=True)
class Decision:
    """What ``decide`` found for a plan."""

    kind: ModelKind | None  # None: not stated, and the model's files are not on this machine
    specs: list  # VariantSpecs, bases first: for ``kind`` when known, else as the ids name them
    thresholds: dict | None  # variant id -> its thresholds; None while the kind is unknown
    shape: Match | None = None  # the model's support rule and facts, when narrowed by the model's files


def model_files(repo: str | None, sha: str | None, local: Path | None = None) -> Path | None:
    """The model's files when they are on this machine: ``local`` (a folder), or the snapshot of
    ``repo`` at ``sha`` in the local Hub cache; None when they are not here (nothing is downloaded)."""
    from exporter.source.hubcache import snapshot_folder

    folder = local
    if folder is None and repo and sha:
        folder = snapshot_folder(repo, sha)
    return Path(folder) if folder is not None and Path(folder).is_dir() else None


def decide(
    plan,
    *,
    kind: str | ModelKind | None = None,
    folder: Path | None = None,
    check_host: bool = True,
    narrow: bool = False,
) -> Decision:
    """The variants and thresholds ``plan`` gets.

    ``kind``: the kind already decided (the export's, from the resolved source); else it is read from
    ``folder`` (the model's files, see ``model_files``) as the export will detect it, else the plan's own.
    ``check_host``: refuse variants this CPU cannot build (off where a plan is checked on one machine and
    built on another). ``narrow``: also match the model's files to its support rule and narrow the variants
    to what the rule allows (``exporter.support``; needs ``folder``), as the export does.

    Raises:
        UsageError: an unknown id, a variant that does not apply to the kind, a bad threshold scope or
            value, or a metric that does not apply to the kind (each only once the kind is known).
    """
    from exporter import kinds, variants
    from exporter.quality import parity

    specs = variants.select(plan.variants, check_host=check_host)  # unknown ids before the kind is looked at
    if kind is None and folder is not None:
        kind = kinds.kind_of_folder(folder, plan.kind)
    elif kind is None and plan.kind:
        kind = kinds.get(plan.kind).kind
    if kind is None:
        parity.thresholds_for([], plan.thresholds)  # scopes and values; which metrics apply waits for the kind
        return Decision(None, specs, None)
    kind = ModelKind(kind)
    specs = variants.select_for_kind(plan.variants, kind, check_host=check_host)
    shape = None
    if narrow and folder is not None:
        from exporter import support

        shape = support.match(folder, kind)
        specs = support.apply(shape, specs, plan.variants)
    return Decision(kind, specs, parity.thresholds_for(specs, plan.thresholds, kind.value), shape)


def not_applicable(variant_id: str, host=None) -> str | None:
    """Why ``host`` (default: this CPU) cannot run the variant as built (the flags it lacks), or None."""
    from exporter import variants
    from exporter.hostcaps import this_host

    spec = variants.BY_ID.get(variant_id)
    return spec.missing_on(host or this_host()) if spec else None
