"""Pre-flight: refuse a model shape the exporter cannot serve, from its files alone, before anything heavy runs.

Reads ``modules.json`` (``exporter.source.st_modules``; a Router's ``router_config.json``) and ``config.json``,
and applies the support table (``exporter.source.shapes``, which says what is supported and why not; this
module checks a model against it). Every refusal is one line naming the module or the architecture and what
to do (UsageError, exit 2); it names a backend only when the refused variants are of that backend.

- Sparse and static chains (``classify``, ``restrict``) decide how a model exports
  (``exporter.builders.export_onnx_sparse``, ``exporter.builders.export_onnx_static``) and which variants apply:
  SPLADE (Transformer fill-mask, or ST 5.0-5.6's ``MLMTransformer``, -> SpladePooling) takes every sparse-encoder
  variant; StaticEmbedding [-> Normalize] only ``chain_shapes.STATIC_VARIANTS``. A ``Router`` (e.g. inference-free
  asymmetric SPLADE), a SparseStaticEmbedding outside a Router, a sparse encoder without SpladePooling (e.g.
  SparseAutoEncoder / CSR) and a StaticEmbedding followed by other modules are refused.
- A dense sentence-transformer's module chain must be ``Transformer -> Pooling -> Dense* -> [Normalize]``
  (``check_chain``): anything else names the first module out of place. Word-vector modules (``WordEmbeddings``
  and what stacks on them) are refused by name before the source's tokenizer is looked for (``check_modules``).
- A sentence-transformer whose ``model_type`` no table row names is refused, naming it (``select``).
- A variant a table row refuses for the model's architecture is refused when asked for by id, and left
  out of ``all`` (``select``). For an architecture outside the table, OpenVINO variants are refused the
  same way when optimum-intel has no exporter for its model_type (the only check that imports optimum).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.errors import UsageError
from exporter.kinds import ModelKind
from exporter.source import chain_shapes, shape_lookup, shapes, st_modules
from exporter.user_files import MODEL_JSON_MAX_BYTES, read_user_json

K = st_modules.ModuleKind
# Position rules of the dense-embedder chain: each kind may follow the kinds listed.
_MAY_FOLLOW: dict[K, tuple[K | None, ...]] = {
    K.TRANSFORMER: (None,),
    K.POOLING: (K.TRANSFORMER,),
    K.DENSE: (K.POOLING, K.DENSE),
    K.NORMALIZE: (K.POOLING, K.DENSE),
}
SUPPORTED_CHAIN = "Transformer -> Pooling -> Dense (any number) -> Normalize (optional)"
# Modules of sentence-transformers' pre-transformer models (GloVe-style word vectors and what stacks on them):
# class name -> why no graph is exported. They carry their own tokenizer (WhitespaceTokenizer in
# wordembedding/whitespacetokenizer_config.json), so such a model is complete without a tokenizer.json.
_WORD_VECTORS = (
    "word-vector lookup with sentence-transformers' own WhitespaceTokenizer (punctuation stripping, stop "
    "words), which neither the graph nor the runtime's tokenizers reproduce"
)
REFUSED_MODULES: dict[str, str] = {
    "WordEmbeddings": _WORD_VECTORS,
    "WordWeights": "per-word weights over a WordEmbeddings lookup",
    "LSTM": "recurrent layer over word vectors",
    "CNN": "convolution over word vectors",
    "BoW": "bag-of-words counts with sentence-transformers' own tokenizer",
}


@dataclass(frozen=True)
class ShapeFacts:
    """What the pre-flight read: the architecture and the module chain."""

    model_type: str | None
    architectures: tuple[str, ...]
    chain: tuple[str, ...]  # module class names, in order
    rows: tuple[str, ...]  # ids of the support-table rows the model matches
    remote_code: bool = False  # config.json maps to custom code (auto_map)

    def to_dict(self) -> dict:
        return {
            "model_type": self.model_type,
            "architectures": list(self.architectures),
            "chain": list(self.chain),
            "support_rows": list(self.rows),
            "remote_code": self.remote_code,
        }


def check_modules(root: Path) -> None:
    """UsageError naming the first module of ``modules.json`` that no export can hold (``REFUSED_MODULES``):
    read before the tokenizer check, so a complete word-vector model is refused for what it is, not called
    incomplete."""
    if not (Path(root) / "modules.json").is_file():
        return
    modules = st_modules.read_modules(Path(root))
    _refuse_router(root, [m.kind for m in modules])  # its weights live in the routes' folders, not the root
    for entry in modules:
        why = REFUSED_MODULES.get(entry.type.rsplit(".", 1)[-1])
        if why:
            raise UsageError(
                f"modules.json module {entry.idx} is {entry.type} ({why}): the model is complete, but no ONNX "
                "or OpenVINO graph is exported for it.",
                "Serve it with sentence-transformers, or use a StaticEmbedding model (model2vec), which exports "
                "(see `exporter list-architectures`).",
            )


# ------------------------------------------------------------------ sparse and static chains
@dataclass(frozen=True)
class ChainShape:
    id: str  # the support-table row
    variants: tuple[str, ...] | None = None  # the variant ids it allows (None: all its kind allows)
    refusal: str = ""  # why the other variants are refused


def _names(modules) -> str:
    return " -> ".join(m.type.rsplit(".", 1)[-1] for m in modules)


def _router_routes(root: Path) -> str:
    """``query: SparseStaticEmbedding; document: Transformer, SpladePooling`` from router_config.json."""
    for name in ("router_config.json", "config.json"):
        try:
            config = read_user_json(root / name, what="model file", max_bytes=MODEL_JSON_MAX_BYTES)
        except UsageError:
            continue
        if not isinstance(config, dict):
            continue
        types, structure = config.get("types") or {}, config.get("structure") or {}
        if structure:
            return "; ".join(
                f"{route}: " + ", ".join(str(types.get(m, m)).rsplit(".", 1)[-1] for m in mods)
                for route, mods in structure.items()
            )
    return "routes unreadable"


def _refuse_router(root: Path, kinds) -> None:
    if K.ROUTER in kinds:
        raise UsageError(
            f"the model is a Router ({_router_routes(Path(root))}): a routed (asymmetric, e.g. inference-free "
            "SPLADE) model has no single graph, and per-route export is not supported.",
            "Export the document encoder as its own SPLADE folder (Transformer fill-mask + SpladePooling) and "
            "compute query weights with sentence-transformers.",
        )


def classify(root: Path, kind: str) -> ChainShape | None:
    """The sparse/static chain of the model at ``root``; None for the dense chains; UsageError if refused."""
    modules = st_modules.read_modules(Path(root)) if (Path(root) / "modules.json").is_file() else ()
    kinds = [m.kind for m in modules]
    _refuse_router(root, kinds)
    if K.SPARSE_STATIC_EMBEDDING in kinds:
        raise UsageError(
            f"the model's modules ({_names(modules)}) start with SparseStaticEmbedding, a token-weight lookup "
            "with no graph to export.",
            "Compute its vectors with sentence-transformers (it is a tokenizer and one weight per token).",
        )
    if kinds and kinds[0] is K.STATIC_EMBEDDING:
        if kinds[1:] not in ([], [K.NORMALIZE]):
            raise UsageError(
                f"the model's modules ({_names(modules)}): only StaticEmbedding [-> Normalize] exports.",
                "Export a StaticEmbedding model without the modules after it, or use sentence-transformers.",
            )
        return ChainShape("static-embedding", chain_shapes.STATIC_VARIANTS, chain_shapes.STATIC_REFUSAL)
    fixed = chain_shapes.KIND_CHAINS.get(kind)  # a kind recognised by its files, with one module chain
    if fixed is not None:
        row, chain, hint = fixed
        if [k.value for k in kinds] != list(chain):
            raise UsageError(f"the {kind} model's modules ({_names(modules)}) are not {' -> '.join(chain)}.", hint)
        return ChainShape(row)
    if kind == ModelKind.SPARSE_ENCODER:
        if kinds != [K.TRANSFORMER, K.SPLADE_POOLING]:
            raise UsageError(
                f"the sparse encoder's modules ({_names(modules)}) are not Transformer (fill-mask) -> "
                "SpladePooling; only SPLADE sparse encoders export.",
                "Use sentence-transformers for this sparse model (e.g. SparseAutoEncoder / CSR).",
            )
        st_modules.read_splade(Path(root))  # an unknown pooling_strategy / activation_function: refused here, by name
        legacy = modules[0].type.rsplit(".", 1)[-1] == "MLMTransformer"
        return ChainShape("splade-mlmtransformer" if legacy else "splade-transformer")
    if kind == ModelKind.COLBERT:
        if len(kinds) < 2 or kinds[0] is not K.TRANSFORMER or any(k is not K.DENSE for k in kinds[1:]):
            raise UsageError(
                f"the ColBERT model's modules ({_names(modules)}) are not Transformer -> Dense (one or more); "
                "only PyLate ColBERT chains export.",
                "Use PyLate for this model.",
            )
        return ChainShape("colbert-pylate")
    return None


def restrict(root: Path, kind: str, specs: list, requested: list[str] | str | None) -> list:
    """``specs`` narrowed to what the model's chain allows: a variant the user named that the chain does not
    allow is a UsageError naming the chain; ones that came from ``all`` are dropped."""
    from exporter.variants import EXPANSIONS

    shape = classify(root, kind)
    if shape is None or shape.variants is None:
        return specs
    wanted = requested.split(",") if isinstance(requested, str) else list(requested or [])
    named = {w.strip().lower() for w in wanted} - {*EXPANSIONS, ""}
    refused = sorted(named - set(shape.variants))
    if refused:
        raise UsageError(
            f"variant(s) {', '.join(refused)} do not apply to {shape.id} models: {shape.refusal}.",
            f"Variants for {shape.id}: {', '.join(shape.variants)}.",
        )
    return [s for s in specs if s.id in shape.variants]


# ------------------------------------------------------------------------ dense chains
def _config(folder: Path) -> dict:
    try:
        data = read_user_json(folder / "config.json", what="model file", max_bytes=MODEL_JSON_MAX_BYTES)
    except UsageError:
        return {}
    return data if isinstance(data, dict) else {}


def _arch_label(model_type: str | None, archs: tuple[str, ...]) -> str:
    name = archs[0] if archs else "unknown architecture"
    return f"{name} (model_type {model_type})" if model_type else name


def check_chain(facts: st_modules.ModelFacts) -> None:
    """UsageError naming the first module that is not where a dense embedder's chain allows it."""
    previous: K | None = None
    for entry in facts.modules:
        allowed = _MAY_FOLLOW.get(entry.kind)
        own_code = not entry.type.startswith("sentence_transformers.")  # e.g. jina's custom_st.Transformer
        if allowed is None or previous not in allowed or own_code:
            where = "first" if previous is None else f"after {previous.value}"
            raise UsageError(
                f"modules.json module {entry.idx} ({where}) is {entry.type}, which is not supported there.",
                f"Supported sentence-transformer chain: {SUPPORTED_CHAIN} (see `exporter list-architectures`).",
            )
        previous = entry.kind
    if previous is None or previous is K.TRANSFORMER:
        raise UsageError(
            "modules.json has no Pooling module after the Transformer.",
            f"Supported sentence-transformer chain: {SUPPORTED_CHAIN}.",
        )


def inspect(source_dir: Path, kind: str) -> ShapeFacts:
    """The model's architecture and chain; UsageError for a chain a sentence-transformer graph cannot hold."""
    source_dir = Path(source_dir)
    chain: tuple[str, ...] = ()
    config_dir = source_dir
    if (source_dir / "modules.json").is_file():
        facts = st_modules.read(source_dir)
        chain = tuple(m.type.rsplit(".", 1)[-1] for m in facts.modules)
        config_dir = facts.transformer_dir
        if kind == ModelKind.SENTENCE_TRANSFORMER and classify(source_dir, kind) is None:
            check_chain(facts)  # sparse and static chains are classify's
    config = _config(config_dir)
    model_type = config.get("model_type")
    archs = tuple(str(a) for a in config.get("architectures") or ())
    rows = tuple(r.id for r in shape_lookup.rows_for(kind, model_type, chain[0] if chain else None))
    return ShapeFacts(
        model_type=model_type, architectures=archs, chain=chain, rows=rows, remote_code=bool(config.get("auto_map"))
    )


def _openvino_refusals(specs: list, kind: str, facts: ShapeFacts) -> dict[str, str]:
    """OpenVINO variants refused because optimum-intel has no exporter for an architecture outside the table
    (rows are tested; the registry is only consulted, importing optimum, for other model types)."""
    from exporter import kinds

    ov_ids = [s.id for s in specs if s.backend.value == "openvino"]
    if not ov_ids or facts.rows or not facts.model_type or facts.model_type in shapes.OPENVINO_VIA_TRACED_GRAPH:
        return {}
    task = kinds.get(kind).onnx_task
    try:
        import optimum.exporters.openvino.model_configs  # noqa: F401  (fills the registry)
        from optimum.exporters.tasks import TasksManager

        tasks = TasksManager.get_supported_tasks_for_model_type(
            facts.model_type, "openvino", library_name="transformers"
        )
    except (KeyError, ValueError):
        tasks = {}
    if task in tasks:
        return {}
    return {v: f"optimum-intel has no OpenVINO exporter for model_type {facts.model_type} ({task})" for v in ov_ids}


def select(specs: list, requested: list[str] | None, kind: str, facts: ShapeFacts) -> list:
    """``specs`` without the variants the support table refuses for this architecture.

    Raises:
        UsageError: a refused variant was asked for by id (``all`` just leaves it out), or every variant is
            refused for the architecture (remote-code families).
    """
    refused = shape_lookup.refusals_for(kind, facts.model_type, facts.chain[0] if facts.chain else None)
    label = _arch_label(facts.model_type, facts.architectures)
    if "*" in refused:
        raise UsageError(f"{label} is not exportable: {refused['*']}.", "See `exporter list-architectures`.")
    if facts.remote_code and not any(not shapes.BY_ID[r].remote_code for r in facts.rows):
        known = shape_lookup.exportable_model_types(kind)
        raise UsageError(
            f"{label} is not exportable: {shapes.REMOTE_CODE}.",
            f"Exportable model types: {', '.join(known)} (see `exporter list-architectures`).",
        )
    if kind == ModelKind.SENTENCE_TRANSFORMER and facts.model_type and not facts.rows:
        known = shape_lookup.exportable_model_types(kind)
        raise UsageError(
            f"{label} is outside every support rule: no tested export route for model_type {facts.model_type}.",
            f"Exportable model types: {', '.join(known)} (see `exporter list-architectures`).",
        )
    refused = {**refused, **_openvino_refusals(specs, kind, facts)}
    named = {w.strip().lower() for w in (requested or [])} - {"", "all", "best"}  # ids are case-insensitive
    asked = [s.id for s in specs if s.id in refused and s.id in named]
    if asked:
        reasons = "; ".join(f"{v}: {refused[v]}" for v in asked)
        kept = [s.id for s in specs if s.id not in refused]
        raise UsageError(
            f"variant(s) {', '.join(asked)} refused for {label}: {reasons}.",
            f"Leave them out{' (' + ', '.join(kept) + ' can be built)' if kept else ''}; "
            "see `exporter list-architectures`.",
        )
    return [s for s in specs if s.id not in refused]


def narrow(source_dir: Path, kind: str, specs: list, requested: list[str] | str | None) -> tuple[list, ShapeFacts]:
    """``(specs, facts)``: the variants of ``specs`` an export of the model at ``source_dir`` builds, narrowed by
    its module chain (``restrict``: sparse and static chains) and its architecture (the support table), and
    the shape facts read on the way. ``run_export`` and the dry run both call it, so they decide alike.

    Raises:
        UsageError: the chain or architecture is refused, or a variant it refuses was asked for by id.
    """
    if isinstance(requested, str):
        requested = [w.strip() for w in requested.split(",") if w.strip()]
    specs = restrict(source_dir, kind, specs, requested)  # sparse/static chains: refused or narrowed
    facts = inspect(source_dir, kind)  # a dense chain or an architecture it cannot serve: refused here
    return select(specs, requested, kind, facts), facts
