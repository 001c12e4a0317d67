"""Sparse and static module chains, checked from the model's files before anything heavy runs.

Which chain a sentence-transformers folder has decides how it exports (``exporter.builders.export_onnx_sparse``,
``exporter.builders.export_onnx_static``) and which variants apply. This module reads ``modules.json`` (and a
Router's ``router_config.json``) only, and either names the chain (a ``ChainShape``, with the variants it
allows) or refuses it with one line naming the module and saying what to do (UsageError, exit 2).

Chains handled here (the dense Transformer -> Pooling -> Dense -> Normalize family is checked by
``exporter.builders.export_onnx``):

- SPLADE: Transformer (``transformer_task: fill-mask``; ST 5.0-5.6 wrote ``MLMTransformer``) ->
  SpladePooling. Every sparse-encoder variant of the catalogue.
- StaticEmbedding [-> Normalize] (model2vec-style): ``onnx`` and ``openvino`` only (see
  ``STATIC_VARIANTS``).
- Refused: a ``Router`` (the inference-free asymmetric SPLADE shape: a SparseStaticEmbedding query side
  and an MLM document side; or any other routed model), a SparseStaticEmbedding outside a Router, a
  sparse encoder without SpladePooling (e.g. SparseAutoEncoder / CSR), a StaticEmbedding followed by
  other modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import UsageError
from exporter.kinds import ModelKind
from exporter.source import st_modules
from exporter.source.st_modules import ModuleKind

# StaticEmbedding graphs are one Gather and a masked mean: ONNX Runtime's transformer fusions (O1-O4) and
# the int8 presets (built for MatMul-heavy transformers, calibrated through optimum's model classes)
# have nothing to work on; OpenVINO reads the same graph.
STATIC_VARIANTS = ("onnx", "openvino")
STATIC_REFUSAL = (
    "a StaticEmbedding graph is one embedding lookup and a masked mean: ORT fusions and int8 presets have "
    "nothing to optimise, and sentence-transformers cannot load a static model's graph"
)


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
            config = json.loads((root / name).read_text("utf-8"))
        except (OSError, ValueError):
            continue
        types, structure = config.get("types") or {}, config.get("structure") or {}
        if structure:
            return "; ".join(
                f"{route}: " + ", ".join(str(types.get(m, m)).rsplit(".", 1)[-1] for m in mods)
                for route, mods in structure.items()
            )
    return "routes unreadable"


def classify(root: Path, kind: str) -> ChainShape | None:
    """The sparse/static chain of the model at ``root``; None for the dense chains; UsageError if refused."""
    modules = st_modules.read_modules(Path(root)) if (Path(root) / "modules.json").is_file() else ()
    kinds = [m.kind for m in modules]
    if ModuleKind.ROUTER in kinds:
        raise UsageError(
            f"the model is a Router ({_router_routes(Path(root))}): a routed (asymmetric, e.g. inference-free "
            "SPLADE) model has no single graph, and per-route export is not supported.",
            "Export the document encoder as its own SPLADE folder (Transformer fill-mask + SpladePooling) and "
            "compute query weights with sentence-transformers.",
        )
    if ModuleKind.SPARSE_STATIC_EMBEDDING in kinds:
        raise UsageError(
            f"the model's modules ({_names(modules)}) start with SparseStaticEmbedding, a token-weight lookup "
            "with no graph to export.",
            "Compute its vectors with sentence-transformers (it is a tokenizer and one weight per token).",
        )
    if kinds and kinds[0] is ModuleKind.STATIC_EMBEDDING:
        if kinds[1:] not in ([], [ModuleKind.NORMALIZE]):
            raise UsageError(
                f"the model's modules ({_names(modules)}): only StaticEmbedding [-> Normalize] exports.",
                "Export a StaticEmbedding model without the modules after it, or use sentence-transformers.",
            )
        return ChainShape("static-embedding", STATIC_VARIANTS, STATIC_REFUSAL)
    if kind == ModelKind.SPARSE_ENCODER:
        if kinds != [ModuleKind.TRANSFORMER, ModuleKind.SPLADE_POOLING]:
            raise UsageError(
                f"the sparse encoder's modules ({_names(modules)}) are not Transformer (fill-mask) -> "
                "SpladePooling; only SPLADE sparse encoders export.",
                "Use sentence-transformers for this sparse model (e.g. SparseAutoEncoder / CSR).",
            )
        st_modules.read_splade(Path(root))  # an unknown pooling_strategy / activation_function: refused here, by name
        legacy = modules[0].type.rsplit(".", 1)[-1] == "MLMTransformer"
        return ChainShape("splade-mlmtransformer" if legacy else "splade-transformer")
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


# ------------------------------------------------------------------------------ support-table rows
_KIND_REFUSAL = (
    "not for sparse encoders: it calibrates or searches on single-text sentence embeddings, or reloads as a "
    "SentenceTransformer only"
)
_ROUTER_REFUSAL = "a Router has no single graph (query and document routes differ); per-route export is not supported"
# Tested on BERT; other masked LMs (DistilBERT, RoBERTa) take the same optimum fill-mask export, untested here.
_SPLADE_ARCHS = ("BertForMaskedLM",)
_ROWS: tuple[dict, ...] = (
    {
        "id": "splade-mlmtransformer",
        "family": "SPLADE sparse encoder as sentence-transformers 5.0-5.6 saved it",
        "architectures": list(_SPLADE_ARCHS),
        "chain": [
            "sentence_transformers.sparse_encoder.models.MLMTransformer",
            "sentence_transformers.sparse_encoder.models.SpladePooling",
        ],
        "kind": ModelKind.SPARSE_ENCODER.value,
        "examples": ["naver/splade-v3", "prithivida/Splade_PP_en_v1", "naver/splade_v2_max"],
    },
    {
        "id": "splade-transformer",
        "family": "SPLADE sparse encoder as sentence-transformers 5.7 saves it",
        "architectures": list(_SPLADE_ARCHS),
        "chain": [
            "sentence_transformers.base.modules.transformer.Transformer (transformer_task: fill-mask)",
            "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling",
        ],
        "kind": ModelKind.SPARSE_ENCODER.value,
        "examples": ["any SPLADE model re-saved with sentence-transformers >= 5.4 (e.g. naver/splade-v3 re-saved)"],
    },
    {
        "id": "splade-router",
        "family": "inference-free asymmetric SPLADE (static query weights, MLM document encoder)",
        "architectures": ["DistilBertForMaskedLM"],
        "chain": [
            "sentence_transformers.models.Router (query: SparseStaticEmbedding; "
            "document: MLMTransformer/Transformer fill-mask, SpladePooling)"
        ],
        "kind": ModelKind.SPARSE_ENCODER.value,
        "examples": [
            "opensearch-project/opensearch-neural-sparse-encoding-doc-v3-distill",
            "opensearch-project/opensearch-neural-sparse-encoding-doc-v2-distill",
        ],
    },
    {
        "id": "static-embedding",
        "family": "static token embeddings (model2vec style), no transformer",
        "architectures": [],
        "chain": ["sentence_transformers.models.StaticEmbedding", "[sentence_transformers.models.Normalize]"],
        "kind": ModelKind.SENTENCE_TRANSFORMER.value,
        "examples": ["sentence-transformers/static-retrieval-mrl-en-v1"],
    },
)


def support_rows() -> list[dict]:
    """The support-table rows of the chains this module handles: allowed variants, and refused ones with
    the reason, from the catalogue (``VariantSpec.kinds``) and the chain's own restriction."""
    from exporter.variants import CATALOGUE

    static = ChainShape("static-embedding", STATIC_VARIANTS, STATIC_REFUSAL)
    rows = []
    for row in _ROWS:
        for_kind = [s.id for s in CATALOGUE if row["kind"] in {k.value for k in s.kinds}]
        if row["id"] == "splade-router":
            allowed, reason = [], _ROUTER_REFUSAL
        elif row["id"] == static.id:
            allowed, reason = [v for v in for_kind if v in static.variants], static.refusal
        else:
            allowed, reason = for_kind, ""
        refused = {s.id: (reason if s.id in for_kind else _KIND_REFUSAL) for s in CATALOGUE if s.id not in allowed}
        rows.append({**row, "allowed_variants": allowed, "refused_variants": refused})
    return rows
