"""The work of a folder of recipes as a matrix, for a CI runner fleet to fan out.

One entry per model, or per model and variant. ``github-matrix`` is the compact one-line
``{"include": [...]}`` that ``strategy.matrix: ${{ fromJSON(...) }}`` takes; ``json`` is the plain list.
Every value is a string, so a workflow can use any of them in a command line.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.errors import UsageError

if TYPE_CHECKING:
    from exporter.fleet.recipe import Recipe

GITHUB_MATRIX_LIMIT = 256  # GitHub Actions refuses a matrix with more jobs than this


class MatrixFormat(StrEnum):
    GITHUB = "github-matrix"
    JSON = "json"


def matrix_entries(
    recipes: list[tuple[Path, Recipe]],
    *,
    per_variant: bool = False,
    artifacts_root: Path = Path("artifacts"),
    notes: list[str] | None = None,
) -> list[dict[str, str]]:
    """The matrix entries of validated recipes, in the order given.

    Each entry: ``name`` (the recipe's stem, plus ``-<variant>`` per variant), ``recipe`` (its path,
    relative to the working folder when inside it), ``model``, ``revision``, ``kind`` (the recipe's, or the
    one its files state when its snapshot is in the local Hub cache; "" when unknown), ``variants``
    (comma-separated; what to pass to ``exporter run --variants``), ``artifact`` (the folder the run
    writes), ``publish`` (the recipe's OCI target or ""), ``remote_code`` ("true" when the recipe runs the
    model repository's own Python code, ``trust_remote_code: true``; else "false"). Per variant, each entry
    also has ``variant``; a derived variant's job builds the base it derives from as well.

    Variants and thresholds are checked as ``exporter run`` checks them (``plan_check.decide``). While a
    recipe's kind is unknown, ``all``/``best`` are not expanded per variant (what they stand for depends on
    the kind): each is one job, its words are passed on, and a line is added to ``notes``.

    Raises:
        UsageError: a recipe names a variant or threshold its model kind cannot have.
    """
    from exporter import outdir, plan_check
    from exporter.fleet.recipe_plan import recipe_to_plan

    entries = []
    for path, recipe in recipes:
        plan = recipe_to_plan(recipe, path.parent)
        folder = plan_check.model_files(recipe.source.repo, recipe.source.revision)
        # the runner checks its own CPU (a bf16 variant planned here may build on a runner that has the units)
        decided = plan_check.decide(plan, folder=folder, check_host=False)
        base = {
            "name": path.stem,
            "recipe": _display(path),
            "model": recipe.source.repo,
            "revision": recipe.source.revision,
            "kind": decided.kind.value if decided.kind else "",
            "artifact": outdir.artifact_dir(artifacts_root, recipe.source.repo, recipe.source.revision).as_posix(),
            "publish": recipe.publish or "",
            "remote_code": "true" if recipe.trust_remote_code else "false",
        }
        chosen = [s.id for s in decided.specs] if decided.kind else _ids_of_unknown_kind(path, recipe, notes)
        if not per_variant:
            entries.append({**base, "variants": ",".join(recipe.variants or chosen)})
            continue
        for vid in chosen:
            entries.append({**base, "name": f"{path.stem}-{vid}", "variants": vid, "variant": vid})
    return entries


def _ids_of_unknown_kind(path: Path, recipe: Recipe, notes: list[str] | None) -> list[str]:
    """The per-variant job ids of a recipe whose kind is unknown: the ids it names (and their bases), and
    ``all``/``best`` as words, left for the job to expand once the model's kind is known."""
    from exporter import variants

    words = list(recipe.variants or variants.DEFAULT_VARIANTS)
    kept = [w.lower() for w in words if w.lower() in variants.EXPANSIONS]
    named = [w for w in words if w.lower() not in variants.EXPANSIONS]
    if kept and notes is not None:
        notes.append(
            f"{path.name}: no kind, and the model's files are not in the local Hub cache; "
            f"{', '.join(kept)} is left for its job to expand for the model's kind (set `kind:` to expand it here)."
        )
    ids = [s.id for s in variants.select(named, check_host=False)] if named else []
    return ids + list(dict.fromkeys(kept))


def render(entries: list[dict[str, str]], fmt: MatrixFormat | str) -> str:
    """The entries as text in ``fmt``.

    Raises:
        UsageError: a GitHub matrix would exceed GitHub's job limit.
    """
    fmt = MatrixFormat(fmt)
    if fmt is MatrixFormat.JSON:
        return json.dumps(entries, indent=2, ensure_ascii=False)
    if len(entries) > GITHUB_MATRIX_LIMIT:
        raise UsageError(
            f"the matrix has {len(entries)} entries; GitHub Actions accepts at most {GITHUB_MATRIX_LIMIT}.",
            "Split the recipes into several folders, or drop --per-variant.",
        )
    return json.dumps({"include": entries}, separators=(",", ":"), ensure_ascii=False)


def _display(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return Path(os.path.relpath(path, Path.cwd())).as_posix() if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)
