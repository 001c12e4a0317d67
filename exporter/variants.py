"""The catalogue of variants the tool can build, as data.

Each entry says which backend serves it, its precision class (which picks its default gate thresholds), the files
it writes (sentence-transformers' own naming, so ``SentenceTransformer(path, backend=..., model_kwargs={"file_name":
"..."})`` loads it), what it is derived from, the builder function that makes it, and the model kinds it applies to
(``kinds``: embedders only unless an entry says otherwise; ``exporter.kinds`` refuses the rest). Importing this
module is cheap: builders are named by dotted path and imported only when a variant is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from importlib import import_module

from exporter.builders.options import (
    BuildOptions,
    DynamicInt8Options,
    NncfStaticOptions,
    OnnxFidelityOptions,
    OptimizeOptions,
    OvFidelityOptions,
    QuantoOptions,
    StaticQdqOptions,
    WeightCompressionOptions,
)
from exporter.errors import UsageError
from exporter.hostcaps import BF16_UNITS, INT8_UNITS, CpuFlag, Host, this_host
from exporter.kinds import ALL_KINDS, TRANSFORMER_KINDS, ModelKind
from exporter.manifest_types import LoadSpec


class Backend(StrEnum):
    ONNX = "onnx"
    OPENVINO = "openvino"
    TORCH = "torch"


class Precision(StrEnum):
    """Precision class: decides the default gate thresholds."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


# OpenVINO picks bf16 inference by itself on CPUs with AVX512_BF16/AMX, so the same IR would give other
# numbers on other hosts. Pinning f32 makes the verified fidelity hold wherever the variant is served.
OV_F32 = {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}
# The bf16 variant asks for bf16 explicitly, so it is what it says on every host that has the units.
OV_BF16 = {"ov_config": {"INFERENCE_PRECISION_HINT": "bf16"}}


@dataclass(frozen=True)
class BestIf:
    """When a variant is a candidate of ``--variants best`` on a host: it has one of ``when`` (empty: any
    host) and none of ``unless`` (a host with those has a better candidate of the same kind)."""

    when: tuple[CpuFlag, ...] = ()
    unless: tuple[CpuFlag, ...] = ()

    def fits(self, host: Host) -> bool:
        return (not self.when or host.has_any(self.when)) and not host.has_any(self.unless)


@dataclass(frozen=True)
class VariantSpec:
    id: str
    backend: Backend
    precision: Precision
    file_name: str  # the main file, relative to the artifact root, as passed to model_kwargs["file_name"]
    summary: str  # one line: when to use it
    builder: str  # "module:function", called as function(ctx, spec, stage_dir) -> BuildResult
    derives_from: str | None = None  # id of the variant whose output it transforms (None: from torch)
    options: BuildOptions | None = None  # typed build options (exporter.builders.options); None: the builder has none
    on_request_only: bool = False  # excluded from --variants all
    model_kwargs: dict = field(default_factory=dict)  # extra load options recorded in the manifest
    loader: str | None = None  # "module:function" taking the artifact folder, for variants ST cannot load alone
    kinds: tuple[ModelKind, ...] = (ModelKind.SENTENCE_TRANSFORMER,)  # model kinds it applies to
    requires: tuple[CpuFlag, ...] = ()  # the host must have one of these to build or serve it (empty: any)
    best: BestIf | None = None  # a candidate of --variants best (None: never)
    compute: str | None = None  # the number format it computes in, where the precision class does not say it

    @property
    def compute_label(self) -> str:  # what list-variants shows (bf16 is gated in the fp16 class)
        return self.compute or self.precision.value

    def missing_on(self, host: Host) -> str | None:
        """Why this host cannot run it (the flags it lacks), or None when it can."""
        if not self.requires or host.has_any(self.requires):
            return None
        return f"{self.id} needs {' or '.join(self.requires)}, which this CPU ({host.describe()}) lacks"

    def load_kwargs(self) -> LoadSpec:
        """How a user loads it: ``<Class>(path, backend=..., model_kwargs={"file_name": ..., **model_kwargs})``."""
        out: LoadSpec = {"backend": self.backend.value, "file_name": self.file_name}
        if self.model_kwargs:
            out["model_kwargs"] = dict(self.model_kwargs)
        return out

    def build_fn(self):
        return _resolve(self.builder)

    def loader_fn(self):
        return _resolve(self.loader) if self.loader else None


def _resolve(dotted: str):
    module, _, func = dotted.partition(":")
    return getattr(import_module(module), func)


_AVX512_NO_VNNI = BestIf(when=(CpuFlag.AVX512F,), unless=(CpuFlag.AVX512_VNNI,))
_AVX2_ONLY = BestIf(when=(CpuFlag.AVX2,), unless=(CpuFlag.AVX512F, CpuFlag.AVX512_VNNI))
CATALOGUE: tuple[VariantSpec, ...] = (
    VariantSpec(
        id="onnx",
        backend=Backend.ONNX,
        precision=Precision.FP32,
        file_name="onnx/model.onnx",
        summary="fp32 ONNX of the whole model (pooling and normalisation inside); the exact baseline.",
        builder="exporter.builders.export_onnx:build_base",
        kinds=ALL_KINDS,
        best=BestIf(),
    ),
    # ONNX Runtime graph optimisation of the base graph (exporter.builders.export_onnx_optimize).
    *(
        VariantSpec(
            id=f"onnx-{level.lower()}",  # the manifest schema wants lower-case ids
            backend=Backend.ONNX,
            precision=Precision.FP32,
            file_name=f"onnx/model_{level}.onnx",
            summary=summary,
            builder="exporter.builders.export_onnx_optimize:build_optimized",
            derives_from="onnx",
            options=OptimizeOptions(level),
            kinds=TRANSFORMER_KINDS,
        )
        for level, summary in (
            ("O1", "ORT basic graph optimisations (constant folding, node elimination); exact fp32."),
            ("O2", "O1 + transformer fusions (Attention, SkipLayerNorm, BiasGelu); fp32, faster on CPU."),
            ("O3", "O2 + FastGelu approximation; fp32 graph with a tiny GELU change; usually fastest fp32 on CPU."),
        )
    ),
    VariantSpec(
        id="onnx-o4",
        backend=Backend.ONNX,
        precision=Precision.FP16,
        file_name="onnx/model_O4.onnx",
        summary="O3 + fp16, for GPU: ONNX Runtime gains nothing from fp16 on CPU (no faster, often slower); "
        "built only on request.",
        builder="exporter.builders.export_onnx_optimize:build_optimized",
        derives_from="onnx",
        options=OptimizeOptions("O4"),
        on_request_only=True,
        kinds=TRANSFORMER_KINDS,
    ),
    # Int8 ONNX (exporter.builders.export_onnx_quantize): dynamic ISA presets as sentence-transformers names them.
    *(
        VariantSpec(
            id=f"onnx-{dtype}-{isa.replace('_', '-')}",
            backend=Backend.ONNX,
            precision=Precision.INT8,
            file_name=f"onnx/model_{dtype}_{isa}.onnx",
            summary=f"Dynamic int8 preset for {label} (optimum/ST defaults); fast, but ~0.97 min cosine on "
            "all-MiniLM-L6-v2: may fail the 0.99 gate.",
            builder="exporter.builders.export_onnx_quantize:build_dynamic",
            derives_from="onnx",
            options=DynamicInt8Options(isa),
            kinds=TRANSFORMER_KINDS,
            best=best,
            requires=requires,
        )
        # requires: ORT's int8 kernel is the host's; without VNNI s8 weights saturate (measured: docs/benchmarks.md)
        for dtype, isa, label, best, requires in (
            ("qint8", "avx512_vnni", "x86 CPUs with AVX-512 VNNI", BestIf((CpuFlag.AVX512_VNNI,)), INT8_UNITS),
            ("qint8", "avx512", "x86 CPUs with AVX-512 (no VNNI)", _AVX512_NO_VNNI, (CpuFlag.AVX512F,)),
            ("quint8", "avx2", "x86 CPUs with AVX2 (u8 weights)", _AVX2_ONLY, ()),
            ("qint8", "arm64", "ARM64 CPUs", BestIf(when=(CpuFlag.ASIMD,)), (CpuFlag.ASIMD,)),
        )
    ),
    VariantSpec(
        id="onnx-qint8-static",
        backend=Backend.ONNX,
        precision=Precision.INT8,
        file_name="onnx/model_qint8_static.onnx",
        summary="Static int8 (QDQ, weight MatMuls) calibrated on the calibration texts; 0.73 min cosine on "
        "all-MiniLM-L6-v2, far below the int8 gate: not in `all`, built only on request.",
        builder="exporter.builders.export_onnx_quantize:build_static",
        derives_from="onnx",
        options=StaticQdqOptions(),
        on_request_only=True,
    ),
    VariantSpec(
        id="onnx-qint8-fidelity",
        backend=Backend.ONNX,
        precision=Precision.INT8,
        file_name="onnx/model_qint8_fidelity.onnx",
        summary="Dynamic int8 with the most sensitive MatMuls kept in float (measured search on calibration "
        "texts); the int8 to use when fidelity matters.",
        builder="exporter.builders.export_onnx_fidelity:build_fidelity",
        derives_from="onnx",
        options=OnnxFidelityOptions(),
        requires=INT8_UNITS,  # s8 weights, u8 activations: the avx512_vnni preset's kernels (AVX2 alone: 0.984)
    ),
    VariantSpec(
        id="openvino",
        backend=Backend.OPENVINO,
        precision=Precision.FP32,
        file_name="openvino/openvino_model.xml",
        summary="fp32 OpenVINO IR exported from torch; the OpenVINO baseline, fast on Intel CPUs.",
        builder="exporter.builders.export_openvino:build_fp32",
        model_kwargs=OV_F32,
        kinds=ALL_KINDS,
        best=BestIf(),
    ),
    VariantSpec(
        id="openvino-bf16",
        backend=Backend.OPENVINO,
        precision=Precision.FP16,  # gated as the 16-bit float class; the build records bf16
        file_name="openvino/openvino_model.xml",
        summary="The fp32 IR run with INFERENCE_PRECISION_HINT=bf16 (no extra files): near-fp32 fidelity, much "
        "faster on CPUs with AVX512_BF16 or AMX; not applicable elsewhere.",
        builder="exporter.builders.export_openvino:build_bf16",
        model_kwargs=OV_BF16,
        derives_from="openvino",
        compute="bf16",
        requires=BF16_UNITS,
        best=BestIf(),
    ),
    VariantSpec(
        id="openvino-fp16",
        backend=Backend.OPENVINO,
        precision=Precision.FP16,
        file_name="openvino/openvino_model_fp16.xml",
        summary="OpenVINO IR with fp16 weights: half the size; CPUs still compute in fp32, so no speed-up.",
        builder="exporter.builders.export_openvino:build_fp16",
        model_kwargs=OV_F32,
        derives_from="openvino",
        kinds=TRANSFORMER_KINDS,
    ),
    VariantSpec(
        id="openvino-int8-weights",
        backend=Backend.OPENVINO,
        precision=Precision.INT8,
        file_name="openvino/openvino_model_int8_weights.xml",
        summary="OpenVINO IR with NNCF int8 weights (weight-only, no calibration, float activations): ~4x smaller "
        "at fp32 speed; the weight rounding alone costs ~0.002 min cosine on all-MiniLM-L6-v2.",
        builder="exporter.builders.export_openvino_int8:build_int8_weights",
        model_kwargs=OV_F32,
        derives_from="openvino",
        options=WeightCompressionOptions(mode="int8_asym"),
        kinds=TRANSFORMER_KINDS,  # no best candidate: a size variant (its speed: results/ov_dynamic_quant-*)
    ),
    VariantSpec(
        id="openvino-qint8",
        backend=Backend.OPENVINO,
        precision=Precision.INT8,
        file_name="openvino/openvino_model_qint8_quantized.xml",
        summary="OpenVINO IR with NNCF static int8 (calibrated, SmoothQuant): fastest with VNNI/AMX; loses fidelity.",
        builder="exporter.builders.export_openvino_int8:build_qint8",
        model_kwargs=OV_F32,
        derives_from="openvino",
        options=NncfStaticOptions(),
        # the all-int8 speed the fidelity variant is measured against; a candidate only where int8 units make it
        # pay: on an AVX2-only AMD EPYC it ran at 0.98x torch against the fp32 IR's 1.31x (int8_search-212359Z)
        best=BestIf(when=INT8_UNITS),
    ),
    VariantSpec(
        id="openvino-qint8-fidelity",
        backend=Backend.OPENVINO,
        precision=Precision.INT8,
        file_name="openvino/openvino_model_qint8_fidelity.xml",
        summary="OpenVINO static int8 with the fewest weight MatMuls kept out of int8 (measured search on "
        "calibration texts): only their outlier input channels in float where they have some, else the whole op; "
        "where the goal is out of reach it keeps every weight MatMul in float (both real models measured).",
        builder="exporter.builders.export_openvino_fidelity:build_qint8_fidelity",
        model_kwargs=OV_F32,
        derives_from="openvino",
        options=OvFidelityOptions(),
        best=BestIf(when=INT8_UNITS),
    ),
    VariantSpec(
        id="openvino-qint8-fidelity-bf16",
        backend=Backend.OPENVINO,
        precision=Precision.INT8,
        file_name="openvino/openvino_model_qint8_fidelity.xml",
        summary="openvino-qint8-fidelity's IR run with INFERENCE_PRECISION_HINT=bf16: the MatMuls kept out of "
        "int8 (and every other float op) compute in bf16, not fp32; CPUs with AVX512_BF16 or AMX only.",
        builder="exporter.builders.export_openvino:build_bf16",
        model_kwargs=OV_BF16,
        derives_from="openvino-qint8-fidelity",
        compute="int8+bf16",
        requires=BF16_UNITS,
        best=BestIf(),
    ),
    VariantSpec(
        id="quanto-int8",
        backend=Backend.TORCH,
        precision=Precision.INT8,
        file_name="quanto/model.safetensors",
        summary="torch model with optimum-quanto int8 weights (exporter.builders.export_quanto.load_quanto); "
        "smaller Linear weights, near-fp32 fidelity, no CPU speed-up.",
        builder="exporter.builders.export_quanto:build_int8",
        loader="exporter.builders.export_quanto:load_quanto",
        options=QuantoOptions(),
    ),
)

BY_ID: dict[str, VariantSpec] = {spec.id: spec for spec in CATALOGUE}
DEFAULT_VARIANTS = ("onnx",)


EXPANSIONS = ("all", "best")  # words --variants accepts besides ids


def expand(given: list[str], host: Host | None = None, allowed: set[str] | None = None) -> list[str]:
    """Replace ``all`` / ``best`` by the ids they stand for on ``host`` (default: this machine).

    ``all``: every catalogued variant not built on request only; ``best``: the candidates that make sense
    on this CPU (``VariantSpec.best``). Both leave out variants the host cannot run (``requires``) and,
    with ``allowed``, ids outside it (the variants of a model kind). Other words pass through unchanged.
    """
    host = host or this_host()
    pick = {
        "all": lambda s: not s.on_request_only,
        "best": lambda s: s.best is not None and s.best.fits(host),
    }
    out: list[str] = []
    for g in given:
        keep = pick.get(g.lower())
        if keep is None:
            out.append(g)
            continue
        out += [
            s.id for s in CATALOGUE if keep(s) and s.missing_on(host) is None and (allowed is None or s.id in allowed)
        ]
    return out


def select(ids: str | list[str] | None, host: Host | None = None, *, check_host: bool = True) -> list[VariantSpec]:
    """Turn ``--variants`` text ("onnx,onnx-O3", "all" or "best") into specs, bases first, in catalogue order.

    Ids are matched case-insensitively (``onnx-O3`` as sentence-transformers writes the level is ``onnx-o3``).
    Naming a variant this host cannot run (``requires``) is a UsageError saying which flag is missing, unless
    ``check_host`` is False (a recipe or plan checked on one machine and built on another: the build checks).
    """
    host = host or this_host()
    if ids is None:
        given = list(DEFAULT_VARIANTS)
    elif isinstance(ids, str):
        given = [p.strip() for p in ids.split(",") if p.strip()]
    else:
        given = [w.strip() for w in ids]
    if not given:
        raise UsageError("no variants given.", f"Pass --variants with ids from: {', '.join(BY_ID)} (or all, or best).")
    unknown = [g for g in given if g.lower() not in BY_ID and g.lower() not in EXPANSIONS]  # as the user wrote them
    if unknown:
        raise UsageError(
            f"unknown variant id(s): {', '.join(unknown)}.",
            f"Valid ids: {', '.join(BY_ID)} (or all, or best); `exporter list-variants` describes them.",
        )
    missing = [m for g in given if check_host and g.lower() in BY_ID and (m := BY_ID[g.lower()].missing_on(host))]
    if missing:
        raise UsageError(f"{'; '.join(missing)}.", "Build it on a host that has them, or drop it from --variants.")
    chosen = {w.lower() for w in expand(given, host)}
    # A derived variant needs its base built first in the same artifact.
    for w in list(chosen):
        base = BY_ID[w].derives_from
        while base:
            chosen.add(base)
            base = BY_ID[base].derives_from
    return [s for s in CATALOGUE if s.id in chosen]


def for_kind(kind: str | ModelKind) -> list[str]:
    """The ids of the catalogue variants that apply to models of ``kind``, in catalogue order."""
    return [s.id for s in CATALOGUE if ModelKind(kind) in s.kinds]


def select_for_kind(ids: str | list[str] | None, kind: str | ModelKind, *, check_host: bool = True):
    """``select`` for a model kind: ``all`` means all that apply to the kind; naming one that does not
    apply is a UsageError naming the kind and the ids that do."""
    kind = ModelKind(kind)
    allowed = for_kind(kind)
    wanted = ids.split(",") if isinstance(ids, str) else ids
    if wanted is not None:
        wanted = [w.strip() for w in wanted if w.strip()]
        wanted = expand(wanted, allowed=set(allowed))  # all / best: only what applies to the kind
    # the kind first: a variant that never applies to it is refused as such, whatever this host can run
    named = [BY_ID[w.lower()] for w in wanted or [] if w.lower() in BY_ID]
    refused = [s.id for s in named if kind not in s.kinds]
    specs = [] if refused else select(wanted, check_host=check_host)
    refused = refused or [s.id for s in specs if kind not in s.kinds]
    if refused:
        raise UsageError(
            f"variant(s) {', '.join(refused)} do not apply to {kind.value} models.",
            f"Variants for {kind.value}: {', '.join(allowed)}.",
        )
    return specs
