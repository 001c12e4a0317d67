"""The sparse and static chains' rows of the support table (SPLADE, inference-free SPLADE behind a Router,
StaticEmbedding), matched by their first module rather than a transformers model_type, and which catalogue
variants each refuses and why."""

from __future__ import annotations

from exporter.kinds import ModelKind

# StaticEmbedding graphs are one Gather and a masked mean: ONNX Runtime's transformer fusions (O1-O4) and
# the int8 presets (built for MatMul-heavy transformers, calibrated through optimum's model classes)
# have nothing to work on; OpenVINO reads the same graph.
STATIC_VARIANTS = ("onnx", "openvino")


STATIC_REFUSAL = (
    "a StaticEmbedding graph is one embedding lookup and a masked mean: ORT fusions and int8 presets have "
    "nothing to optimise, and sentence-transformers cannot load a static model's graph"
)


# ------------------------------------------------------------------ sparse and static chain rows
_KIND_REFUSAL = (
    "not for sparse encoders: it calibrates or searches on single-text sentence embeddings, or reloads as a "
    "SentenceTransformer only"
)


_ROUTER_REFUSAL = "a Router has no single graph (query and document routes differ); per-route export is not supported"


# Tested on BERT; other masked LMs (DistilBERT, RoBERTa) take the same optimum fill-mask export, untested here.
_SPLADE_ARCHS = ("BertForMaskedLM",)


_CHAIN_ROWS: tuple[dict, ...] = (
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
        "id": "colbert-pylate",
        "family": "ColBERT late interaction as PyLate saves it (token vectors, no pooling)",
        "architectures": ["BertModel"],  # tested on BERT; other encoders trace the same way, untested here
        "chain": ["sentence_transformers.models.Transformer", "pylate.models.Dense.Dense (one or more)"],
        "kind": ModelKind.COLBERT.value,
        "examples": ["answerdotai/answerai-colbert-small-v1", "lightonai/colbertv2.0"],
        "kind_refusal": "not for ColBERT yet: its graph is its own (per-token vectors); the optimisers, "
        "quantisers and fp16 conversions are not gated on it",
    },
    {
        "id": "bge-m3",
        "family": "bge-m3: XLM-RoBERTa with FlagEmbedding's sparse and ColBERT heads (one graph, three outputs)",
        "architectures": ["XLMRobertaModel"],
        "chain": [
            "sentence_transformers.models.Transformer",
            "sentence_transformers.models.Pooling[cls]",
            "sentence_transformers.models.Normalize (+ FlagEmbedding's sparse_linear and colbert_linear heads)",
        ],
        "kind": ModelKind.BGE_M3.value,
        "examples": ["BAAI/bge-m3"],
        "kind_refusal": "not for bge-m3 yet: its graph is its own (dense, token weights, token vectors); the "
        "optimisers, quantisers and fp16 conversions are not gated on it",
        "openvino_via_traced_graph": "the traced three-output graph (the heads are not a transformers model)",
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


# Kinds recognised by their files (``exporter.kinds.KindSpec.marker_files``) whose module chain is fixed: kind ->
# (support-table row, the chain's module kinds as exporter.source.st_modules names them, what to do otherwise).
# ``exporter.source.preflight.classify`` applies it; a chain that differs is refused in one line.
KIND_CHAINS: dict[str, tuple[str, tuple[str, ...], str]] = {  # ModelKind keys: looked up by the kind's value
    ModelKind.BGE_M3: (
        "bge-m3",
        ("Transformer", "Pooling", "Normalize"),
        "Export it as a sentence-transformer without the sparse_linear.pt / colbert_linear.pt files, or fix "
        "modules.json to FlagEmbedding's Transformer -> Pooling[cls] -> Normalize.",
    ),
}


def chain_rows() -> list[dict]:
    """The support-table rows of the sparse and static chains (``exporter.source.preflight.classify`` tells
    them apart): allowed variants, and refused ones with the reason, from the catalogue (``VariantSpec.kinds``)
    and the chain's own restriction."""
    from exporter.variants import CATALOGUE

    rows = []
    for row in _CHAIN_ROWS:
        for_kind = [s.id for s in CATALOGUE if row["kind"] in {k.value for k in s.kinds}]
        if row["id"] == "splade-router":
            allowed, reason = [], _ROUTER_REFUSAL
        elif row["id"] == "static-embedding":
            allowed, reason = [v for v in for_kind if v in STATIC_VARIANTS], STATIC_REFUSAL
        else:
            allowed, reason = for_kind, ""
        other_kind = row.get("kind_refusal", _KIND_REFUSAL)
        refused = {s.id: (reason if s.id in for_kind else other_kind) for s in CATALOGUE if s.id not in allowed}
        rows.append(
            {
                **{k: v for k, v in row.items() if k != "kind_refusal"},
                "allowed_variants": allowed,
                "refused_variants": refused,
            }
        )
    return rows
