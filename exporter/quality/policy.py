"""The policy a variant is judged by: never the thresholds an artifact records about itself.

A ``Policy`` is the model kind's default thresholds by precision class (``exporter.quality.parity_gates``),
changed only by what the person judging brings, in this order (later wins, metric by metric): a policy
file (``--policy FILE``, YAML or JSON), a recipe's ``thresholds``, then ``--threshold`` flags. Each layer is
``{scope: {metric: value}}`` with the scopes of ``parity_gates.thresholds_for`` (``*``, a precision class,
a variant id). A policy file::

    thresholds:                 # as in a recipe
      "*": {neighbour_agreement_at_10: 0.97}
      int8: {cosine_min: 0.985}
    trusted_keys: [...]         # read by pull / inspect / promote (``exporter.ship.signing``)
    require_signature: true

``digest`` is the sha256 of the policy's canonical JSON (the defaults of every kind and class, then the
merged overrides), so two policies that judge alike have one digest and a changed default changes it.
``looser_than`` names each recorded threshold (an artifact's, an attestation's) that asks less than the
policy does; a metric the record predates is not a claim, and one the policy no longer has is not judged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from exporter import kinds
from exporter.errors import UsageError
from exporter.quality import parity_gates as gates

MAX_POLICY_BYTES = 1 << 20
POLICY_VERSION = 1
# Every key a policy file may hold: the thresholds (here) and the trust rules ``exporter.ship.signing`` reads.
TRUST_KEYS = ("trusted_keys", "require_signature", "require_attestation", "require_parity_passed")
KNOWN_KEYS = ("version", "thresholds", *TRUST_KEYS)

Overrides = dict[str, dict[str, float | None]]


def _frozen(overrides: Overrides) -> tuple:
    return tuple(sorted((scope, tuple(sorted(m.items()))) for scope, m in overrides.items()))


@dataclass(frozen=True)
class Policy:
    """Thresholds by kind, precision class and variant: the defaults plus the merged overrides."""

    overrides: tuple = ()  # ((scope, ((metric, value), ...)), ...), sorted: see ``_frozen``
    sources: tuple[str, ...] = ()  # where the overrides came from, for messages (not in the digest)

    # ----------------------------------------------------------------------------------------- build
    @classmethod
    def load(
        cls, path: Path | None = None, *, recipe: Path | None = None, flags: list[str] | tuple[str, ...] = ()
    ) -> Policy:
        """The policy from a policy file, a recipe's thresholds and ``[SCOPE:]metric=value`` flags (each
        optional; none: the defaults).

        Raises:
            UsageError: a policy file that is not a regular file under 1 MB, not YAML/JSON, holds an unknown
                key (the known ones are listed) or a bad threshold; a bad recipe; a malformed flag.
        """
        layers: list[Overrides] = []
        sources: list[str] = []
        if path is not None:
            layers.append(read_file(Path(path))[0])
            sources.append(f"policy {path}")
        if recipe is not None:
            from exporter.fleet.recipe_loading import load_recipe

            layers.append({s: dict(m) for s, m in load_recipe(Path(recipe)).thresholds.items()})
            sources.append(f"recipe {recipe}")
        if flags:
            layers.append(gates.parse_threshold_overrides(list(flags)))
            sources.append("--threshold flags")
        merged: Overrides = {}
        for layer in layers:
            _check_scopes(layer)
            for scope, metrics in layer.items():
                merged.setdefault(scope, {}).update(metrics)
        return cls(_frozen(merged), tuple(sources))

    @property
    def overrides_dict(self) -> Overrides:
        return {scope: dict(metrics) for scope, metrics in self.overrides}

    # --------------------------------------------------------------------------------------- judge
    def thresholds_for(self, kind: str | None, precision: str | None, variant_id: str | None = None):
        """The thresholds a variant of ``kind``, precision class and id is judged by.

        Raises:
            UsageError: the policy sets a metric that does not apply to ``kind`` (cosine_min for a reranker).
        """
        spec = _Scoped(variant_id or "", gates.PrecisionClass(precision or gates.PrecisionClass.FP32))
        return gates.defaults(kind, precision).override(**gates.scoped_overrides(spec, self.overrides_dict))

    def looser_than(
        self, recorded: dict | None, kind: str | None, precision: str | None, variant_id: str | None = None
    ) -> list[str]:
        """One phrase per recorded threshold that is looser than this policy's (empty: none is)."""
        mine = self.thresholds_for(kind, precision, variant_id).to_dict()
        recorded = recorded or {}
        out = []
        for name, want in mine.items():
            if want is None or name not in recorded:
                continue  # the policy does not gate it, or the record predates the metric (not a claim)
            got = recorded[name]
            if got is None:
                out.append(f"{name} is switched off (the policy requires {_bound(name)} {want:g})")
            elif not isinstance(got, int | float) or isinstance(got, bool):
                out.append(f"{name} is {got!r}, not a number (the policy requires {_bound(name)} {want:g})")
            elif (got > want) if name in gates.UPPER_BOUNDS else (got < want):
                out.append(f"{name} {_bound(name)} {got:g} is looser than the policy's {want:g}")
        return out

    def record(self, kind: str | None, precision: str | None, variant_id: str | None = None) -> dict:
        """What an attestation records: the policy's digest and the thresholds it judged this variant by."""
        return {"digest": self.digest, "thresholds": self.thresholds_for(kind, precision, variant_id).to_dict()}

    # -------------------------------------------------------------------------------------- digest
    def canonical(self) -> dict:
        """The document the digest covers: every kind's defaults by class, and the overrides."""
        defaults = {
            k.value: {p.value: t.to_dict() for p, t in spec.thresholds().items()} for k, spec in kinds.KINDS.items()
        }
        return {"version": POLICY_VERSION, "defaults": defaults, "overrides": self.overrides_dict}

    @cached_property
    def digest(self) -> str:
        data = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return "sha256:" + hashlib.sha256(data.encode("utf-8")).hexdigest()

    def describe(self) -> str:
        return f"{' + '.join(['kind defaults', *self.sources])} ({self.digest[:19]})"


@dataclass(frozen=True)
class _Scoped:
    """What ``parity_gates.scoped_overrides`` reads of a variant: its id and precision class."""

    id: str
    precision: gates.PrecisionClass


def kind_of_thresholds(recorded: dict) -> str:
    """The model kind whose threshold set names every metric of ``recorded`` (retired ones aside), the
    smallest such set first: an attestation records thresholds, not the kind."""
    names = {n for n in recorded if n not in gates.RETIRED_METRICS}
    sets = sorted(
        ((k.value, set(spec.thresholds()[gates.PrecisionClass.FP32].to_dict())) for k, spec in kinds.KINDS.items()),
        key=lambda kv: len(kv[1]),
    )
    return next((kind for kind, fields in sets if names <= fields), kinds.DEFAULT_KIND)


def _bound(name: str) -> str:
    return "<=" if name in gates.UPPER_BOUNDS else ">="


def _check_scopes(layer: Overrides) -> None:
    """UsageError for a scope that is not ``*``, a precision class or a catalogued variant id, or a bad value."""
    from exporter.variants import CATALOGUE

    known = {gates.ALL_SCOPE} | {p.value for p in gates.PrecisionClass} | {s.id for s in CATALOGUE}
    for scope, metrics in layer.items():
        if scope not in known:
            raise UsageError(
                f"threshold scope {scope!r} is not a precision class or a variant id.",
                "Use *, fp32, fp16, int8 or an id from `exporter list-variants`.",
            )
        if not isinstance(metrics, dict):
            raise UsageError(f"thresholds for {scope!r} must be a mapping of metric: value.", "")
        for name, value in metrics.items():
            gates.check_threshold(name, value)


def read_file(path: Path) -> tuple[Overrides, dict]:
    """The thresholds of a policy file and the whole document (the trust keys are read by ``ship.signing``).

    Raises:
        UsageError: not a regular file of at most 1 MB, not UTF-8 YAML/JSON mapping, an unknown key.
    """
    import yaml

    from exporter.user_files import no_alias_yaml_loader, read_user_file

    data = read_user_file(path, what="policy file", max_bytes=MAX_POLICY_BYTES)
    hint = f"Write a YAML or JSON mapping with some of: {', '.join(KNOWN_KEYS)}."
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=no_alias_yaml_loader("policy file"))  # noqa: S506 - JSON is YAML
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = getattr(exc, "problem", None) or type(exc).__name__  # e.g. the refused alias
        raise UsageError(f"policy file {path} is not YAML or JSON ({detail}).", hint) from None
    if not isinstance(doc, dict):
        raise UsageError(f"policy file {path} is not a mapping.", hint)
    unknown = sorted(str(k) for k in doc if k not in KNOWN_KEYS)
    if unknown:
        raise UsageError(f"policy file {path} has unknown key(s): {', '.join(unknown)}.", hint)
    if doc.get("version", POLICY_VERSION) != POLICY_VERSION:
        raise UsageError(f"policy file {path} has version {doc['version']!r}.", "This exporter reads version 1.")
    thresholds = doc.get("thresholds") or {}
    if not isinstance(thresholds, dict):
        raise UsageError(f"policy file {path}: thresholds must be a mapping of scope: {{metric: value}}.", hint)
    try:
        _check_scopes(thresholds)
    except UsageError as exc:
        raise UsageError(f"policy file {path}: {exc.message}", exc.hint) from None
    return {str(s): dict(m) for s, m in thresholds.items()}, doc


DEFAULT = Policy()
