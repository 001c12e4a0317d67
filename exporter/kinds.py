"""The three sentence-transformers model kinds, as data: what differs between embedders, rerankers and
sparse encoders, in one table that the pipeline, the builders, verify and bench look things up in.

For each kind (``KINDS[kind]``, a ``KindSpec``):

- the class that loads it, for the torch reference and for a built variant the way a user does
  (``CrossEncoder(path, backend="onnx", model_kwargs={"file_name": ...})``);
- the probe inputs made from the probe texts: texts for embedders and sparse encoders; for rerankers,
  (query, passage) pairs arranged in reranking lists (``rerank_probe``, deterministic);
- how outputs are produced (``encode`` / ``predict`` scores / dense vocabulary-sized sparse vectors) and
  compared (``exporter.quality.parity``: ``compare`` / ``compare_scores`` / ``compare_sparse``), with the default
  thresholds by precision class (``parity.DEFAULTS_BY_KIND``);
- how its graphs are exported: the base ONNX builder and optimum's task (the ONNX Runtime / OpenVINO
  model classes sentence-transformers loads them with read ``logits`` for both cross-encoders,
  ``ORTModelForSequenceClassification``, and sparse encoders, ``ORTModelForMaskedLM``, which then run
  ``SpladePooling`` in torch), and the OpenVINO model class;
- its model facts for the manifest, and the unit bench counts (texts/s, pairs/s).

Which catalogue variants apply to a kind is the catalogue's ``VariantSpec.kinds``; ``select_variants``
refuses the rest. Importing this module is cheap: model libraries are imported when used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


ALL_KINDS: tuple[ModelKind, ...] = tuple(ModelKind)

RERANK_LIST_SIZE = 10  # candidate passages per query
RERANK_MAX_LISTS = 32  # queries; 32 x 10 = 320 pairs, about the probe set's size
PARITY_BATCH = 32


@dataclass(frozen=True)
class Probe:
    """What the fidelity check feeds a model of one kind, built from the probe texts."""

    texts: list[str]
    pairs: list[tuple[str, str]] | None = None  # cross-encoders: (query, passage)
    lists: list[list[int]] | None = None  # cross-encoders: per query, indices into ``pairs``

    @property
    def inputs(self) -> list:
        """What one model call takes: the pairs for a cross-encoder, else the texts."""
        return self.pairs if self.pairs is not None else self.texts


def text_probe(texts: list[str]) -> Probe:
    return Probe(texts=list(texts))


def rerank_probe(texts: list[str]) -> Probe:
    """Reranking lists from the probe texts, deterministically: up to ``RERANK_MAX_LISTS`` queries spread
    evenly over the texts, each with ``RERANK_LIST_SIZE`` other texts as candidate passages, also spread
    evenly (so every list mixes the probe set's kinds of text: sentences, code, other scripts, long ones).
    """
    n = len(texts)
    if n == 1:
        return Probe(texts=list(texts), pairs=[(texts[0], texts[0])], lists=[[0]])
    m = min(RERANK_LIST_SIZE, n - 1)
    step = max(1, (n - 1) // m)  # 1 + (m - 1) * step < n: the candidates are distinct and not the query
    n_lists = min(RERANK_MAX_LISTS, n)
    qstep = max(1, n // n_lists)
    pairs: list[tuple[str, str]] = []
    lists: list[list[int]] = []
    for q in range(0, qstep * n_lists, qstep):
        lists.append(list(range(len(pairs), len(pairs) + m)))
        pairs.extend((texts[q], texts[(q + 1 + j * step) % n]) for j in range(m))
    return Probe(texts=list(texts), pairs=pairs, lists=lists)


# ------------------------------------------------------------------------------------------ outputs
def _embed(model, inputs: list, batch_size: int):
    import numpy as np

    out = model.encode(inputs, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out)


def _scores(model, inputs: list, batch_size: int):
    import numpy as np

    out = np.asarray(model.predict(inputs, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False))
    return out.reshape(len(inputs), -1)


def _sparse(model, inputs: list, batch_size: int):
    """Dense ``(n, vocab)`` float32 vectors (the sparse encoder's own output, densified)."""
    import numpy as np

    out = model.encode(
        inputs, batch_size=batch_size, convert_to_tensor=True, convert_to_sparse_tensor=False, show_progress_bar=False
    )
    return np.asarray(out.detach().cpu().float().numpy())


# ------------------------------------------------------------------------------------------ compare
def _compare_embeddings(ref, cand, probe: Probe):
    from exporter.quality import parity

    return parity.compare(ref, cand)


def _compare_scores(ref, cand, probe: Probe):
    from exporter.quality import parity

    return parity.compare_scores(ref, cand, probe.lists or [])


def _compare_sparse(ref, cand, probe: Probe):
    from exporter.quality import parity

    return parity.compare_sparse(ref, cand)


# -------------------------------------------------------------------------------------------- facts
def _embedder_facts(model) -> dict:
    pooling = None
    normalize = False
    for module in model:
        name = type(module).__name__
        if name == "Pooling":
            pooling = getattr(module, "pooling_mode", None) or module.get_pooling_mode_str()
            if not isinstance(pooling, str):  # several modes, concatenated: "cls+mean" as st_modules names them
                pooling = "+".join(pooling)
        elif name == "Normalize":
            normalize = True
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return {
        "kind": ModelKind.SENTENCE_TRANSFORMER.value,
        "embedding_dim": dim(),
        "max_seq_length": model.max_seq_length if model.max_seq_length != float("inf") else None,  # static: inf
        "pooling": pooling,
        "normalize": normalize,
        "similarity": getattr(model, "similarity_fn_name", None),
        "truncate_dim": getattr(model, "truncate_dim", None),
    }


def _fullname(obj) -> str | None:
    if obj is None:
        return None
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _cross_encoder_facts(model) -> dict:
    return {
        "kind": ModelKind.CROSS_ENCODER.value,
        "embedding_dim": None,
        "max_seq_length": model.max_length,
        "pooling": None,
        "normalize": False,
        "similarity": None,
        "num_labels": model.num_labels,
        "activation_fn": _fullname(model.activation_fn),
    }


def _sparse_facts(model) -> dict:
    pooling = None
    for module in model:
        if type(module).__name__ == "SpladePooling":
            pooling = f"splade-{module.pooling_strategy}-{module.activation_function}"
    dim = model.get_embedding_dimension()
    return {
        "kind": ModelKind.SPARSE_ENCODER.value,
        "embedding_dim": dim,
        "max_seq_length": model.max_seq_length,
        "pooling": pooling,
        "normalize": False,
        "similarity": getattr(model, "similarity_fn_name", None),
        "vocab_size": dim,
        "max_active_dims": getattr(model, "max_active_dims", None),
    }


def _set_max_seq_length(model, n: int) -> None:
    model.max_seq_length = n


def _set_max_length(model, n: int) -> None:
    model.max_length = n


# -------------------------------------------------------------------------------------------- table
@dataclass(frozen=True)
class KindSpec:
    kind: ModelKind
    label: str  # for messages: "cross-encoder (reranker)"
    model_class: str  # "module:Class" that loads the reference and the variants
    make_probe: Callable[[list[str]], Probe]
    outputs: Callable[[Any, list, int], Any]  # (model, probe.inputs, batch_size) -> np.ndarray
    compare: Callable[[Any, Any, Probe], Any]  # (reference outputs, candidate outputs, probe) -> metrics
    facts: Callable[[Any], dict]  # the manifest's ``model`` object
    set_max_length: Callable[[Any, int], None]
    onnx_builder: str  # "module:function(ctx) -> (files, build info)": the base fp32 graph
    onnx_task: str  # optimum's task for the export
    onnx_outputs: tuple[str, ...]  # the graph outputs sentence-transformers' ONNX backend reads
    openvino_class: str  # optimum-intel class that exports the transformer to OpenVINO IR
    unit: str  # what bench counts per second

    def model_cls(self):
        return _resolve(self.model_class)

    def onnx_build_fn(self):
        return _resolve(self.onnx_builder)

    def openvino_cls(self):
        return _resolve(self.openvino_class)

    def thresholds(self) -> dict:
        """Default thresholds by precision class."""
        from exporter.quality import parity

        return parity.DEFAULTS_BY_KIND[self.kind.value]

    def probe(self, texts: list[str]) -> Probe:
        return self.make_probe(texts)

    def run(self, model, probe: Probe, batch_size: int = PARITY_BATCH):
        return self.outputs(model, probe.inputs, batch_size)


KINDS: dict[ModelKind, KindSpec] = {
    ModelKind.SENTENCE_TRANSFORMER: KindSpec(
        kind=ModelKind.SENTENCE_TRANSFORMER,
        label="sentence-transformer (embedding model)",
        model_class="sentence_transformers:SentenceTransformer",
        make_probe=text_probe,
        outputs=_embed,
        compare=_compare_embeddings,
        facts=_embedder_facts,
        set_max_length=_set_max_seq_length,
        onnx_builder="exporter.builders.export_onnx:build_embedder_graph",
        onnx_task="feature-extraction",
        onnx_outputs=("last_hidden_state", "sentence_embedding"),
        openvino_class="optimum.intel:OVModelForFeatureExtraction",
        unit="texts",
    ),
    ModelKind.CROSS_ENCODER: KindSpec(
        kind=ModelKind.CROSS_ENCODER,
        label="cross-encoder (reranker)",
        model_class="sentence_transformers:CrossEncoder",
        make_probe=rerank_probe,
        outputs=_scores,
        compare=_compare_scores,
        facts=_cross_encoder_facts,
        set_max_length=_set_max_length,
        onnx_builder="exporter.builders.export_onnx:build_task_graph",
        onnx_task="text-classification",
        onnx_outputs=("logits",),
        openvino_class="optimum.intel:OVModelForSequenceClassification",
        unit="pairs",
    ),
    ModelKind.SPARSE_ENCODER: KindSpec(
        kind=ModelKind.SPARSE_ENCODER,
        label="sparse-encoder (SPLADE)",
        model_class="sentence_transformers:SparseEncoder",
        make_probe=text_probe,
        outputs=_sparse,
        compare=_compare_sparse,
        facts=_sparse_facts,
        set_max_length=_set_max_seq_length,
        onnx_builder="exporter.builders.export_onnx_sparse:build_sparse_graph",  # + SpladePooling as an output
        onnx_task="fill-mask",
        onnx_outputs=("logits",),
        openvino_class="optimum.intel:OVModelForMaskedLM",
        unit="texts",
    ),
}


def _resolve(dotted: str):
    module, _, name = dotted.partition(":")
    return getattr(import_module(module), name)


def get(kind: str | ModelKind | None) -> KindSpec:
    """The spec of ``kind`` (None: sentence-transformer); UsageError for an unknown kind."""
    if kind is None:
        return KINDS[ModelKind.SENTENCE_TRANSFORMER]
    try:
        return KINDS[ModelKind(kind)]
    except ValueError:
        raise UsageError(
            f"unknown model kind {kind!r}.", f"Use one of: {', '.join(k.value for k in ALL_KINDS)}."
        ) from None


# ------------------------------------------------------------------------------------ kind of a source
_EXPLICIT_TYPES = {
    "SentenceTransformer": ModelKind.SENTENCE_TRANSFORMER,
    "CrossEncoder": ModelKind.CROSS_ENCODER,
    "SparseEncoder": ModelKind.SPARSE_ENCODER,
}


def _stated(source_dir: Path) -> ModelKind | None:
    """The kind the model's files state (``config_sentence_transformers.json`` model_type), if any."""
    path = Path(source_dir) / "config_sentence_transformers.json"
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    model_type = meta.get("model_type") if isinstance(meta, dict) else None
    return _EXPLICIT_TYPES.get(model_type) if isinstance(model_type, str) else None


def stated_kind(source_dir: Path) -> bool:
    """Whether the model's files state its kind (``config_sentence_transformers.json`` model_type)."""
    return _stated(source_dir) is not None


def kind_of_folder(source_dir: Path, requested: str | None = None) -> ModelKind:
    """The kind of a model folder from its files alone, as ``resolve_kind`` decides it (for plans and dry
    runs, which resolve nothing): the stated kind, else ``requested``, else a legacy cross-encoder layout,
    else sentence-transformer."""
    want = get(requested).kind if requested else None
    return _stated(source_dir) or want or _legacy_kind(source_dir) or ModelKind.SENTENCE_TRANSFORMER


def _legacy_kind(source_dir: Path) -> ModelKind | None:
    """A bare transformers folder (no sentence-transformers module files) of a sequence classifier is a
    cross-encoder: that is how CrossEncoder models saved before sentence-transformers v4 look."""
    root = Path(source_dir)
    if (root / "modules.json").is_file():
        return None
    try:
        arch = (json.loads((root / "config.json").read_text("utf-8")).get("architectures") or [""])[0]
    except (OSError, ValueError, AttributeError):
        return None
    return ModelKind.CROSS_ENCODER if str(arch).endswith("ForSequenceClassification") else None


def resolve_kind(src, requested: str | None) -> ModelKind:
    """The kind to export ``src`` as: the one its files state; else the one asked for (recipe ``kind`` /
    ``--kind``); else a legacy cross-encoder layout; else sentence-transformer.

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


# ----------------------------------------------------------------------------------------- variants
def allowed_variants(kind: str | ModelKind) -> list[str]:
    from exporter.variants import CATALOGUE

    return [s.id for s in CATALOGUE if ModelKind(kind) in s.kinds]


def select_variants(ids: str | list[str] | None, kind: str | ModelKind, *, check_host: bool = True):
    """``variants.select`` for a model kind: ``all`` means all that apply to the kind; naming one that does
    not apply is a UsageError naming the kind and the ids that do."""
    from exporter import variants

    kind = ModelKind(kind)
    allowed = allowed_variants(kind)
    wanted = ids.split(",") if isinstance(ids, str) else ids
    if wanted is not None:
        wanted = [w.strip() for w in wanted if w.strip()]
        wanted = variants.expand(wanted, allowed=set(allowed))  # all / best: only what applies to the kind
    specs = variants.select(wanted, check_host=check_host)
    refused = [s.id for s in specs if kind not in s.kinds]
    if refused:
        raise UsageError(
            f"variant(s) {', '.join(refused)} do not apply to {kind.value} models.",
            f"Variants for {kind.value}: {', '.join(allowed)}.",
        )
    return specs
