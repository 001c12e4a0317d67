"""The support registry: which models export, by which route, to which variants, and why not. The one owner
of that decision; everything else asks it.

Each ``Rule`` says:

- how a model is recognised: its kind (``exporter.kinds``; None: a whole-model refusal of any kind), its module
  chain as ``modules.json`` lists it (a ``Chain`` pattern of module classes), and the ``config.json``
  ``model_type`` family (empty: any model type, e.g. SPLADE's masked LM or a PyLate ColBERT);
- its ONNX route and its OpenVINO route: the builders that make the fp32 graph and IR (``"module:function"``;
  None: the kind's own, ``KindSpec.onnx_builder`` / ``openvino_builder`` or optimum-intel), and why a family's
  IR is converted from the traced ONNX graph instead of optimum-intel's export;
- its refusals: variant id (or ``"*"``: every variant) -> a one-line reason; ``only`` lists the variants a
  chain allows at all (a StaticEmbedding graph: onnx and openvino), refusing the rest of its kind's.

``match(folder, kind)`` finds the rule of the model at ``folder`` from its files alone (modules.json,
config.json; nothing is loaded) and refuses, with one line naming the module or the model_type, every model no
rule exports. ``apply(match, specs, requested)`` narrows the variants to what the rule allows: one the user
named that the rule refuses is a UsageError, one that came from ``all``/``best`` is left out.
``exporter.plan_check`` is the one public answer built on these two; the builders and runners dispatch on the
matched rule's routes (``BuildContext.rule``); ``exporter list-architectures`` and docs/support.md print the
registry (``markdown_table``).

A new family is one rule; a new kind (``kinds.KINDS``) is one rule with that kind and its chain.
Importing this module is cheap (no model libraries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exporter.errors import UsageError
from exporter.kinds import ModelKind
from exporter.source import st_modules
from exporter.support.rule import ST, Chain, Rule, resolve
from exporter.support.rules import BY_ID, ORT_OPTIMIZER_LEVELS, REMOTE_CODE, RULES, STATIC_VARIANTS
from exporter.user_files import MODEL_JSON_MAX_BYTES, read_user_json

__all__ = [
    "BY_ID",
    "ORT_OPTIMIZER_LEVELS",
    "RULES",
    "ST",
    "STATIC_VARIANTS",
    "Chain",
    "Match",
    "Rule",
    "apply",
    "check_modules",
    "exportable_model_types",
    "find",
    "markdown_table",
    "match",
    "table_rows",
]
K = st_modules.ModuleKind


# ------------------------------------------------------------------------------------------------ matching
@dataclass(frozen=True)
class Match:
    """What ``match`` read from a model's files, and the rule it matched."""

    rule: Rule
    model_type: str | None
    architectures: tuple[str, ...]
    chain: tuple[str, ...]  # module class names, in order
    remote_code: bool = False  # config.json maps to custom code (auto_map)
    label: str = field(default="", compare=False)  # the model as messages name it

    @property
    def rows(self) -> tuple[str, ...]:
        return (self.rule.id,)

    def to_dict(self) -> dict:
        return {
            "model_type": self.model_type,
            "architectures": list(self.architectures),
            "chain": list(self.chain),
            "support_rows": [self.rule.id],
            "remote_code": self.remote_code,
        }


def _names(modules) -> str:
    return " -> ".join(m.type.rsplit(".", 1)[-1] for m in modules)


def _router_routes(root: Path) -> str:
    """``query: SparseStaticEmbedding; document: Transformer, SpladePooling`` from router_config.json."""
    for name in ("router_config.json", "config.json"):
        try:
            config = read_user_json(root / name, what="model file", max_bytes=MODEL_JSON_MAX_BYTES)
        except UsageError:
            continue
        config = config if isinstance(config, dict) else {}
        types, structure = config.get("types") or {}, config.get("structure") or {}
        if structure:
            return "; ".join(
                f"{route}: " + ", ".join(str(types.get(m, m)).rsplit(".", 1)[-1] for m in mods)
                for route, mods in structure.items()
            )
    return "routes unreadable"


def _modules(root: Path) -> tuple[st_modules.ModuleEntry, ...]:
    return st_modules.read_modules(root) if (root / "modules.json").is_file() else ()


def _refuse_whole(root: Path, modules) -> None:
    """UsageError for a model a kind-less rule refuses outright (a Router, word vectors), naming its first module."""
    for rule in RULES:
        if rule.kind is None and modules and rule.chain.matches(modules):
            first = modules[0]
            what = f"{first.type} ({_router_routes(root)})" if first.kind is K.ROUTER else first.type
            raise UsageError(
                f"modules.json module {first.idx} is {what}: the model is complete, but no graph is exported "
                f"for it: {rule.refusals()['*']}.",
                rule.hint,
            )


def check_modules(root: Path) -> None:
    """Refuse, from modules.json alone, a model no kind exports (``kind=None`` rules): called by the source
    resolver before the tokenizer check, so a complete word-vector model is refused for what it is, not called
    incomplete."""
    _refuse_whole(Path(root), _modules(Path(root)))


def _chain_error(modules, kind: ModelKind) -> UsageError:
    """The first module no chain of ``kind``'s rules allows where it stands, named."""
    chains = list(dict.fromkeys(r.chain for r in RULES if r.kind is kind))
    fits = [c.consume(modules) for c in chains]
    n = max((i for i, _ in fits), default=0)
    shown = "; ".join(c.text for c in chains)
    hint = f"Exportable {kind.value} chains: {shown} (see `exporter list-architectures`)."
    if n < len(modules):
        m = modules[n]
        where = "first" if n == 0 else f"after {modules[n - 1].type.rsplit('.', 1)[-1]}"
        return UsageError(
            f"modules.json module {m.idx} ({where}) is {m.type}, which is not supported there "
            f"(the model's modules: {_names(modules)}).",
            hint,
        )
    return UsageError(f"the model's modules ({_names(modules)}) end early: no {kind.value} chain ends there.", hint)


def _config(folder: Path) -> dict:
    try:
        data = read_user_json(folder / "config.json", what="model file", max_bytes=MODEL_JSON_MAX_BYTES)
    except UsageError:
        return {}
    return data if isinstance(data, dict) else {}


def exportable_model_types(kind: str | ModelKind) -> list[str]:
    """The model types of ``kind`` some rule exports (remote-code rules excluded), sorted (for messages)."""
    kind = ModelKind(kind)
    return sorted({mt for r in RULES if r.kind is kind and not r.remote_code for mt in r.model_types})


def match(folder: Path, kind: str | ModelKind) -> Match:
    """The rule of the model at ``folder`` (its files alone; nothing is loaded) exported as ``kind``.

    Raises:
        UsageError: one line naming what no rule exports: a module (a Router, word vectors, a module out of
            place in the chain), a model_type outside every rule, remote code, or a rule that refuses every
            variant.
    """
    folder, kind = Path(folder), ModelKind(kind)
    modules = _modules(folder)
    _refuse_whole(folder, modules)
    by_chain = [r for r in RULES if r.kind is kind and r.chain.matches(modules)]
    if not by_chain:
        raise _chain_error(modules, kind)
    config = _config(st_modules.transformer_path(folder, modules))
    model_type = config.get("model_type")
    archs = tuple(str(a) for a in config.get("architectures") or ())
    remote = bool(config.get("auto_map"))
    label = f"{archs[0] if archs else 'unknown architecture'}" + (f" (model_type {model_type})" if model_type else "")
    rule = next((r for r in by_chain if model_type in r.model_types), None) or next(
        (r for r in by_chain if not r.model_types), None
    )
    known = exportable_model_types(kind)
    if remote and (rule is None or rule.remote_code):
        raise UsageError(
            f"{label} is not exportable: {REMOTE_CODE}.",
            f"Exportable model types: {', '.join(known)} (see `exporter list-architectures`).",
        )
    if rule is None:
        raise UsageError(
            f"{label} is outside every support rule: no tested export route for model_type {model_type}.",
            f"Exportable model types: {', '.join(known)} (see `exporter list-architectures`).",
        )
    if "*" in rule.refusals():
        raise UsageError(f"{label} is not exportable: {rule.refusals()['*']}.", rule.hint)
    if rule.check:
        resolve(rule.check)(folder)
    chain = tuple(m.type.rsplit(".", 1)[-1] for m in modules)
    return Match(rule, model_type, archs, chain, remote, label if archs else f"{rule.id} models")


def find(folder: Path, kind: str | ModelKind | None) -> Rule | None:
    """The rule of the model (or artifact) at ``folder``, or None where ``match`` refuses it (a builder or
    runner asked about a folder no export matched, e.g. a test's hand-made one)."""
    from exporter.kinds import DEFAULT_KIND

    try:
        return match(folder, kind or DEFAULT_KIND).rule
    except UsageError:
        return None


def _openvino_refusals(specs: list, m: Match) -> dict[str, str]:
    """OpenVINO variants refused for a rule of any model_type (cross-encoders, SPLADE) whose IR is optimum-intel's
    export, when optimum-intel has no exporter for the model's model_type (the only check that imports optimum)."""
    ov_ids = [s.id for s in specs if s.backend.value == "openvino"]
    if not ov_ids or m.rule.model_types or not m.model_type or m.rule.openvino_build_fn() is not None:
        return {}
    task = m.rule.kind_spec().onnx_task
    try:
        import optimum.exporters.openvino.model_configs  # noqa: F401  (fills the registry)
        from optimum.exporters.tasks import TasksManager

        tasks = TasksManager.get_supported_tasks_for_model_type(m.model_type, "openvino", library_name="transformers")
    except (KeyError, ValueError):
        tasks = {}
    if task in tasks:
        return {}
    return {v: f"optimum-intel has no OpenVINO exporter for model_type {m.model_type} ({task})" for v in ov_ids}


def apply(m: Match, specs: list, requested: list[str] | str | None) -> list:
    """``specs`` without the variants ``m``'s rule refuses.

    Raises:
        UsageError: a refused variant was asked for by id (``all`` / ``best`` just leave it out).
    """
    from exporter.variants import EXPANSIONS

    if isinstance(requested, str):
        requested = requested.split(",")
    refused = {**m.rule.refusals(), **_openvino_refusals(specs, m)}
    named = {w.strip().lower() for w in (requested or [])} - {"", *EXPANSIONS}  # ids are case-insensitive
    asked = [s.id for s in specs if s.id in refused and s.id in named]
    if asked:
        reasons = "; ".join(f"{v}: {refused[v]}" for v in asked)
        kept = [s.id for s in specs if s.id not in refused]
        raise UsageError(
            f"variant(s) {', '.join(asked)} refused for {m.label}: {reasons}.",
            f"Leave them out{' (' + ', '.join(kept) + ' can be built)' if kept else ''}; "
            + (f"{m.rule.id} models take only {', '.join(m.rule.only)}; " if m.rule.only else "")
            + "see `exporter list-architectures`.",
        )
    return [s for s in specs if s.id not in refused]


# --------------------------------------------------------------------------------------------- the table
def table_rows() -> list[dict]:
    return [r.to_dict() for r in RULES]


def markdown_table() -> str:
    """The registry as docs/support.md reproduces it (``exporter list-architectures``)."""
    lines = [
        "| id | family | kind | model_type | chain | ONNX route | OpenVINO route | allowed variants | refused variants "
        "| examples |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table_rows():
        by_reason: dict[str, list[str]] = {}
        for variant, why in r["refused"].items():
            by_reason.setdefault(why, []).append(variant)
        refused = "; ".join(f"{', '.join(vs)}: {why}" for why, vs in by_reason.items()) or "-"
        lines.append(
            f"| {r['id']} | {r['family']} | {r['kind']} | {', '.join(r['model_types']) or 'any'} | {r['chain']} | "
            f"{r['onnx_route'] or '-'} | {r['openvino_route']} | {', '.join(r['allowed']) or '-'} | {refused} | "
            f"{', '.join(r['examples'])} |"
        )
    return "\n".join(lines)
