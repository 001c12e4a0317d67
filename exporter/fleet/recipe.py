"""Recipe files: one reviewed YAML file per model, turned into the same ``ExportPlan`` the CLI builds.

A recipe (``recipes/<name>.yaml``)::

    source:
      repo: intfloat/e5-small-v2
      revision: dca8b1a9dae0d4575df2bf423a5edb485a431236   # a full 40-hex commit, nothing else
    kind: sentence-transformer        # or cross-encoder / sparse-encoder / colbert / bge-m3
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

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from exporter.errors import UsageError
from exporter.kinds import ModelKind, get

RECIPE_VERSION: Final = 1
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


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
