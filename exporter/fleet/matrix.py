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
    recipes: list[tuple[Path, Recipe]], *, per_variant: bool = False, artifacts_root: Path = Path("artifacts")
) -> list[dict[str, str]]:
    """The matrix entries of validated recipes, in the order given.

    Each entry: ``name`` (the recipe's stem, plus ``-<variant>`` per variant), ``recipe`` (its path,
    relative to the working folder when inside it), ``model``, ``revision``, ``kind``, ``variants``
    (comma-separated; what to pass to ``exporter run --variants``), ``artifact`` (the folder the run
    writes), ``publish`` (the recipe's OCI target or ""). Per variant, each entry also has ``variant``;
    a derived variant's job builds the base it derives from as well.
    """
    from exporter import kinds, variants

    entries = []
    for path, recipe in recipes:
        sha = recipe.source.revision
        base = {
            "name": path.stem,
            "recipe": _display(path),
            "model": recipe.source.repo,
            "revision": recipe.source.revision,
            "kind": recipe.kind.value if recipe.kind else "",
            "artifact": (artifacts_root / recipe.source.repo.replace("/", "--") / sha[:12]).as_posix(),
            "publish": recipe.publish or "",
        }
        # the runner checks its own CPU (a bf16 variant planned here may build on a runner that has the units)
        chosen = [
            s.id for s in variants.select_for_kind(recipe.variants, kinds.get(recipe.kind).kind, check_host=False)
        ]
        if not per_variant:
            entries.append({**base, "variants": ",".join(recipe.variants or chosen)})
            continue
        for vid in chosen:
            entries.append({**base, "name": f"{path.stem}-{vid}", "variants": vid, "variant": vid})
    return entries


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
