"""Build options of the catalogue's variants, typed: one frozen dataclass per kind of builder.

A catalogue entry (``exporter.variants.VariantSpec.options``) holds one of these; its builder reads the
fields and never parses a dict. The defaults are the measured ones (see each field); the catalogue sets
what differs per entry (an optimisation level, an ISA preset). Cheap to import: no backend here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OPTIMIZATION_LEVELS = ("O1", "O2", "O3", "O4")
ISA_PRESETS = ("avx2", "avx512", "avx512_vnni", "arm64")
# nncf RangeEstimatorParametersSet members, lower-case (NncfStaticOptions.activation_range)
ACTIVATION_RANGES = ("minmax", "mean_minmax", "median_minmax", "mean_no_outliers_minmax", "mean_quantile", "histogram")


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """The options as plain values (``json.dumps`` writes the tuples as lists)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class OptimizeOptions(_Record):
    """``exporter.builders.export_onnx_optimize``: ONNX Runtime graph optimisation at one level."""

    level: str

    def __post_init__(self) -> None:
        if self.level not in OPTIMIZATION_LEVELS:
            raise ValueError(f"unknown optimisation level {self.level!r}; one of {OPTIMIZATION_LEVELS}")


@dataclass(frozen=True)
class DynamicInt8Options(_Record):
    """``exporter.builders.export_onnx_quantize.build_dynamic``: an optimum ISA preset of dynamic int8."""

    preset: str

    def __post_init__(self) -> None:
        if self.preset not in ISA_PRESETS:
            raise ValueError(f"unknown int8 preset {self.preset!r}; one of {ISA_PRESETS}")


@dataclass(frozen=True)
class StaticQdqOptions(_Record):
    """``exporter.builders.export_onnx_quantize.build_static``: ONNX Runtime static int8, QDQ format."""

    op_types: tuple[str, ...] = ("MatMul",)
    per_channel: bool = True
    reduce_range: bool = False
    calibrate_method: str = "MinMax"  # onnxruntime.quantization.CalibrationMethod member
    max_calibration_texts: int = 512


@dataclass(frozen=True)
class SearchOptions(_Record):
    """``exporter.builders.fidelity_search``: the goal and bounds of the search for ops to keep in float."""

    target_cosine_min: float = 0.99  # the int8 gate
    # the floor of the margin: ranking texts must clear target + margin; held-out texts target + max(margin, the
    # gap between ranking and held-out texts measured on the candidate) (fidelity_search.MARGIN_RULE)
    margin: float = 0.003
    # share of the calibration texts held out of the ranking (fidelity_search.holdout_split): a candidate counts
    # only when these texts, which ranking never saw, also clear the goal
    holdout_fraction: float = 0.3
    target_nn10: float = 0.95
    nn10_margin: float = 0.01
    screen_texts: int = 64
    # candidates screened, in graph order: a count, not seconds, so load never changes the variant (a
    # 24-layer BERT has 144 weight MatMuls); the greedy steps are bounded by max_float_fraction
    max_screen: int = 512
    max_float_fraction: float = 0.5  # never keep more than this share of the candidates in float

    @property
    def goal_cosine_min(self) -> float:
        return self.target_cosine_min + self.margin

    @property
    def goal_nn10(self) -> float:
        return self.target_nn10 + self.nn10_margin


@dataclass(frozen=True)
class OnnxFidelityOptions(_Record):
    """``exporter.builders.export_onnx_fidelity``: dynamic int8 of the weight MatMuls, searched.

    Cost: one quantisation, then graph surgery per candidate; on all-MiniLM-L6-v2 (36 weight MatMuls) the
    search took 76-79 s on 2 busy cores (135-189 s when it re-quantised per step); seconds on the tiny model."""

    op_types: tuple[str, ...] = ("MatMul",)  # weight MatMuls; Gather (embedding tables) left float: ~0.01 cosine
    per_channel: bool = True
    reduce_range: bool = False
    search: SearchOptions = field(default_factory=SearchOptions)


@dataclass(frozen=True)
class WeightCompressionOptions(_Record):
    """``exporter.builders.export_openvino_int8.build_int8_weights``: NNCF weight-only compression."""

    mode: str = "int8_asym"  # nncf.CompressWeightsMode value
    # OpenVINO's CPU plugin quantises a weight-compressed MatMul's activations at run time, per token and group
    # of this many input channels (DYNAMIC_QUANTIZATION_GROUP_SIZE; 32 by default in OpenVINO 2026.4; 0: off).
    # Pinned in the IR (export_openvino_int8.pin_runtime_options), so every consumer runs what was gated whatever
    # its OpenVINO's default. Off: measured on AVX-512 VNNI (results/ov_dynamic_quant-*T235945Z, *T001559Z), no
    # group size reaches the int8 search's goal at a useful speed (MiniLM: off and 8 count at 0.34x all-int8, 16 /
    # 32 / 64 do not, at 0.48 / 0.63 / 0.75x; all-mpnet-base-v2: none counts, 0.28-0.67x), and the default 32
    # failed the probe gate on both models. So this is a size variant: int8 weights, float activations.
    dynamic_quantization_group_size: int = 0


@dataclass(frozen=True)
class IgnoredScope(_Record):
    """Ops NNCF leaves in float (``nncf.IgnoredScope``)."""

    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()


@dataclass(frozen=True)
class NncfStaticOptions(_Record):
    """``exporter.builders.export_openvino_int8.build_qint8``: NNCF post-training static int8.

    Measured on all-MiniLM-L6-v2 with ``benchmarks/int8_anchor.py --grid --search`` (AMD EPYC, AVX-512 VNNI,
    2 busy cores), one factor at a time from the options before ``query_tails``; probe-set min cosine / nn@10
    of all-int8, then MatMuls the fidelity search keeps in float and that variant's speed vs all-int8:
    as before 0.972 / 0.938, 4 floated, 0.79x; activation range minmax 0.939, median_minmax 0.943,
    mean_no_outliers 0.953, histogram 0.973 / 0.942 (5 floated, 0.74x); SmoothQuant 0.75: 0.918, 0.95: 0.957,
    off 0.972 / 0.910; full bias correction 0.977 / 0.934 (6 floated, 0.66x); overflow fix off: identical (no
    Convolution); attention (SDPA) inputs in float 0.972 / 0.940; query tails 0.951 / 0.944 but only
    **2 floated** (probe 0.9913 / 0.962, passes; 0.85x all-int8 in one 5-round run at load 3-5). From these
    options (query tails on): activation range histogram 0.947 / 0.942, 2 floated (0.9945 / 0.963, 0.82x),
    mean_no_outliers 2 floated (0.84x), SmoothQuant 0.95: 0.977 / 0.944 but 6 floated (0.63x). No setting
    brings all-int8 itself to the 0.99 gate; NNCF accuracy control did worse (benchmarks/int8_anchor.py).
    These counts are of whole MatMuls floated; with the outlier split (OvFidelityOptions) on top of these
    options the search splits 3 FFN output projections and floats none (probe 0.9913 / 0.959, 0.97-1.02x
    all-int8; benchmarks/fidelity_units.py, best_variant.py)."""

    preset: str = "mixed"  # symmetric weights, asymmetric activations (NNCF's default for transformers)
    model_type: str = "transformer"
    # calibration samples (one text each), the query tails counted: the built-in 475 texts fill all 700 (225 tails)
    subset_size: int = 700
    # also calibrate on each calibration text's last 1-3 words (export_openvino_int8.query_tails): traffic's
    # short queries, which the built-in set (20 of 326 texts) under-represents; the worst probe texts under
    # int8 are 1-3 word queries and non-Latin scripts. Halves the MatMuls the fidelity search floats (4 -> 2)
    query_tails: bool = True
    fast_bias_correction: bool = True  # full bias correction measured worse (see above) and 2x slower
    # SmoothQuant alpha for MatMuls (-1 disables). Measured on all-MiniLM-L6-v2: 0.85 ~ 0.9 > 0.95 (NNCF's
    # default) > 0.8 >> 0.5 in minimum cosine; see benchmarks/openvino_quanto_fidelity.py and above.
    smooth_quant_alpha: float = 0.85
    # how activation ranges are taken from the calibration samples: a RangeEstimatorParametersSet name
    # (NNCF's default for per-tensor activations is "mean_minmax": each sample's min/max, averaged)
    activation_range: str = "mean_minmax"
    overflow_fix: str = "first_layer_only"  # nncf OverflowFix value (7-bit weights of the first Convolutions)
    ignored_scope: IgnoredScope | None = None  # ops kept in float

    def __post_init__(self) -> None:
        if self.activation_range not in ACTIVATION_RANGES:
            raise ValueError(f"unknown activation range {self.activation_range!r}; one of {ACTIVATION_RANGES}")


@dataclass(frozen=True)
class OvFidelityOptions(_Record):
    """``exporter.builders.export_openvino_fidelity``: the static int8 above (no ignored scope: the search
    picks what stays in float), then the search."""

    nncf: NncfStaticOptions = field(default_factory=NncfStaticOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    # A candidate MatMul whose input channels score >= outlier_ratio x its median (max|x|.max|W|) keeps only
    # those channels in float (exporter.builders.outlier_split), not the whole op; <= 0: whole ops only.
    # all-MiniLM-L6-v2: FFN outputs of layers 0-3 score 165x-795x; nothing else above 34x.
    outlier_ratio: float = 64.0
    max_outlier_channels: int = 32
    # which int8 sites the search may keep out of int8 (export_openvino_fidelity.CANDIDATE_KINDS): every weight
    # MatMul kind, so the search looks where a model's error really is (FFN-output outliers on MiniLM; elsewhere
    # on MPNet). The attention scores and embedding tables (exporter.builders.ov_int8_sites) may be named too;
    # they make the goal reachable (every site in float is the fp32 IR), but on MiniLM the search then screened 45
    # candidates (189 s of encoding on 2 AVX2 cores) to stop at its cap anyway (results/int8_search-*T212359Z)
    candidate_kinds: tuple[str, ...] = ("qkv", "attention_output", "ffn_in", "ffn_out")
    # int8 sites kept in float before the search, in every model it scores (ov_int8_sites.SITE_KINDS; then not
    # candidates): a table in float costs no compute, only file size (+35 MB on all-MiniLM-L6-v2). None by default,
    # measured on AVX-512 VNNI: with the tables in float the goal comes in reach on MiniLM (every weight MatMul
    # and the tables in float count: tok_random 0.967, results/int8_sites-*T234511Z), but the search then
    # screened 36 MatMuls (79 s of encoding) and stopped at its cap of 18 short of the goal, and that model failed
    # the probe gate where the out-of-reach default passes; on all-mpnet-base-v2 the tables change nothing
    # (tok_unknown 0.939 with or without them; the attention scores carry its error, results/int8_sites-*T235737Z)
    float_sites: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuantoOptions(_Record):
    """``exporter.builders.export_quanto``: optimum-quanto weight quantisation of the torch model."""

    weights: str = "qint8"
    activations: str | None = None  # float activations: weight-only
    exclude: tuple[str, ...] = ()  # fnmatch patterns of submodule names kept in float


BuildOptions = (
    OptimizeOptions
    | DynamicInt8Options
    | StaticQdqOptions
    | OnnxFidelityOptions
    | WeightCompressionOptions
    | NncfStaticOptions
    | OvFidelityOptions
    | QuantoOptions
)
