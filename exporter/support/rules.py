"""The support registry's rules (``exporter.support``), as data: one per family x module chain, and the whole-model
refusals. A new family or kind is one entry here."""

from __future__ import annotations

from exporter.kinds import ModelKind
from exporter.support.rule import (
    ANY_CHAIN,
    COLBERT_CHAIN,
    DENSE_CHAIN,
    M3_CHAIN,
    ROUTER_CHAIN,
    SPARSE_STATIC_CHAIN,
    SPLADE_CHAIN,
    SPLADE_LEGACY_CHAIN,
    ST,
    STATIC_CHAIN,
    WORD_VECTOR_CHAIN,
    Rule,
)

_STATIC = "exporter.builders.export_onnx_static"
_OV = "exporter.builders.export_openvino"

ORT_OPTIMIZER_LEVELS = ("onnx-o1", "onnx-o2", "onnx-o3", "onnx-o4")
NO_ORT_FUSION = "ONNX Runtime's optimizer (optimum-onnx ORTOptimizer) has no fusion support for this model type"
FP16_OVERFLOW = "fp16 compute overflows this family's residual stream (NaN on CPU); kept in fp32"
REMOTE_CODE = (
    "remote-code architecture: refused without --trust-remote-code; with it, only remote code whose config "
    "model_type is a family of this table is exported (traced like that family), and this one's is not"
)
_T5_DECODER = "optimum-intel exports T5 with its decoder (decoder_input_ids), not the encoder sentence-t5 uses"
_GEMMA3_MASK = (
    "optimum-intel's Gemma3 export builds a causal mask whatever the config says; EmbeddingGemma attends "
    "bidirectionally, and the traced graph keeps the model's own mask either way"
)
_PATCHER_NEEDS_LM = (
    "optimum-intel 1.27's decoder patcher assumes a *ForCausalLM wrapper (MistralModelPatcher.__exit__ reads "
    "model.model) and fails on the base model an embedder loads"
)
_NAN_ROWS = (
    "optimum-intel 1.27's IR of the base decoder gives NaN rows that vary from run to run on the same input "
    "(OpenVINO 2026.4 CPU), with or without padding; the traced graph is deterministic"
)
_GEMMA2_MISMATCH = "optimum-intel 1.27's IR of the base Gemma2 decoder does not match torch (cosine < 0 on probe texts)"
_QWEN3_AS_QWEN2 = "traced like Qwen2 (same attention path), whose optimum-intel IR gives NaN rows"
_STATIC_REFUSAL = (
    "a StaticEmbedding graph is one embedding lookup and a masked mean: ORT fusions and int8 presets have "
    "nothing to optimise, and sentence-transformers cannot load a static model's graph"
)
STATIC_VARIANTS = ("onnx", "openvino")
_WORD_VECTORS = (
    "a word-vector lookup behind sentence-transformers' own WhitespaceTokenizer (punctuation stripping, stop "
    "words), which neither the graph nor the runtime's tokenizers reproduce; BoW counts, WordWeights, LSTM and "
    "CNN over the same vectors likewise"
)
_ROUTER = (
    "a Router has no single graph: its query route (e.g. a static SparseStaticEmbedding) and its document route "
    "(a SPLADE MLM) differ, and per-route export would need two graphs, two gates and a route-aware runtime, "
    "which are not built"
)
_SPARSE_STATIC = "a token-weight lookup (SparseStaticEmbedding) outside a Router: a tokenizer and one weight per token"


def _traced(why: str) -> dict:
    return {"openvino_builder": f"{_OV}:build_fp32_via_traced_graph", "openvino_why": why}


def _no_ort_fusion(model_type: str) -> tuple[tuple[str, str], ...]:
    return tuple((v, f"{NO_ORT_FUSION} ({model_type})") for v in ORT_OPTIMIZER_LEVELS)


# model_type(s), family, transformers class, examples, refused, OpenVINO route: one dense rule each.
# Every one takes any Pooling mode (several concatenated), any number of Dense modules, Normalize or not, left or
# right padding (tests/test_families.py and tests/test_shapes.py build a tiny model of each).
_FAMILIES: tuple[tuple, ...] = (
    (("bert",), "BERT", "BertModel", ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/LaBSE"), (), {}),
    (("mpnet",), "MPNet", "MPNetModel", ("sentence-transformers/all-mpnet-base-v2",), (), {}),
    (("roberta",), "RoBERTa", "RobertaModel", ("sentence-transformers/all-distilroberta-v1",), (), {}),
    (("xlm-roberta",), "XLM-RoBERTa", "XLMRobertaModel", ("intfloat/multilingual-e5-small",), (), {}),
    (
        ("distilbert",),
        "DistilBERT",
        "DistilBertModel",
        ("sentence-transformers/distiluse-base-multilingual-cased-v2",),
        (),
        {},
    ),
    (("electra",), "ELECTRA", "ElectraModel", ("google/electra-small-discriminator (mean pooling)",), (), {}),
    (("deberta-v2",), "DeBERTa-v2/v3", "DebertaV2Model", ("microsoft/deberta-v3-small (mean pooling)",), (), {}),
    (("modernbert",), "ModernBERT", "ModernBertModel", ("Alibaba-NLP/gte-modernbert-base",), (), {}),
    (
        ("t5", "mt5", "umt5"),
        "T5 encoder",
        "T5EncoderModel",
        ("sentence-transformers/sentence-t5-base", "sentence-transformers/gtr-t5-base"),
        (),
        _traced(_T5_DECODER),
    ),
    (("llama",), "Llama (decoder)", "LlamaModel", ("a Llama base model, last token",), (), _traced(_NAN_ROWS)),
    (
        ("mistral",),
        "Mistral (decoder)",
        "MistralModel",
        ("intfloat/e5-mistral-7b-instruct", "Salesforce/SFR-Embedding-Mistral"),
        (),
        _traced(_PATCHER_NEEDS_LM),
    ),
    (
        ("qwen2",),
        "Qwen2 (decoder)",
        "Qwen2Model",
        ("Alibaba-NLP/gte-Qwen2-1.5B-instruct", "dunzhang/stella_en_1.5B_v5"),
        _no_ort_fusion("qwen2"),
        _traced(_NAN_ROWS),
    ),
    (("qwen3",), "Qwen3 (decoder)", "Qwen3Model", ("Qwen/Qwen3-Embedding-0.6B",), _no_ort_fusion("qwen3"), {}),
    (
        ("phi3",),
        "Phi-3 (decoder)",
        "Phi3Model",
        ("microsoft/Phi-3-mini-4k-instruct (last-token pooling)",),
        _no_ort_fusion("phi3"),
        _traced(_PATCHER_NEEDS_LM),
    ),
    (
        ("gemma2",),
        "Gemma2 (decoder)",
        "Gemma2Model",
        ("BAAI/bge-multilingual-gemma2",),
        _no_ort_fusion("gemma2"),
        _traced(_GEMMA2_MISMATCH),
    ),
    (
        ("gemma3_text",),
        "Gemma3 text (decoder, or bidirectional as EmbeddingGemma)",
        "Gemma3TextModel",
        ("google/embeddinggemma-300m",),
        (*_no_ort_fusion("gemma3_text")[:3], ("onnx-o4", FP16_OVERFLOW)),
        _traced(_GEMMA3_MASK),
    ),
)

_SPLADE_EXAMPLES = ("naver/splade-v3", "prithivida/Splade_PP_en_v1")

RULES: tuple[Rule, ...] = (
    # whole-model refusals (any kind), checked before the tokenizer is looked for
    Rule(
        id="router",
        family="Router: inference-free asymmetric SPLADE (static query weights, MLM document encoder)",
        kind=None,
        chain=ROUTER_CHAIN,
        examples=("opensearch-project/opensearch-neural-sparse-encoding-doc-v3-distill",),
        refused=(("*", _ROUTER),),
        hint="Export the document encoder as its own SPLADE folder (Transformer fill-mask + SpladePooling) and "
        "compute query weights with sentence-transformers.",
    ),
    Rule(
        id="word-vectors",
        family="pre-transformer word-vector models (GloVe averages)",
        kind=None,
        chain=WORD_VECTOR_CHAIN,
        examples=("sentence-transformers/average_word_embeddings_glove.6B.300d",),
        refused=(("*", _WORD_VECTORS),),
        hint="Serve it with sentence-transformers, or use a StaticEmbedding model (model2vec), which exports "
        "(see `exporter list-architectures`).",
    ),
    Rule(
        id="sparse-static-embedding",
        family="SparseStaticEmbedding outside a Router",
        kind=None,
        chain=SPARSE_STATIC_CHAIN,
        examples=("a Router's query route saved on its own",),
        refused=(("*", _SPARSE_STATIC),),
        hint="Compute its vectors with sentence-transformers (it is a tokenizer and one weight per token).",
    ),
    # dense sentence-transformers: one rule per transformers family
    *(
        Rule(
            id=f"{model_types[0]}-any-pooling",
            family=family,
            kind=ST,
            chain=DENSE_CHAIN,
            examples=examples,
            model_types=model_types,
            architectures=(arch,),
            refused=refused,
            **route,
        )
        for model_types, family, arch, examples, refused, route in _FAMILIES
    ),
    Rule(
        id="remote-code-nomic-bert",
        family="remote code (nomic-bert, jina)",
        kind=ST,
        chain=DENSE_CHAIN,
        examples=("nomic-ai/nomic-embed-text-v1.5", "jinaai/jina-embeddings-v3"),
        model_types=("nomic_bert",),
        architectures=("NomicBertModel",),
        refused=(("*", REMOTE_CODE),),
        remote_code=True,
    ),
    Rule(
        id="static-embedding",
        family="static token embeddings (model2vec style), no transformer",
        kind=ST,
        chain=STATIC_CHAIN,
        examples=("sentence-transformers/static-retrieval-mrl-en-v1",),
        onnx_builder=f"{_STATIC}:build_static",
        openvino_builder=f"{_STATIC}:build_static_openvino",
        openvino_why="no transformer: the exporter's own graph",
        loader=f"{_STATIC}:load_variant",
        only=STATIC_VARIANTS,
        only_why=_STATIC_REFUSAL,
    ),
    # sparse encoders
    Rule(
        id="splade-mlmtransformer",
        family="SPLADE sparse encoder as sentence-transformers 5.0-5.6 saved it",
        kind=ModelKind.SPARSE_ENCODER,
        chain=SPLADE_LEGACY_CHAIN,
        examples=_SPLADE_EXAMPLES,
        architectures=("BertForMaskedLM",),
        check="exporter.source.st_modules:read_splade",
    ),
    Rule(
        id="splade-transformer",
        family="SPLADE sparse encoder as sentence-transformers 5.7 saves it",
        kind=ModelKind.SPARSE_ENCODER,
        chain=SPLADE_CHAIN,
        examples=("any SPLADE model re-saved with sentence-transformers >= 5.4",),
        architectures=("BertForMaskedLM",),
        check="exporter.source.st_modules:read_splade",
    ),
    # cross-encoders: any architecture optimum exports for text-classification
    Rule(
        id="cross-encoder",
        family="cross-encoder (reranker), any *ForSequenceClassification optimum exports",
        kind=ModelKind.CROSS_ENCODER,
        chain=ANY_CHAIN,
        examples=("cross-encoder/ms-marco-MiniLM-L6-v2", "BAAI/bge-reranker-base"),
        architectures=("BertForSequenceClassification", "ElectraForSequenceClassification"),
        note="OpenVINO variants are refused up front for a model_type optimum-intel has no exporter for",
    ),
    Rule(
        id="colbert-pylate",
        family="ColBERT late interaction as PyLate saves it (token vectors, no pooling)",
        kind=ModelKind.COLBERT,
        chain=COLBERT_CHAIN,
        examples=("answerdotai/answerai-colbert-small-v1", "lightonai/colbertv2.0"),
        architectures=("BertModel",),
    ),
    Rule(  # the kind is recognised by its head files (KindSpec.marker_files); its routes are the kind's own graph
        id="bge-m3",
        family="bge-m3: XLM-RoBERTa with FlagEmbedding's sparse and ColBERT heads (one graph, three outputs)",
        kind=ModelKind.BGE_M3,
        chain=M3_CHAIN,
        examples=("BAAI/bge-m3",),
        architectures=("XLMRobertaModel",),
        hint="Export it as a sentence-transformer without the sparse_linear.pt / colbert_linear.pt files, or fix "
        "modules.json to FlagEmbedding's Transformer -> Pooling[cls] -> Normalize.",
    ),
)
BY_ID: dict[str, Rule] = {r.id: r for r in RULES}
