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
from importlib import import_module
from pathlib import Path

from exporter.errors import UsageError
from exporter.kinds import ModelKind
from exporter.source import st_modules
from exporter.user_files import MODEL_JSON_MAX_BYTES, read_user_json

K = st_modules.ModuleKind
ST = ModelKind.SENTENCE_TRANSFORMER
ANY = "*"  # a chain step that matches any module


# ------------------------------------------------------------------------------------------------- chains
@dataclass(frozen=True)
class Chain:
    """A module chain pattern: steps of (module class or ``ModuleKind`` value, alternatives split by ``|``;
    ``*`` any) with a count (``1``, ``?``, ``*``, ``+``). ``packages``: the dotted prefixes a module's type must
    start with (a custom module in its own package is not the class it is named after); () any.
    ``bare``: also matches a folder without modules.json (a plain transformers folder)."""

    text: str  # as the table shows it
    steps: tuple[tuple[str, str], ...]
    packages: tuple[str, ...] = ()
    bare: bool = False

    def _fits(self, step: str, entry: st_modules.ModuleEntry) -> bool:
        if self.packages and not entry.type.startswith(self.packages):
            return False
        name = entry.type.rsplit(".", 1)[-1]
        return any(alt in (ANY, name, entry.kind.value) for alt in step.split("|"))

    def consume(self, modules) -> tuple[int, bool]:
        """``(n, complete)``: how many leading modules fit the pattern, and whether all do and no step is missing."""
        i = 0
        for step, count in self.steps:
            seen = 0
            while i < len(modules) and self._fits(step, modules[i]) and (count in "*+" or seen == 0):
                i, seen = i + 1, seen + 1
            if seen == 0 and count in "1+":
                return i, False
        return i, i == len(modules)

    def matches(self, modules) -> bool:
        return self.bare if not modules else self.consume(modules)[1]


DENSE_CHAIN = Chain(
    "Transformer -> Pooling[any mode] -> Dense* -> [Normalize]",
    (("Transformer", "1"), ("Pooling", "1"), ("Dense", "*"), ("Normalize", "?")),
    packages=("sentence_transformers.",),
    bare=True,
)
SPLADE_LEGACY_CHAIN = Chain("MLMTransformer -> SpladePooling", (("MLMTransformer", "1"), ("SpladePooling", "1")))
SPLADE_CHAIN = Chain("Transformer (fill-mask) -> SpladePooling", (("Transformer", "1"), ("SpladePooling", "1")))
COLBERT_CHAIN = Chain("Transformer -> Dense (one or more, PyLate)", (("Transformer", "1"), ("Dense", "+")))
STATIC_CHAIN = Chain("StaticEmbedding -> [Normalize]", (("StaticEmbedding", "1"), ("Normalize", "?")))
ANY_CHAIN = Chain("any (a transformers folder, or Transformer first)", ((ANY, "*"),), bare=True)
ROUTER_CHAIN = Chain("Router (query route, document route)", (("Router", "1"), (ANY, "*")))
WORD_VECTOR_CHAIN = Chain(
    "WordEmbeddings / BoW -> (WordWeights, LSTM, CNN) -> Pooling", (("WordEmbeddings|BoW", "1"), (ANY, "*"))
)
SPARSE_STATIC_CHAIN = Chain("SparseStaticEmbedding (outside a Router)", (("SparseStaticEmbedding", "1"), (ANY, "*")))


# ------------------------------------------------------------------------------------------------ routes
_ONNX = "exporter.builders.export_onnx"
_STATIC = "exporter.builders.export_onnx_static"
_OV = "exporter.builders.export_openvino"
# builder -> how the table names the route
ROUTE_NAMES: dict[str, str] = {
    f"{_ONNX}:build_embedder_graph": "optimum-onnx, the whole sentence-transformers chain",
    f"{_ONNX}:build_task_graph": "optimum-onnx, transformer + head",
    "exporter.builders.export_onnx_sparse:build_sparse_graph": "optimum-onnx fill-mask + SpladePooling",
    "exporter.builders.export_onnx_colbert:build_colbert_graph": "traced PyLate graph (token vectors)",
    "exporter.builders.export_onnx_colbert:build_colbert_openvino": "converted from its ONNX graph",
    f"{_STATIC}:build_static": "own graph (lookup + masked mean)",
    f"{_STATIC}:build_static_openvino": "converted from its ONNX graph",
    f"{_OV}:build_fp32_via_traced_graph": "converted from the traced ONNX graph",
}
OPTIMUM_INTEL = "optimum-intel"


def _resolve(dotted: str):
    module, _, name = dotted.partition(":")
    return getattr(import_module(module), name)


# ------------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    id: str
    family: str
    kind: ModelKind | None  # None: a refusal that holds for every kind
    chain: Chain
    examples: tuple[str, ...]
    model_types: tuple[str, ...] = ()  # config.json model_type; (): any
    architectures: tuple[str, ...] = ()  # transformers classes (for the table)
    onnx_builder: str | None = None  # None: the kind's (KindSpec.onnx_builder)
    openvino_builder: str | None = None  # None: the kind's (KindSpec.openvino_builder, else optimum-intel)
    openvino_why: str = ""  # why the IR is not optimum-intel's export of the transformer
    loader: str | None = None  # "module:function(artifact, backend, file_name, truncate_dim, **kw)": serves its
    # onnx/openvino variants where no sentence-transformers backend loads them
    refused: tuple[tuple[str, str], ...] = ()  # (variant id or "*", one-line reason)
    only: tuple[str, ...] | None = None  # the variants of the kind the chain allows at all
    only_why: str = ""
    check: str | None = None  # "module:function(root)": a further check of the files (UsageError)
    hint: str = "See `exporter list-architectures`."
    remote_code: bool = False
    note: str = ""

    def kind_spec(self):
        from exporter import kinds

        return kinds.get(self.kind)

    def refusals(self) -> dict[str, str]:
        from exporter.variants import for_kind

        out = dict(self.refused)
        if self.only is not None and self.kind is not None:
            out.update({v: self.only_why for v in for_kind(self.kind) if v not in self.only})
        return out

    def allowed(self) -> list[str]:
        from exporter.variants import for_kind

        refused = self.refusals()
        return [] if "*" in refused or self.kind is None else [v for v in for_kind(self.kind) if v not in refused]

    def onnx_build_fn(self):
        return _resolve(self.onnx_builder or self.kind_spec().onnx_builder)

    def openvino_build_fn(self):
        """The fp32 IR builder, or None: optimum-intel's export with the kind's ``openvino_class``."""
        own = self.openvino_builder or self.kind_spec().openvino_builder
        return _resolve(own) if own else None

    def loader_fn(self):
        return _resolve(self.loader) if self.loader else None

    def onnx_route(self) -> str:
        if not self.allowed():
            return "-"
        return ROUTE_NAMES.get(self.onnx_builder or self.kind_spec().onnx_builder, "")

    def openvino_route(self) -> str:
        if not any(v.startswith("openvino") for v in self.allowed()):
            return "-"
        own = self.openvino_builder or self.kind_spec().openvino_builder
        name = ROUTE_NAMES[own] if own else OPTIMUM_INTEL
        return f"{name}: {self.openvino_why}" if self.openvino_why else name

    def to_dict(self) -> dict:
        refused = self.refusals()
        return {
            "id": self.id,
            "family": self.family,
            "kind": self.kind.value if self.kind else "any",
            "model_types": list(self.model_types),
            "architectures": list(self.architectures),
            "chain": self.chain.text,
            "onnx_route": self.onnx_route(),
            "openvino_route": self.openvino_route(),
            "allowed": self.allowed(),
            "refused": refused,
            "examples": list(self.examples),
            "remote_code": self.remote_code,
            "note": self.note,
        }


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
)
BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


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
        _resolve(rule.check)(folder)
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


def _openvino_refusals(specs: list, kind: ModelKind, m: Match) -> dict[str, str]:
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
    refused = {**m.rule.refusals(), **_openvino_refusals(specs, m.rule.kind, m)}
    named = {w.strip().lower() for w in (requested or [])} - {"", *EXPANSIONS}  # ids are case-insensitive
    asked = [s.id for s in specs if s.id in refused and s.id in named]
    if asked:
        reasons = "; ".join(f"{v}: {refused[v]}" for v in asked)
        kept = [s.id for s in specs if s.id not in refused]
        raise UsageError(
            f"variant(s) {', '.join(asked)} refused for {m.label}: {reasons}.",
            f"Leave them out{' (' + ', '.join(kept) + ' can be built)' if kept else ''}; "
            "see `exporter list-architectures`.",
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
