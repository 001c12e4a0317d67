"""A recipe mapped to the ExportPlan the CLI builds, and an ExportPlan written back as a recipe (--save-recipe)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.errors import UsageError
from exporter.fleet.recipe import _SHA_RE, RECIPE_SUFFIXES, RECIPE_VERSION, Recipe
from exporter.fleet.recipe_loading import parse_recipe

if TYPE_CHECKING:
    from exporter.pipeline import ExportPlan


# -------------------------------------------------------------------------------------- plan mapping
def recipe_to_plan(recipe: Recipe, base_dir: Path, **overrides) -> ExportPlan:
    """The ExportPlan for ``recipe``; ``base_dir`` (the recipe's folder) anchors probe/calibration paths.

    ``overrides`` set other plan fields (``out``, ``force``, ``artifacts_root``, ``variants``).
    """
    from exporter.pipeline import ExportPlan

    plan = ExportPlan(
        model=recipe.model,
        variants=list(recipe.variants) if recipe.variants is not None else None,
        probe=(Path(base_dir) / recipe.probe) if recipe.probe else None,
        calibration=(Path(base_dir) / recipe.calibration) if recipe.calibration else None,
        thresholds={scope: dict(m) for scope, m in recipe.thresholds.items()},
        trust_remote_code=recipe.trust_remote_code,
        allow_pickle=recipe.allow_pickle,
        kind=recipe.kind.value if recipe.kind else None,
        max_seq_length=recipe.max_seq_length,
        truncate_dim=recipe.truncate_dim,
        prompts=recipe.prompts.as_dict() if recipe.prompts else None,
        publish=recipe.publish,
    )
    return dataclasses.replace(plan, **overrides) if overrides else plan


def plan_to_recipe(plan, base_dir: Path | None = None, revision: str | None = None) -> dict:
    """The recipe (as plain data, ready for YAML) that rebuilds ``plan``.

    ``revision`` supplies the commit an unpinned plan resolved to. Probe/calibration paths are written
    relative to ``base_dir`` (the folder the recipe will be saved in) when possible.

    Raises:
        UsageError: the plan has no Hub repo pinned to a commit (a recipe is always pinned).
    """
    from exporter.source import resolve as source

    ref = source.parse_model_ref(plan.model, plan.revision)
    if ref.local_path is not None:
        raise UsageError(
            f"a recipe cannot point at the local folder {ref.local_path}.",
            "Recipes pin a Hub repo at a commit: pass org/name@<40-hex sha>.",
        )
    sha = revision or ref.revision
    if not sha or not re.fullmatch(_SHA_RE, sha):
        raise UsageError(
            f"{ref.repo_id}@{ref.revision or 'main'} is not pinned to a commit, and a recipe must be.",
            "Pass org/name@<40-hex commit sha> (or --revision <sha>) with --save-recipe.",
        )
    data: dict = {"version": RECIPE_VERSION, "source": {"repo": ref.repo_id, "revision": sha}}
    if getattr(plan, "kind", None):
        data["kind"] = plan.kind
    if plan.variants is not None:
        data["variants"] = list(plan.variants)
    if plan.thresholds:
        data["thresholds"] = {scope: dict(m) for scope, m in plan.thresholds.items()}
    for name in ("probe", "calibration"):
        value = getattr(plan, name)
        if value is not None:
            data[name] = _relative_to(Path(value), base_dir)
    for name in ("max_seq_length", "truncate_dim", "prompts", "publish"):
        value = getattr(plan, name, None)
        if value is not None:
            data[name] = value
    for name in ("trust_remote_code", "allow_pickle"):
        if getattr(plan, name):
            data[name] = True
    parse_recipe(data, "built from the command line")  # the same checks a loaded recipe passes
    return data


def _relative_to(path: Path, base_dir: Path | None) -> str:
    import os

    if base_dir is None:
        return path.as_posix()
    return Path(os.path.relpath(path.resolve(), Path(base_dir).resolve())).as_posix()


def save_recipe(plan, path: Path, revision: str | None = None) -> Path:
    """Write the recipe of ``plan`` to ``path`` (YAML, atomically); probe paths relative to its folder.

    An existing file is replaced only with the plan's ``force`` (``export --force``), dry run or not."""
    import yaml

    from exporter.fsutil import check_output_file, write_text_atomic

    path = Path(path)
    if path.suffix not in RECIPE_SUFFIXES:
        raise UsageError(f"--save-recipe {path}: a recipe file ends in .yaml or .yml.", "Pick a .yaml file name.")
    check_output_file(path, option="--save-recipe", replace=bool(getattr(plan, "force", False)))
    data = plan_to_recipe(plan, base_dir=path.parent, revision=revision)
    header = f"# exporter recipe: {data['source']['repo']} (written by `exporter export --save-recipe`)\n"
    try:
        write_text_atomic(path, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    except OSError as exc:
        raise UsageError(f"cannot write recipe {path}: {exc.strerror or exc}.", "Choose a writable path.") from exc
    return path
