"""Recipe files: one reviewed YAML file per model, turned into the same ``ExportPlan`` the CLI builds.

A recipe (``recipes/<name>.yaml``)::

    source:
      repo: intfloat/e5-small-v2
      revision: dca8b1a9dae0d4575df2bf423a5edb485a431236   # a full 40-hex commit, nothing else
    kind: sentence-transformer        # or cross-encoder / sparse-encoder / colbert
    variants: [onnx]                  # ids from `exporter list-variants`, or [all]; default: onnx
    thresholds:                       # per precision class (fp32/fp16/int8), variant id, or "*"
      int8: {cosine_min: 0.985}
    probe: probes/retrieval.txt       # relative to the recipe file
    calibration: probes/calib.txt
    max_seq_length: 256
    prompts: {query: "query: ", passage: "passage: "}
    publish: oci://registry.example.com/models/e5-small-v2

Everything is validated (pydantic, ``extra="forbid"``) when the file is loaded, before anything heavy
runs; a mistake is a ``UsageError`` naming the file, the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from exporter.errors import UsageError
from exporter.kinds import ModelKind, get
from exporter.user_files import no_alias_yaml_loader, read_user_file

if TYPE_CHECKING:
    from exporter.pipeline import ExportPlan

RECIPE_VERSION = 1
RECIPE_SUFFIXES = (".yaml", ".yml")
# A recipe is a page of fields; ``plan`` runs on pull-request content, so a recipe is capped before it is
# parsed and may hold no YAML alias (``*name``): without aliases its node count is bounded by its size.
RECIPE_MAX_BYTES = 256_000
RECIPE_MAX_LINES = 5_000
_REPO_RE = r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$"
_SHA_RE = r"^[0-9a-f]{40}$"
_OCI_RE = r"^oci://[A-Za-z0-9.-]+(:[0-9]+)?/[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$"
_ALL_SCOPE = "*"


Kind = ModelKind  # a recipe's ``kind``: the kinds table's own enum (``exporter.kinds``)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """A Hub repo pinned to a full commit sha."""

    repo: Annotated[str, Field(pattern=_REPO_RE, description="Hub repo id, org/name.")]
    revision: Annotated[str, Field(pattern=_SHA_RE, description="Full 40-hex lowercase commit sha.")]


class Prompts(_Strict):
    """Text prepended to every input of a role, e.g. e5's ``"query: "`` / ``"passage: "``."""

    query: str | None = None
    passage: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


def parse_prompt_flags(flags: list[str]) -> dict[str, str] | None:
    """``--prompt NAME=TEXT`` flags as the recipe's ``prompts`` mapping (None when none were given).

    Raises:
        UsageError: a flag without ``=``, a name the recipe has no field for, or a name given twice.
    """
    roles = tuple(Prompts.model_fields)
    out: dict[str, str] = {}
    for flag in flags:
        name, sep, text = flag.partition("=")
        if not sep or name not in roles:
            raise UsageError(
                f"--prompt {flag!r} is not NAME=TEXT with NAME one of {', '.join(roles)}.",
                "Write e.g. --prompt 'query=query: '.",
            )
        if name in out:
            raise UsageError(f"--prompt {name}= is given twice.", "Give each role's prompt once.")
        out[name] = text
    return out or None


Scope = str  # a precision class, a variant id or "*"
MetricValues = dict[str, float | None]


class Recipe(_Strict):
    """One model's export, as reviewed. Paths are relative to the recipe file."""

    version: Literal[1] = RECIPE_VERSION
    source: Source
    kind: Kind | None = None  # None: detected from the model's files
    variants: list[str] | None = None  # None: the default set
    thresholds: dict[Scope, MetricValues] = Field(default_factory=dict)
    probe: Path | None = None
    calibration: Path | None = None
    max_seq_length: Annotated[int, Field(ge=1, le=32768)] | None = None
    truncate_dim: Annotated[int, Field(ge=1)] | None = None  # Matryoshka: keep the first N dimensions
    prompts: Prompts | None = None
    publish: Annotated[str, Field(pattern=_OCI_RE)] | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from exporter import variants

        try:
            variants.select(value, check_host=False)  # the CPU is checked where the recipe is built
        except UsageError as exc:
            raise ValueError(exc.message.rstrip(".") + f"; allowed: {', '.join(variants.BY_ID)}, all or best") from None
        return value

    @field_validator("thresholds")
    @classmethod
    def _known_thresholds(cls, value: dict[Scope, MetricValues]) -> dict[Scope, MetricValues]:
        from exporter import variants
        from exporter.quality import parity

        scopes = [_ALL_SCOPE, *(p.value for p in variants.Precision), *variants.BY_ID]
        for scope, metrics in value.items():
            if scope not in scopes:
                raise ValueError(f"unknown scope {scope!r}; allowed: {', '.join(scopes)}")
            for name, limit in metrics.items():
                if name not in parity.ALL_METRIC_NAMES:
                    allowed = ", ".join(parity.ALL_METRIC_NAMES)
                    raise ValueError(f"{scope}: unknown metric {name!r}; allowed: {allowed}")
                try:
                    parity.check_threshold(name, limit)  # whether it applies to the kind: at export
                except UsageError as exc:
                    raise ValueError(f"{scope}: {exc.message.rstrip('.')}; {_lower_first(exc.hint or '')}") from None
        return value

    @field_validator("probe", "calibration")
    @classmethod
    def _relative(cls, value: Path | None) -> Path | None:
        if value is not None and (value.is_absolute() or str(value).startswith("~")):
            raise ValueError("must be a path relative to the recipe file, so the recipe works on any machine")
        return value

    @model_validator(mode="after")
    def _prompts_for_embedders(self) -> Recipe:
        if self.prompts is not None and self.kind is not None and not get(self.kind).prompts:
            prompted = ", ".join(k.value for k in ModelKind if get(k).prompts)
            raise ValueError(f"prompts apply to {prompted} models only, not to {self.kind.value}")
        return self

    @property
    def model(self) -> str:
        return f"{self.source.repo}@{self.source.revision}"


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


def _hint(err: dict) -> str:
    if err["type"] != "extra_forbidden":
        return _HINT
    model = {"source": Source, "prompts": Prompts}.get(str(err["loc"][0]), Recipe) if len(err["loc"]) > 1 else Recipe
    where = "top-level fields" if model is Recipe else f"fields under {err['loc'][0]}"
    return f"Allowed {where}: {', '.join(model.model_fields)}. {_HINT}"


def _describe(err: dict) -> str:
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


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# -------------------------------------------------------------------------------------- plan mapping
# Recipe fields that map to ExportPlan fields which newer pipelines add. Without the field, a recipe
# that sets max_seq_length or prompts is refused (running it would silently ignore them); kind (the
# source detects it) and publish (a later step) are then left to those steps.
_NEWER_PLAN_FIELDS = ("kind", "max_seq_length", "truncate_dim", "prompts", "publish")
_MUST_BE_APPLIED = ("max_seq_length", "truncate_dim", "prompts")


def recipe_to_plan(recipe: Recipe, base_dir: Path, **overrides) -> ExportPlan:
    """The ExportPlan for ``recipe``; ``base_dir`` (the recipe's folder) anchors probe/calibration paths.

    ``overrides`` set other plan fields (``out``, ``force``, ``artifacts_root``, ``variants``).

    Raises:
        UsageError: the recipe asks for something this pipeline version cannot honour yet.
    """
    from exporter.pipeline import ExportPlan

    supported = {f.name for f in dataclasses.fields(ExportPlan)}
    extra = {
        "kind": recipe.kind.value if recipe.kind else None,
        "max_seq_length": recipe.max_seq_length,
        "truncate_dim": recipe.truncate_dim,
        "prompts": recipe.prompts.as_dict() if recipe.prompts else None,
        "publish": recipe.publish,
    }
    for name in _NEWER_PLAN_FIELDS:
        if name not in supported:
            if name in _MUST_BE_APPLIED and extra[name] is not None:
                raise UsageError(
                    f"the recipe sets {name}, which this version of the export pipeline does not apply yet.",
                    f"Remove {name} from the recipe, or upgrade exporter.",
                )
            extra.pop(name)
    plan = ExportPlan(
        model=recipe.model,
        variants=list(recipe.variants) if recipe.variants is not None else None,
        probe=(Path(base_dir) / recipe.probe) if recipe.probe else None,
        calibration=(Path(base_dir) / recipe.calibration) if recipe.calibration else None,
        thresholds={scope: dict(m) for scope, m in recipe.thresholds.items()},
        trust_remote_code=recipe.trust_remote_code,
        allow_pickle=recipe.allow_pickle,
        **extra,
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
