"""The support table, as data: which model shapes (architecture family x module chain) export, to which
variants, and which variants are refused for them and why.

One ``Shape`` row per (family, chain) that a test builds as a tiny model and exports + verifies
(``tests/source/test_shapes.py`` declares the ids it exercises in ``EXERCISED_SHAPES``; a meta-test fails on a row
without one). ``exporter list-architectures`` prints it and README.md reproduces it.

A model matches the rows of its kind whose ``model_types`` hold its ``config.json`` ``model_type`` (a row
with no ``model_types``, for models without a transformers config such as ``StaticEmbedding``, matches by
its first module's class instead); the variants refused for it are those its matching rows refuse. The
variants a row allows are every catalogue variant of its kind that it does not refuse (``allowed``), so a new
catalogue entry applies to every row until a row refuses it. The sparse and static chains' rows
(``chain_rows``) list every catalogue variant they refuse, with the reason. ``exporter.source.preflight``
applies the table before anything heavy runs; this module only says what is supported and why not.

Importing this module is cheap (no model libraries).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from exporter.kinds import DEFAULT_KIND
from exporter.source.chain_shapes import chain_rows

ORT_OPTIMIZER_LEVELS = ("onnx-o1", "onnx-o2", "onnx-o3", "onnx-o4")
NO_ORT_FUSION = "ONNX Runtime's optimizer (optimum-onnx ORTOptimizer) has no fusion support for this model type"
FP16_OVERFLOW = "fp16 compute overflows this family's residual stream (NaN on CPU); kept in fp32"
REMOTE_CODE = (
    "remote-code architecture: refused without --trust-remote-code; with it, only remote code whose config "
    "model_type is a family of this table is exported (traced like that family), and this one's is not"
)


@dataclass(frozen=True)
class Shape:
    """One row of the support table.

    ``chain`` is the module chain the row's test model has, as ``modules.json`` lists it (class names;
    a Pooling mode in brackets). ``refused`` maps a variant id to a one-line reason (``"*"``: every
    variant). ``examples`` are real Hub models of this shape.
    """

    id: str
    family: str
    model_types: tuple[str, ...]  # config.json model_type
    architectures: tuple[str, ...]  # transformers classes (config.json architectures)
    chain: tuple[str, ...]
    kind: str = DEFAULT_KIND
    refused: tuple[tuple[str, str], ...] = ()  # (variant id or "*", one-line reason)
    examples: tuple[str, ...] = ()
    remote_code: bool = False
    note: str = ""
    # why the OpenVINO IR is converted (openvino.convert_model) from an ONNX graph (the traced token graph, the
    # one the ONNX export traces; a static model's own graph) instead of optimum-intel's export of the
    # transformer; "" when optimum-intel exports it
    openvino_via_traced_graph: str = ""

    def openvino_route(self) -> str:
        return "from the ONNX graph" if self.openvino_via_traced_graph else "optimum-intel"

    def refusals(self) -> dict[str, str]:
        return dict(self.refused)

    def allowed(self) -> list[str]:
        from exporter.variants import for_kind

        refused = self.refusals()
        return [] if "*" in refused else [v for v in for_kind(self.kind) if v not in refused]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "family": self.family,
            "kind": self.kind,
            "model_types": list(self.model_types),
            "architectures": list(self.architectures),
            "chain": " -> ".join(self.chain),
            "allowed": self.allowed(),
            "refused": self.refusals(),
            "examples": list(self.examples),
            "remote_code": self.remote_code,
            "openvino_route": self.openvino_route(),
            "openvino_via_traced_graph": self.openvino_via_traced_graph,
            "note": self.note,
        }


# The chain a family row covers: every Pooling mode (sentence-transformers concatenates several), left or right
# padding, any number of Dense modules, Normalize or not (tests/source/test_families.py builds one tiny model per family
# with all six modes concatenated and a Dense).
ANY_CHAIN = ("Transformer", "Pooling[any mode]", "Dense*", "[Normalize]")
_DECODER_NOTE = "left or right padding"
# model types ORTOptimizer (optimum.onnxruntime.utils.ORTConfigManager) has no fusion entry for
_NO_ORT_FUSION_TYPES = ("qwen2", "qwen3", "phi3", "gemma2", "gemma3_text")


_T5_DECODER = "optimum-intel exports T5 with its decoder (decoder_input_ids), not the encoder sentence-t5 uses"
_GEMMA3_CAUSAL = "optimum-intel's Gemma3 export builds a causal mask; EmbeddingGemma attends bidirectionally"
_PATCHER_NEEDS_LM = (
    "optimum-intel 1.27's decoder patcher assumes a *ForCausalLM wrapper (MistralModelPatcher.__exit__ reads "
    "model.model) and fails on the base model an embedder loads"
)
_NAN_ROWS = (
    "optimum-intel 1.27's IR of the base decoder gives NaN rows that vary from run to run on the same input "
    "(OpenVINO 2026.4 CPU), with or without padding; the traced graph is deterministic"
)
_GEMMA2_MISMATCH = "optimum-intel 1.27's IR of the base Gemma2 decoder does not match torch (cosine < 0 on probe texts)"


def _no_ort_fusion(model_type: str) -> tuple[tuple[str, str], ...]:
    return tuple((v, f"{NO_ORT_FUSION} ({model_type})") for v in ORT_OPTIMIZER_LEVELS)


SHAPES: tuple[Shape, ...] = (
    Shape(
        id="bert-mean-normalize",
        family="BERT",
        model_types=("bert",),
        architectures=("BertModel",),
        chain=("Transformer", "Pooling[mean]", "Normalize"),
        examples=("sentence-transformers/all-MiniLM-L6-v2", "BAAI/bge-small-en-v1.5", "intfloat/e5-small-v2"),
    ),
    Shape(
        id="bert-cls-dense-normalize",
        family="BERT",
        model_types=("bert",),
        architectures=("BertModel",),
        chain=("Transformer", "Pooling[cls]", "Dense[tanh, bias]", "Normalize"),
        examples=("sentence-transformers/LaBSE",),
        note="Dense weights (2_Dense/model.safetensors) are carried into the artifact",
    ),
    Shape(
        id="mpnet-mean-normalize",
        family="MPNet",
        model_types=("mpnet",),
        architectures=("MPNetModel",),
        chain=("Transformer", "Pooling[mean]", "Normalize"),
        examples=("sentence-transformers/all-mpnet-base-v2",),
    ),
    Shape(
        id="xlm-roberta-mean-normalize",
        family="XLM-RoBERTa",
        model_types=("xlm-roberta",),
        architectures=("XLMRobertaModel",),
        chain=("Transformer", "Pooling[mean]", "Normalize"),
        examples=("intfloat/multilingual-e5-small",),
    ),
    Shape(
        id="modernbert-cls",
        family="ModernBERT",
        model_types=("modernbert",),
        architectures=("ModernBertModel",),
        chain=("Transformer", "Pooling[cls]"),
        examples=("Alibaba-NLP/gte-modernbert-base", "nomic-ai/modernbert-embed-base"),
    ),
    Shape(
        id="t5-encoder-mean-dense-normalize",
        family="T5 encoder",
        model_types=("t5", "mt5", "umt5"),
        architectures=("T5EncoderModel",),
        chain=("Transformer", "Pooling[mean]", "Dense[identity, no bias]", "Normalize"),
        examples=("sentence-transformers/sentence-t5-base", "sentence-transformers/gtr-t5-base"),
        openvino_via_traced_graph=_T5_DECODER,
    ),
    Shape(
        id="qwen3-lasttoken-left-normalize",
        family="Qwen3 (decoder)",
        model_types=("qwen3",),
        architectures=("Qwen3Model",),
        chain=("Transformer", "Pooling[lasttoken]", "Normalize"),
        refused=_no_ort_fusion("qwen3"),
        examples=("Qwen/Qwen3-Embedding-0.6B",),
        note="left padding",
    ),
    Shape(
        id="gemma3-bidirectional-mean-dense-dense-normalize",
        family="Gemma3 text (bidirectional)",
        model_types=("gemma3_text",),
        architectures=("Gemma3TextModel",),
        chain=("Transformer", "Pooling[mean]", "Dense[identity, no bias]", "Dense[identity, no bias]", "Normalize"),
        refused=(*_no_ort_fusion("gemma3_text")[:3], ("onnx-o4", FP16_OVERFLOW)),
        examples=("google/embeddinggemma-300m",),
        note="openvino-fp16 stores fp16 weights and computes in fp32 (checked by the gate)",
        openvino_via_traced_graph=_GEMMA3_CAUSAL,
    ),
    *(
        Shape(
            id=f"{model_type}-any-pooling",
            family=family,
            model_types=(model_type,),
            architectures=(arch,),
            chain=ANY_CHAIN,
            refused=_no_ort_fusion(model_type) if model_type in _NO_ORT_FUSION_TYPES else (),
            examples=examples,
            note=_DECODER_NOTE if traced else "",
            openvino_via_traced_graph=traced,
        )
        for model_type, family, arch, examples, traced in (
            ("roberta", "RoBERTa", "RobertaModel", ("sentence-transformers/all-distilroberta-v1",), ""),
            (
                "distilbert",
                "DistilBERT",
                "DistilBertModel",
                ("sentence-transformers/distiluse-base-multilingual-cased-v2",),
                "",
            ),
            ("electra", "ELECTRA", "ElectraModel", ("google/electra-small-discriminator (mean pooling)",), ""),
            ("deberta-v2", "DeBERTa-v2/v3", "DebertaV2Model", ("microsoft/deberta-v3-small (mean pooling)",), ""),
            ("llama", "Llama (decoder)", "LlamaModel", ("any Llama checkpoint with last-token pooling",), _NAN_ROWS),
            (
                "mistral",
                "Mistral (decoder)",
                "MistralModel",
                ("intfloat/e5-mistral-7b-instruct", "Salesforce/SFR-Embedding-Mistral"),
                _PATCHER_NEEDS_LM,
            ),
            (
                "qwen2",
                "Qwen2 (decoder)",
                "Qwen2Model",
                ("Alibaba-NLP/gte-Qwen2-1.5B-instruct", "dunzhang/stella_en_1.5B_v5"),
                _NAN_ROWS,
            ),
            (
                "phi3",
                "Phi-3 (decoder)",
                "Phi3Model",
                ("microsoft/Phi-3-mini-4k-instruct (last-token pooling)",),
                _PATCHER_NEEDS_LM,
            ),
            ("gemma2", "Gemma2 (decoder)", "Gemma2Model", ("BAAI/bge-multilingual-gemma2",), _GEMMA2_MISMATCH),
        )
    ),
    Shape(
        id="remote-code-nomic-bert",
        family="remote code (nomic-bert, jina)",
        model_types=("nomic_bert",),
        architectures=("NomicBertModel",),
        chain=("Transformer", "Pooling[mean]", "Normalize"),
        refused=(("*", REMOTE_CODE),),
        examples=("nomic-ai/nomic-embed-text-v1.5", "jinaai/jina-embeddings-v3"),
        remote_code=True,
    ),
)


def _short(module_type: str) -> str:
    """``sentence_transformers.models.Router (query: ...)`` -> ``Router (query: ...)``."""
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", module_type)


_STATIC_OV = "no transformer: the exporter's own StaticEmbedding graph (lookup and masked mean)"


def _chain_shapes() -> tuple[Shape, ...]:
    """The sparse and static rows (``chain_rows``) as rows of this table; they match a model by their first
    module (no transformers model_type)."""
    return tuple(
        Shape(
            id=row["id"],
            family=row["family"],
            model_types=(),
            architectures=tuple(row["architectures"]),
            chain=tuple(_short(c) for c in row["chain"]),
            kind=row["kind"],
            refused=tuple(row["refused_variants"].items()),
            examples=tuple(row["examples"]),
            openvino_via_traced_graph=_STATIC_OV
            if row["id"] == "static-embedding"
            else row.get("openvino_via_traced_graph", ""),
        )
        for row in chain_rows()
    )


SHAPES = (*SHAPES, *_chain_shapes())
BY_ID: dict[str, Shape] = {s.id: s for s in SHAPES}

# model_type -> why its OpenVINO IR is converted from the traced sentence-transformers graph (the transformer's
# token output, as the ONNX export traces it) instead of optimum-intel's own export of the transformer: the rows'
# own ``openvino_via_traced_graph``.
OPENVINO_VIA_TRACED_GRAPH: dict[str, str] = {
    mt: s.openvino_via_traced_graph for s in SHAPES if s.openvino_via_traced_graph for mt in s.model_types
}
