"""The sentence-transformers model kinds as one declarative table: everything that differs between
embedders, rerankers and sparse encoders, looked up in ``KINDS[kind]`` (a ``KindSpec``) by the source
resolver, the recipe schema, the pipeline, the builders, verify, bench and every printer.

For each kind the table says:

- how it is detected: files of its own in the model's root (bge-m3's heads), its keys or ``model_type`` in
  ``config_sentence_transformers.json``, or a legacy architecture (a bare ``*ForSequenceClassification``);
- the class that loads it, for the torch reference and for a built variant the way a user does
  (``CrossEncoder(path, backend="onnx", model_kwargs={"file_name": ...})``);
- the probe inputs, the model call and the comparison (``exporter.quality.kind_metrics``), its default
  thresholds by precision class (``exporter.quality.parity_gates``) and the manifest facts
  (``exporter.source.kind_facts``);
- which metrics each printer shows: the export summary, verify's line, REPORT.md's columns, the one
  primary metric of the fleet table and the report's plot, and the per-stratum worst cases;
- how its graphs are exported: the base ONNX builder and optimum's task (the ONNX Runtime / OpenVINO
  model classes sentence-transformers loads them with read ``logits`` for both cross-encoders,
  ``ORTModelForSequenceClassification``, and sparse encoders, ``ORTModelForMaskedLM``, which then run
  ``SpladePooling`` in torch), and the OpenVINO model class;
- the options it takes (prompts, ``truncate_dim``) and what bench counts (texts/s, pairs/s).

Everything outside this module is named by ``"module:attribute"`` strings and imported when used, so
importing the table is cheap and depends on nothing but ``exporter.errors``. Which catalogue variants
apply to a kind is the catalogue's ``VariantSpec.kinds`` (``exporter.variants.for_kind``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from importlib import import_module
from pathlib import Path
from typing import Any

from exporter.errors import UsageError


class ModelKind(StrEnum):
    SENTENCE_TRANSFORMER = "sentence-transformer"
    CROSS_ENCODER = "cross-encoder"
    SPARSE_ENCODER = "sparse-encoder"
    COLBERT = "colbert"
    BGE_M3 = "bge-m3"


ALL_KINDS: tuple[ModelKind, ...] = tuple(ModelKind)
DEFAULT_KIND = ModelKind.SENTENCE_TRANSFORMER  # a model whose files state no kind
PARITY_BATCH = 32
BENCH_BATCH_SIZES = (1, 8, 32)  # bench's default batch sizes; the gate's batch invariance runs each


@dataclass(frozen=True)
class Metric:
    """A fidelity metric as a printer shows it: its key in the manifest's parity entry, a label, a format."""

    key: str
    label: str
    fmt: str = ".6f"

    def format(self, value: Any) -> str:
        return "-" if value is None else f"{value:{self.fmt}}"


def _metrics(*rows: tuple[str, str, str]) -> tuple[Metric, ...]:
    return tuple(Metric(*row) for row in rows)


_COS = _metrics(("cosine_min", "cosine min", ".6f"), ("cosine_mean", "cosine mean", ".6f"))
_NN3 = _metrics(("neighbour_agreement_at_10", "nn@10", ".3f"))
_NN_SP = _metrics(("neighbour_agreement_at_10", "nn@10", ".4f"), ("spearman_pairwise", "spearman", ".4f"))
_BATCH = _metrics(("batch_cosine_min", "batch cos min", ".6f"))  # exporter.quality.batch_invariance
_EMBED_VERIFY = _metrics(("cosine_min", "cosine_min", ".6f"), ("norm_rel_err_max", "norm err", ".2g")) + _NN_SP + _BATCH
_EMBED_REPORT = (
    _metrics(("cosine_min", "cos min", ".6f"), ("cosine_mean", "cos mean", ".6f"), ("cosine_p01", "cos p01", ".6f"))
    + _BATCH
)
_TERMS = _metrics(("top_terms_overlap_at_10", "top terms@10", ".4f"), ("weights_rel_l2_max", "weights err", ".2g"))
_SCORE_SP = _metrics(("score_spearman", "score spearman", ".6f"))
_SCORE_ERR = _metrics(("score_spread_err_max", "score err/spread", ".2g"))
_TOPS = _metrics(("top1_agreement", "top-1", ".4f"), ("top3_agreement", "top-3", ".4f"))
_STRATA_EMBED = _metrics(("cosine_min", "cos min", ".6f"), ("neighbour_agreement_at_10", "nn@10", ".3f"))
_TOKENS = _metrics(("token_cosine_min", "token cos min", ".6f"))
_MAXSIM = _metrics(("maxsim_spearman", "maxsim spearman", ".6f"), ("maxsim_spread_err_max", "maxsim err", ".2g"))
_LEXICAL = _metrics(("lexical_spread_err_max", "lexical err/spread", ".2g"))


@dataclass(frozen=True)
class KindSpec:
    """One model kind. Fields holding ``"module:attribute"`` are imported when used (``_resolve``)."""

    kind: ModelKind
    label: str  # for messages: "cross-encoder (reranker)"
    # detection
    st_type: str  # the model_type config_sentence_transformers.json states
    # loading, measuring, recording
    model_class: str  # "module:Class" that loads the reference and the variants
    probe_fn: str  # "module:function(texts) -> Probe"
    outputs_fn: str  # "module:function(model, probe.inputs, batch_size) -> np.ndarray"
    compare_fn: str  # "module:function(reference outputs, candidate outputs, probe) -> metrics"
    facts_fn: str  # "module:function(model) -> dict": the manifest's ``model`` object, without ``kind``
    default_thresholds: str  # "module:DICT": the thresholds by precision class
    # what the printers show
    summary: tuple[Metric, ...]  # the export summary table and its JSON
    verify: tuple[Metric, ...]  # verify's line per variant
    report: tuple[Metric, ...]  # REPORT.md's fidelity columns
    primary: Metric  # the fleet table and the report's plot; higher is better, at most 1 (loss = 1 - value)
    strata: tuple[Metric, ...]  # each stratum's worst case in every verdict (parity entry ``strata``)
    # building
    onnx_builder: str  # "module:function(ctx, spec) -> BuildResult": the base fp32 graph
    onnx_outputs: tuple[str, ...]  # the graph outputs sentence-transformers' ONNX backend reads
    onnx_task: str = "feature-extraction"  # optimum's task for the export
    openvino_class: str = "optimum.intel:OVModelForFeatureExtraction"  # optimum-intel's export to OpenVINO IR
    legacy_architecture: str | None = None  # a bare transformers folder whose architecture ends so is this kind
    max_length_attr: str = "max_seq_length"  # the model attribute that caps the tokens per input
    # options and bench
    prompts: bool = False  # takes query/passage prompts
    truncate_dim: bool = False  # takes a Matryoshka truncate_dim
    unit: str = "texts"  # what bench counts per second
    # kinds with a graph of their own that no sentence-transformers backend loads (ColBERT, bge-m3)
    config_keys: tuple[str, ...] = ()  # config_sentence_transformers.json keys that state this kind
    # root files that state this kind whatever its config says (bge-m3's heads: state dicts, loaded weights_only)
    marker_files: tuple[str, ...] = ()
    openvino_builder: str | None = None  # "module:function(ctx, spec)": the fp32 IR, instead of optimum-intel
    variant_loader: str | None = None  # "module:function(artifact, variant, kind, threads)", instead of model_class

    def model_cls(self):
        return _resolve(self.model_class)

    def onnx_build_fn(self):
        return _resolve(self.onnx_builder)

    def openvino_cls(self):
        return _resolve(self.openvino_class)

    def openvino_build_fn(self):
        return _resolve(self.openvino_builder) if self.openvino_builder else None

    def variant_loader_fn(self):
        return _resolve(self.variant_loader) if self.variant_loader else None

    def thresholds(self) -> dict:
        """Default thresholds by precision class."""
        return _resolve(self.default_thresholds)

    def probe(self, texts: list[str], strata: list[str] | None = None) -> Any:  # kind_metrics.Probe
        return _resolve(self.probe_fn)(texts, strata)

    def outputs(self, model, inputs: list, batch_size: int = PARITY_BATCH):
        return _resolve(self.outputs_fn)(model, inputs, batch_size)

    def compare(self, reference, candidate, probe: Any):
        return _resolve(self.compare_fn)(reference, candidate, probe)

    def facts(self, model) -> dict:
        return {"kind": self.kind.value, **_resolve(self.facts_fn)(model)}

    def set_max_length(self, model, n: int) -> None:
        setattr(model, self.max_length_attr, n)

    def stratum_cell(self, entry: dict | None) -> str:
        """One stratum's worst case as the printers show it, e.g. ``0.998731 / 0.970``."""
        return " / ".join(m.format((entry or {}).get(m.key)) for m in self.strata) if entry else "-"

    def strata_rows(self, parities: list[dict | None]) -> list[list[str]]:
        """Rows ``[stratum (n), one cell per parity entry]`` over the strata of the given parity entries."""
        names: dict[str, int] = {}
        for p in parities:
            for name, entry in ((p or {}).get("strata") or {}).items():
                names.setdefault(name, entry["n"])
        return [
            [f"{name} ({n})", *(self.stratum_cell(((p or {}).get("strata") or {}).get(name)) for p in parities)]
            for name, n in names.items()
        ]

    def strata_label(self) -> str:
        return " / ".join(m.label for m in self.strata)


_KM = "exporter.quality.kind_metrics"
_FACTS = "exporter.source.kind_facts"
_GATES = "exporter.quality.parity_gates"
_COLBERT = "exporter.builders.export_onnx_colbert"
_M3 = "exporter.builders.export_onnx_m3"

KINDS: dict[ModelKind, KindSpec] = {
    ModelKind.SENTENCE_TRANSFORMER: KindSpec(
        kind=ModelKind.SENTENCE_TRANSFORMER,
        label="sentence-transformer (embedding model)",
        st_type="SentenceTransformer",
        model_class="sentence_transformers:SentenceTransformer",
        probe_fn=f"{_KM}:text_probe",
        outputs_fn=f"{_KM}:embed",
        compare_fn=f"{_KM}:compare_embeddings",
        facts_fn=f"{_FACTS}:embedder_facts",
        default_thresholds=f"{_GATES}:DEFAULT_THRESHOLDS",
        summary=_COS + _NN3,
        verify=_EMBED_VERIFY,
        report=_EMBED_REPORT + _NN_SP,
        primary=_COS[0],
        strata=_STRATA_EMBED,
        onnx_builder="exporter.builders.export_onnx:build_embedder_graph",
        onnx_outputs=("last_hidden_state", "sentence_embedding"),
        prompts=True,
        truncate_dim=True,
    ),
    ModelKind.CROSS_ENCODER: KindSpec(
        kind=ModelKind.CROSS_ENCODER,
        label="cross-encoder (reranker)",
        st_type="CrossEncoder",
        legacy_architecture="ForSequenceClassification",  # CrossEncoder models saved before ST v4
        model_class="sentence_transformers:CrossEncoder",
        max_length_attr="max_length",
        probe_fn=f"{_KM}:rerank_probe",
        outputs_fn=f"{_KM}:scores",
        compare_fn=f"{_KM}:compare_scores",
        facts_fn=f"{_FACTS}:cross_encoder_facts",
        default_thresholds=f"{_GATES}:SCORE_THRESHOLDS",
        summary=_SCORE_SP + _metrics(("top1_agreement", "top-1", ".3f"), ("top3_agreement", "top-3", ".3f")),
        verify=_SCORE_SP + _SCORE_ERR + _TOPS,
        report=_SCORE_SP + _SCORE_ERR + _metrics(("score_max_abs_diff", "max diff", ".2g")) + _TOPS,
        primary=_SCORE_SP[0],
        strata=_SCORE_ERR + _metrics(("score_max_abs_diff", "max diff", ".2g")),
        onnx_builder="exporter.builders.export_onnx:build_task_graph",
        onnx_task="text-classification",
        onnx_outputs=("logits",),
        openvino_class="optimum.intel:OVModelForSequenceClassification",
        unit="pairs",
    ),
    ModelKind.SPARSE_ENCODER: KindSpec(
        kind=ModelKind.SPARSE_ENCODER,
        label="sparse-encoder (SPLADE)",
        st_type="SparseEncoder",
        model_class="sentence_transformers:SparseEncoder",
        probe_fn=f"{_KM}:text_probe",
        outputs_fn=f"{_KM}:sparse",
        compare_fn=f"{_KM}:compare_sparse",
        facts_fn=f"{_FACTS}:sparse_facts",
        default_thresholds=f"{_GATES}:SPARSE_THRESHOLDS",
        summary=_COS + _NN3 + _TERMS[:1],
        verify=_EMBED_VERIFY + _TERMS,
        report=_EMBED_REPORT + _NN_SP + _TERMS,
        primary=_COS[0],
        strata=_STRATA_EMBED,
        onnx_builder="exporter.builders.export_onnx_sparse:build_sparse_graph",  # + SpladePooling as an output
        onnx_task="fill-mask",
        onnx_outputs=("logits",),
        openvino_class="optimum.intel:OVModelForMaskedLM",
    ),
    ModelKind.COLBERT: KindSpec(
        kind=ModelKind.COLBERT,
        label="ColBERT (late interaction, PyLate)",
        st_type="ColBERT",  # no sentence-transformers model_type: PyLate's config keys state it (config_keys)
        model_class=f"{_COLBERT}:load_reference",
        max_length_attr="document_length",
        probe_fn=f"{_KM}:late_interaction_probe",
        outputs_fn=f"{_KM}:token_vectors",
        compare_fn=f"{_KM}:compare_late_interaction",
        facts_fn=f"{_FACTS}:colbert_facts",
        default_thresholds=f"{_GATES}:LATE_INTERACTION_THRESHOLDS",
        summary=_TOKENS + _MAXSIM[:1] + _TOPS[:1],
        verify=_TOKENS + _MAXSIM + _TOPS,
        report=_TOKENS + _metrics(("token_cosine_mean", "token cos mean", ".6f")) + _MAXSIM + _TOPS,
        primary=_TOKENS[0],
        strata=_TOKENS,
        onnx_builder=f"{_COLBERT}:build_colbert_graph",
        onnx_outputs=("token_embeddings", "attention_mask_out"),
        prompts=False,  # PyLate's [Q]/[D] prefixes are the model's own, applied by the runtime
        config_keys=("query_prefix", "document_prefix", "query_length", "document_length"),
        openvino_builder=f"{_COLBERT}:build_colbert_openvino",
        variant_loader=f"{_COLBERT}:load_variant",
    ),
    ModelKind.BGE_M3: KindSpec(
        kind=ModelKind.BGE_M3,
        label="bge-m3 (dense + sparse + ColBERT heads, FlagEmbedding)",
        st_type="BGE-M3",  # no sentence-transformers model_type: FlagEmbedding's head files state it (marker_files)
        model_class=f"{_M3}:load_reference",
        probe_fn=f"{_KM}:m3_probe",
        outputs_fn=f"{_KM}:m3_outputs",
        compare_fn=f"{_KM}:compare_m3",
        facts_fn=f"{_FACTS}:m3_facts",
        default_thresholds=f"{_GATES}:M3_THRESHOLDS",
        summary=_COS[:1] + _NN3 + _TERMS[:1] + _TOKENS + _MAXSIM[:1],
        verify=_COS[:1] + _NN3 + _TERMS[:1] + _LEXICAL + _TOKENS + _MAXSIM + _TOPS,
        report=_COS + _NN3 + _TERMS[:1] + _LEXICAL + _TOKENS + _MAXSIM + _TOPS,
        primary=_COS[0],
        strata=_COS[:1] + _TOKENS,
        onnx_builder=f"{_M3}:build_m3_graph",
        onnx_outputs=("dense_vecs", "sparse_weights", "colbert_vecs"),
        marker_files=("sparse_linear.pt", "colbert_linear.pt"),
        openvino_builder=f"{_M3}:build_m3_openvino",
        variant_loader=f"{_M3}:load_variant",
    ),
}
# The kinds whose graph optimum exports (the optimisers and quantisers take it); one with its own graph: fp32 only
TRANSFORMER_KINDS: tuple[ModelKind, ...] = tuple(k for k, s in KINDS.items() if s.openvino_builder is None)


def _resolve(dotted: str):
    module, _, name = dotted.partition(":")
    return getattr(import_module(module), name)


def get(kind: str | ModelKind | None) -> KindSpec:
    """The spec of ``kind`` (None: sentence-transformer); UsageError for an unknown kind."""
    if kind is None:
        return KINDS[DEFAULT_KIND]
    try:
        return KINDS[ModelKind(kind)]
    except ValueError:
        raise UsageError(
            f"unknown model kind {kind!r}.", f"Use one of: {', '.join(k.value for k in ALL_KINDS)}."
        ) from None


def of_manifest(manifest: dict) -> KindSpec:
    """The spec of the kind a manifest records (``model.kind``; sentence-transformer if absent)."""
    return get((manifest.get("model") or {}).get("kind"))


# ------------------------------------------------------------------------------------ kind of a source
def from_model_type(model_type: object) -> ModelKind | None:
    """The kind a ``config_sentence_transformers.json`` ``model_type`` names ("CrossEncoder"), if any."""
    return next((spec.kind for spec in KINDS.values() if spec.st_type == model_type), None)


def from_files(names) -> ModelKind | None:
    """The kind whose ``marker_files`` are all among ``names`` (file names in the model's root), if any."""
    return next((s.kind for s in KINDS.values() if s.marker_files and set(s.marker_files) <= set(names)), None)


def from_st_config(meta: object) -> ModelKind | None:
    """The kind a parsed ``config_sentence_transformers.json`` states: by a kind's own keys (PyLate's
    ColBERT settings; its ``model_type``, if any, is sentence-transformers'), else by ``model_type``."""
    if not isinstance(meta, dict):
        return None
    by_keys = (s.kind for s in KINDS.values() if s.config_keys and all(k in meta for k in s.config_keys))
    return next(by_keys, None) or from_model_type(meta.get("model_type"))


def _stated(source_dir: Path) -> ModelKind | None:
    """The kind the model's files state: a kind's marker files in its root, else
    ``config_sentence_transformers.json`` (a kind's own keys, or its model_type), if any."""
    from exporter.user_files import MODEL_JSON_MAX_BYTES, read_user_json

    path = Path(source_dir) / "config_sentence_transformers.json"
    try:
        meta = read_user_json(path, what="model file", max_bytes=MODEL_JSON_MAX_BYTES)
    except UsageError:
        meta = None
    marked = [f for s in KINDS.values() for f in s.marker_files if (Path(source_dir) / f).is_file()]
    return from_files(marked) or from_st_config(meta)


def stated_kind(source_dir: Path) -> bool:
    """Whether the model's files state its kind (marker files, or ``config_sentence_transformers.json``)."""
    return _stated(source_dir) is not None


def kind_of_folder(source_dir: Path, requested: str | None = None) -> ModelKind:
    """The kind of a model folder from its files alone, as ``resolve_kind`` decides it (for plans and dry
    runs, which resolve nothing): the stated kind, else ``requested``, else a legacy layout, else the default."""
    want = get(requested).kind if requested else None
    return _stated(source_dir) or want or _legacy_kind(source_dir) or DEFAULT_KIND


def _legacy_kind(source_dir: Path) -> ModelKind | None:
    """The kind of a bare transformers folder (no sentence-transformers module files) by its architecture:
    a sequence classifier is a cross-encoder, as CrossEncoder models saved before sentence-transformers v4."""
    root = Path(source_dir)
    if (root / "modules.json").is_file():
        return None
    from exporter.user_files import MODEL_JSON_MAX_BYTES, read_user_json

    try:
        config = read_user_json(root / "config.json", what="model file", max_bytes=MODEL_JSON_MAX_BYTES)
        arch = (config.get("architectures") or [""])[0]
    except (UsageError, AttributeError, TypeError, IndexError):
        return None
    legacy = (s.kind for s in KINDS.values() if s.legacy_architecture and str(arch).endswith(s.legacy_architecture))
    return next(legacy, None)


def resolve_kind(src, requested: str | None) -> ModelKind:
    """The kind to export ``src`` as: the one its files state; else the one asked for (recipe ``kind`` /
    ``--kind``); else a legacy layout's; else sentence-transformer.

    Raises:
        UsageError: the files state a kind and another one was asked for, or an unknown kind.
    """
    want = get(requested).kind if requested else None
    if stated_kind(src.path):
        if want and src.kind != want:
            raise UsageError(
                f"{src} is a {src.kind} model, not a {want}.",
                "Fix `kind` in the recipe (or --kind), or remove it to detect it.",
            )
        return ModelKind(src.kind)
    return want or _legacy_kind(src.path) or ModelKind(src.kind)
