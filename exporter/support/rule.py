"""The support registry's two types (``exporter.support``): a ``Chain`` pattern of sentence-transformers modules and
a ``Rule`` (how a model is recognised, its ONNX and OpenVINO routes, its refusals). Cheap to import."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from exporter.kinds import ModelKind
from exporter.source import st_modules

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
M3_CHAIN = Chain(
    "Transformer -> Pooling[cls] -> Normalize (+ FlagEmbedding's sparse_linear.pt and colbert_linear.pt heads)",
    (("Transformer", "1"), ("Pooling", "1"), ("Normalize", "1")),
)
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
    "exporter.builders.export_onnx_m3:build_m3_graph": "traced three-head graph (dense, sparse, ColBERT outputs)",
    "exporter.builders.export_onnx_m3:build_m3_openvino": "converted from its ONNX graph",
    f"{_STATIC}:build_static": "own graph (lookup + masked mean)",
    f"{_STATIC}:build_static_openvino": "converted from its ONNX graph",
    f"{_OV}:build_fp32_via_traced_graph": "converted from the traced ONNX graph",
}
OPTIMUM_INTEL = "optimum-intel"


def resolve(dotted: str):
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
        return resolve(self.onnx_builder or self.kind_spec().onnx_builder)

    def openvino_build_fn(self):
        """The fp32 IR builder, or None: optimum-intel's export with the kind's ``openvino_class``."""
        own = self.openvino_builder or self.kind_spec().openvino_builder
        return resolve(own) if own else None

    def loader_fn(self):
        return resolve(self.loader) if self.loader else None

    def onnx_route(self) -> str:
        if not self.allowed():
            return "-"
        builder = self.onnx_builder or self.kind_spec().onnx_builder
        return ROUTE_NAMES.get(builder, builder)

    def openvino_route(self) -> str:
        if not any(v.startswith("openvino") for v in self.allowed()):
            return "-"
        own = self.openvino_builder or self.kind_spec().openvino_builder
        name = ROUTE_NAMES.get(own, own) if own else OPTIMUM_INTEL
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
