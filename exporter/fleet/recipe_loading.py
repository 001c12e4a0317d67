"""Loading recipe files: found under the paths given, read capped, parsed as YAML without aliases and validated, each
mistake one UsageError naming the file, the field and what is allowed."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from exporter.errors import UsageError
from exporter.fleet.recipe import (
    RECIPE_MAX_BYTES,
    RECIPE_MAX_LINES,
    RECIPE_SUFFIXES,
    Prompts,
    Recipe,
    Source,
    _lower_first,
    _Strict,
)
from exporter.user_files import no_alias_yaml_loader, read_user_file


# ------------------------------------------------------------------------------------------- loading
def load_recipe(path: Path) -> Recipe:
    """Read and validate one recipe file; its probe/calibration files must exist beside it.

    Raises:
        UsageError: unreadable file, not YAML, or any field that is wrong (named, with what is allowed).
    """
    import yaml

    path = Path(path)
    if path.suffix not in RECIPE_SUFFIXES:
        raise UsageError(f"{path} is not a recipe file.", "Recipes are YAML files ending in .yaml or .yml.")
    data = read_user_file(path, what="recipe", max_bytes=RECIPE_MAX_BYTES, max_lines=RECIPE_MAX_LINES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"recipe {path} is not UTF-8 (bad byte at offset {exc.start}).", "Save it as UTF-8.") from None
    try:
        data = yaml.load(text, Loader=no_alias_yaml_loader("recipe"))  # noqa: S506 - a SafeLoader without aliases
    except yaml.YAMLError as exc:
        raise UsageError(f"recipe {path} is not valid YAML: {_one_line(str(exc))}.", "Fix the YAML syntax.") from None
    if not isinstance(data, dict):
        raise UsageError(f"recipe {path} must be a mapping of fields.", "See docs/recipes.md for the format.")
    recipe = parse_recipe(data, str(path))
    for name in ("probe", "calibration"):
        rel = getattr(recipe, name)
        if rel is not None and not (path.parent / rel).is_file():
            raise UsageError(
                f"recipe {path}: field {name}: file {rel} does not exist (looked in {path.parent}).",
                f"Give a .txt or .jsonl file path relative to the recipe file, or remove {name}.",
            )
    return recipe


def parse_recipe(data: dict, where: str = "recipe") -> Recipe:
    """Validate already-parsed recipe data; UsageError naming ``where``, the field and what is allowed."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise UsageError(f"recipe {where}: field {loc}: {_describe(err).rstrip('.')}{more}.", _hint(err)) from None


_HINT = "See docs/recipes.md for the recipe format."


def _hint(err: ErrorDetails) -> str:
    if err["type"] != "extra_forbidden":
        return _HINT
    nested: dict[str, type[_Strict]] = {"source": Source, "prompts": Prompts}
    model = nested.get(str(err["loc"][0]), Recipe) if len(err["loc"]) > 1 else Recipe
    where = "top-level fields" if model is Recipe else f"fields under {err['loc'][0]}"
    return f"Allowed {where}: {', '.join(model.model_fields)}. {_HINT}"


def _describe(err: ErrorDetails) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown field (not allowed here)"
    if kind == "string_pattern_mismatch":
        field = str(err["loc"][-1])
        allowed = {
            "revision": "a full 40-hex lowercase commit sha (a branch, tag or short sha does not pin)",
            "repo": "a Hub repo id org/name",
            "publish": "an OCI reference oci://HOST[:PORT]/REPO[:TAG]",
        }.get(field, msg)
        return f"{err['input']!r} is not {allowed}"
    if kind == "enum":
        return f"{err['input']!r} is not allowed; {msg[0].lower()}{msg[1:]}"
    return _lower_first(msg.removeprefix("Value error, "))


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def remote_code_recipes(recipes: list[tuple[Path, Recipe]]) -> list[str]:
    """The names of the recipes that run the model repository's own Python code (``trust_remote_code``)."""
    return [p.name for p, r in recipes if r.trust_remote_code]


def require_remote_code_allowed(recipes: list[tuple[Path, Recipe]], allowed: bool) -> list[str]:
    """The recipes that run remote code; UsageError (exit 2) naming them unless ``allowed``
    (``exporter run --allow-remote-code``): a fleet run never runs a repository's code unasked."""
    names = remote_code_recipes(recipes)
    if names and not allowed:
        raise UsageError(
            f"{len(names)} recipe(s) run the model repository's own Python code (trust_remote_code: true): "
            f"{', '.join(names)}.",
            "Review that code at the pinned revision, then pass --allow-remote-code.",
        )
    return names


def find_recipes(paths: list[Path]) -> list[Path]:
    """Expand RECIPE|FOLDER arguments into recipe files (a folder: its *.yaml/*.yml, sorted, not recursive).

    Raises:
        UsageError: a path does not exist, is not a recipe, or a folder holds no recipes.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in RECIPE_SUFFIXES)
            if not inside:
                raise UsageError(f"no recipe files (*.yaml) in {p}.", "Pass a folder of recipes or recipe files.")
            found.extend(inside)
        elif p.exists():
            found.append(p)  # not a regular file (a FIFO, a device): load_recipe refuses it without reading
        else:
            raise UsageError(f"recipe path {p} does not exist.", "Pass recipe files or folders of them.")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return unique


def load_all(paths: list[Path]) -> list[tuple[Path, Recipe]]:
    """Find and validate every recipe first, so one bad file stops the run before anything heavy starts."""
    recipes = [(p, load_recipe(p)) for p in find_recipes(paths)]
    names: dict[str, Path] = {}
    for p, _ in recipes:
        if p.stem in names:
            raise UsageError(f"two recipes are both named {p.stem!r}: {names[p.stem]} and {p}.", "Rename one.")
        names[p.stem] = p
    return recipes
