"""Int8 ONNX variants of the base graph: dynamic presets per ISA, static QDQ, and a fidelity-searched int8.

Every variant reads the base ``onnx/model.onnx`` from the artifact (never re-exports from torch).

- **Dynamic presets** (``onnx-qint8-avx512-vnni``, ``onnx-qint8-avx512``, ``onnx-quint8-avx2``,
  ``onnx-qint8-arm64``): optimum-onnx's ``ORTQuantizer`` with ``AutoQuantizationConfig.<isa>(is_static=False)``,
  which is what sentence-transformers' ``export_dynamic_quantized_onnx_model`` and ``optimum-cli onnxruntime
  quantize --<isa>`` run, and the same file names (``onnx/model_<weights dtype>_<isa>.onnx``). Weights int8
  per channel (u8 for avx2, s8 elsewhere), activations u8 quantised at run time; MatMul, Attention and
  Gather (the embedding tables) are quantised.
- **Static QDQ** (``onnx-qint8-static``): ``onnxruntime.quantization.quantize_static`` in QDQ format, weights
  s8 per channel, activations u8 with ranges calibrated on the calibration texts (one text per sample,
  so padding never widens a range); MatMuls with a constant weight only (activation-by-activation
  MatMuls inside attention stay float). The calibration set's sha256 and size are recorded.
- **Fidelity int8** (``onnx-qint8-fidelity``): dynamic int8 of the weight MatMuls (per channel, s8
  weights, u8 activations; the embedding Gathers stay float), then a bounded sensitivity search keeps
  the MatMuls whose quantisation hurts most in float until the *calibration* set clears the int8 gate
  with a margin. See ``sensitivity_search``; the probe set is never used for tuning.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from exporter.builders import fidelity_search
from exporter.builders.context import BuildContext, BuildResult
from exporter.builders.export_onnx_optimize import (
    BASE_FILE,
    base_graph,
    op_counts,
    place,
    sha256_file,
    temp_beside,
    transformer_dir,
)
from exporter.builders.fidelity_search import SearchResult
from exporter.environment import package_versions
from exporter.errors import ExportFailed
from exporter.variants import VariantSpec

ISA_PRESETS = ("avx2", "avx512", "avx512_vnni", "arm64")

# The fidelity variant's defaults (spec.options override them). Budget: measured ~2-3 min for
# all-MiniLM-L6-v2 (36 weight MatMuls) on 2 busy cores; a few seconds on the tiny test model.
FIDELITY_DEFAULTS: dict[str, Any] = {
    "op_types": ["MatMul"],  # weight MatMuls; Gather (embedding tables) left float: it costs ~0.01 min cosine
    "per_channel": True,
    "reduce_range": False,
    **fidelity_search.SEARCH_DEFAULTS,  # goal, margins, screen texts, budget, max float share
}

STATIC_DEFAULTS: dict[str, Any] = {
    "op_types": ["MatMul"],
    "per_channel": True,
    "reduce_range": False,
    "calibrate_method": "MinMax",
    "max_calibration_texts": 512,
}


def _versions() -> dict[str, str | None]:
    return package_versions(("onnxruntime", "onnx", "optimum-onnx"))


def _derived(base: Path) -> dict[str, str]:
    return {"variant": "onnx", "file": BASE_FILE, "sha256": sha256_file(base)}


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs a pre-processing hint per call and optimum prints warnings."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def calibration_record(texts: list[str], used: int) -> dict[str, Any]:
    from exporter.quality.probes import texts_sha256

    return {"sha256": texts_sha256(texts), "n": len(texts), "used": used}


# --------------------------------------------------------------------------------------- dynamic presets
def preset_config(preset: str):
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if preset not in ISA_PRESETS:
        raise ExportFailed(f"unknown int8 preset {preset!r}.", f"Use one of {', '.join(ISA_PRESETS)}.")
    return getattr(AutoQuantizationConfig, preset)(is_static=False)


def preset_file_name(preset: str) -> str:
    """sentence-transformers' name: ``onnx/model_<weights dtype>_<isa>.onnx``."""
    return f"onnx/model_{preset_config(preset).weights_dtype.name.lower()}_{preset}.onnx"


def _config_record(cfg) -> dict[str, Any]:
    return {
        "scheme": "static" if cfg.is_static else "dynamic",
        "format": cfg.format.name,
        "mode": cfg.mode.name,
        "weights_dtype": cfg.weights_dtype.name,
        "activations_dtype": cfg.activations_dtype.name,
        "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range,
        "weights_symmetric": cfg.weights_symmetric,
        "activations_symmetric": cfg.activations_symmetric,
        "operators_to_quantize": [getattr(o, "value", o) for o in cfg.operators_to_quantize],
        "nodes_to_exclude": list(cfg.nodes_to_exclude),
        "calibration_method": None,
    }


def build_dynamic(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Variant builder: an ISA preset of dynamic int8 (``spec.options["preset"]``), as sentence-transformers."""
    from optimum.onnxruntime import ORTQuantizer
    from transformers import AutoConfig

    preset = spec.options["preset"]
    cfg = preset_config(preset)
    suffix = f"{cfg.weights_dtype.name.lower()}_{preset}"
    base = base_graph(ctx)
    root = transformer_dir(ctx.stage_dir)
    dest = root / spec.file_name
    if dest.name != f"{base.stem}_{suffix}.onnx":
        raise ExportFailed(f"{spec.id}: file name {spec.file_name} does not match the preset's {suffix}.")
    record = _config_record(cfg)
    try:
        with temp_beside(dest) as tmp, _quiet():
            quantizer = ORTQuantizer(base, config=AutoConfig.from_pretrained(root))
            quantizer.quantize(cfg, tmp, file_suffix=suffix)  # writes tmp/model_<suffix>.onnx (+ ort_config.json)
            produced = tmp / dest.name
            if not produced.is_file():
                raise ExportFailed(f"ORTQuantizer did not write {dest.name}.", "This is a bug in the exporter.")
            place(produced, dest)
    except ExportFailed:
        raise
    except Exception as exc:
        raise ExportFailed(f"dynamic int8 ({preset}) failed: {type(exc).__name__}: {exc}") from exc
    build = {
        "derived_from": _derived(base),
        "tool": f"optimum.onnxruntime.ORTQuantizer + AutoQuantizationConfig.{preset}(is_static=False)",
        "versions": _versions(),
        "optimization_level": None,
        "isa": preset,
        "quantization": record,
        "nodes_in_float": [],
        "calibration": None,
        "op_counts": op_counts(dest),
    }
    return BuildResult(files=[dest], build=build)


# ------------------------------------------------------------------------------------------- static QDQ
def _tokenizer(stage_dir: Path):
    from exporter import runtime
    from exporter.source import st_modules

    return runtime.load_tokenizer(st_modules.read(stage_dir))


class _TextReader:
    """CalibrationDataReader over texts, one text per sample (no padding in the ranges)."""

    def __init__(self, tokenizer, texts: list[str], input_names: list[str]):
        self._feeds = []
        for text in texts:
            enc = tokenizer.encode(text)
            row = {
                "input_ids": np.asarray([enc.ids], dtype=np.int64),
                "attention_mask": np.asarray([enc.attention_mask], dtype=np.int64),
                "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64),
            }
            self._feeds.append({name: row[name] for name in input_names})
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._feeds)


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits]


def build_static(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Variant builder: static int8 in QDQ format, activation ranges calibrated on the calibration texts."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    opts = {**STATIC_DEFAULTS, **spec.options}
    texts = [t for t in ctx.calibration_texts() if t and t.strip()]
    if not texts:
        raise ExportFailed("no calibration texts for static int8.", "Pass --calibration FILE.")
    used = texts[: int(opts["max_calibration_texts"])]
    base = base_graph(ctx)
    dest = transformer_dir(ctx.stage_dir) / spec.file_name
    reader = _TextReader(_tokenizer(ctx.stage_dir), used, _graph_inputs(base))
    extra = {"MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False}
    start = time.perf_counter()
    try:
        with temp_beside(dest) as tmp, _quiet():
            out = tmp / dest.name
            quantize_static(
                str(base),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(opts["op_types"]),
                per_channel=bool(opts["per_channel"]),
                reduce_range=bool(opts["reduce_range"]),
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod[opts["calibrate_method"]],
                extra_options=extra,
            )
            place(out, dest)
    except Exception as exc:
        raise ExportFailed(f"static int8 (QDQ) failed: {type(exc).__name__}: {exc}") from exc
    build = {
        "derived_from": _derived(base),
        "tool": "onnxruntime.quantization.quantize_static",
        "versions": _versions(),
        "optimization_level": None,
        "quantization": {
            "scheme": "static",
            "format": "QDQ",
            "weights_dtype": "QInt8",
            "activations_dtype": "QUInt8",
            "per_channel": bool(opts["per_channel"]),
            "reduce_range": bool(opts["reduce_range"]),
            "weights_symmetric": True,
            "activations_symmetric": False,
            "operators_to_quantize": list(opts["op_types"]),
            "matmul_const_b_only": True,
            "calibration_method": opts["calibrate_method"],
        },
        "nodes_in_float": [
            {
                "nodes": "MatMuls whose both inputs are activations (attention scores, context)",
                "why": "MatMulConstBOnly",
            }
        ],
        "calibration": {
            **calibration_record(texts, len(used)),
            "method": opts["calibrate_method"],
            "samples": "one text per sample, unpadded",
            "seconds": round(time.perf_counter() - start, 1),
        },
        "op_counts": op_counts(dest),
    }
    return BuildResult(files=[dest], build=build)


# ------------------------------------------------------------------------------------------ fidelity int8
def quantizable_nodes(path: Path, op_types: list[str]) -> list[str]:
    """Names of the nodes dynamic quantisation would touch: ``op_types`` with a constant second input."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    names = []
    for node in graph.node:
        if node.op_type not in op_types:
            continue
        if node.op_type == "MatMul" and not (len(node.input) > 1 and node.input[1] in consts):
            continue
        if not node.name:
            raise ExportFailed("the base graph has unnamed nodes; the sensitivity search needs node names.")
        names.append(node.name)
    return names


def quantize_dynamic_to(base: Path, out: Path, opts: dict[str, Any], exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(base),
            str(out),
            op_types_to_quantize=list(opts["op_types"]),
            per_channel=bool(opts["per_channel"]),
            reduce_range=bool(opts["reduce_range"]),
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            extra_options={"MatMulConstBOnly": True},
        )


class _Scorer:
    """Encodes texts through a candidate graph exactly as serving does (ST batching: longest first, 32)."""

    def __init__(self, stage_dir: Path, texts: list[str], reference: np.ndarray):
        from exporter import runtime
        from exporter.source import st_modules

        self.facts = st_modules.read(stage_dir)
        self.tokenizer = runtime.load_tokenizer(self.facts)
        self.texts = texts
        self.reference = reference

    def _encode(self, graph: Path, texts: list[str]) -> np.ndarray:
        import onnxruntime as ort

        from exporter import runtime

        session = runtime._OnnxSession(ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]))
        encoder = runtime.Encoder(session, self.tokenizer, self.facts, "onnx", graph)
        return encoder.encode(texts, batch_size=32, prompt="")

    def cosines(self, graph: Path, idx: np.ndarray | None = None) -> np.ndarray:
        """Cosine to the reference of each text (``idx``: a subset, encoded as its own batches)."""
        idx = np.arange(len(self.texts)) if idx is None else idx
        emb = self._encode(graph, [self.texts[i] for i in idx]).astype(np.float64)
        ref = self.reference[idx].astype(np.float64)
        den = np.maximum(np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
        return (emb * ref).sum(1) / den

    def full(self, graph: Path) -> dict[str, float | None]:
        """The gate's metrics on all texts."""
        from exporter.quality import parity

        m = parity.compare(self.reference, self._encode(graph, self.texts))
        nn = m.neighbour_agreement_at_10
        return {
            "cosine_min": round(m.cosine_min, 6),
            "cosine_mean": round(m.cosine_mean, 6),
            "neighbour_agreement_at_10": None if nn is None else round(nn, 4),
        }


def sensitivity_search(base: Path, work: Path, scorer: _Scorer, opts: dict[str, Any]) -> SearchResult:
    """``exporter.builders.fidelity_search.search`` over the graph's weight MatMuls; each step re-quantises the graph
    with ONNX Runtime (dynamic int8 has no calibration to redo: ~1 s on all-MiniLM-L6-v2)."""
    made: list[Path] = []

    def make(exclude: list[str]) -> Path:
        for old in made:  # the builder re-quantises the final set itself
            old.unlink(missing_ok=True)
        out = work / f"step-{len(made)}.onnx"
        quantize_dynamic_to(base, out, opts, exclude)
        made.append(out)
        return out

    try:
        _, result = fidelity_search.search(
            quantizable_nodes(base, opts["op_types"]), make, scorer.cosines, scorer.full, opts
        )
    finally:
        for old in made:
            old.unlink(missing_ok=True)
    return result


def _calibration_reference(ctx: BuildContext, texts: list[str]) -> np.ndarray:
    """Torch reference embeddings of the calibration texts (computed once per export; cached on disk per
    reference, beside the probe set's, when the pipeline gave the reference's cache key)."""
    from exporter.quality import parity_run, refcache
    from exporter.quality.probes import texts_sha256

    def embed(model, batch: list[str], size: int) -> np.ndarray:
        return np.asarray(
            model.encode(batch, batch_size=size, prompt="", convert_to_numpy=True, show_progress_bar=False)
        )

    def encode():
        return parity_run.outputs_length_sorted(embed, ctx.reference_model(), texts, 32)

    sha = texts_sha256(texts)
    if ctx.options.get("reference_key"):
        key = refcache.key(reference=ctx.options["reference_key"], calibration=sha, prompt="")
        return ctx.memo(f"calibration-reference:{sha}", lambda: refcache.cached(key, encode)[0])
    return ctx.memo(f"calibration-reference:{sha}", encode)


def build_fidelity(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Variant builder: dynamic int8 with the most sensitive MatMuls kept in float (measured, see above)."""
    from exporter.quality.probes import texts_sha256

    opts = {**FIDELITY_DEFAULTS, **spec.options}
    texts = [t for t in ctx.calibration_texts() if t and t.strip()]
    if len(texts) < 2:
        raise ExportFailed("the fidelity int8 search needs at least 2 calibration texts.", "Pass --calibration FILE.")
    base = base_graph(ctx)
    dest = transformer_dir(ctx.stage_dir) / spec.file_name
    reference = _calibration_reference(ctx, texts)
    scorer = _Scorer(ctx.stage_dir, texts, reference)
    key = f"int8-sensitivity:{sha256_file(base)}:{sorted(opts.items())}:{texts_sha256(texts)}"
    try:
        with temp_beside(dest) as work:
            result: SearchResult = ctx.memo(key, lambda: sensitivity_search(base, work, scorer, opts))
            out = work / dest.name
            quantize_dynamic_to(base, out, opts, result.kept_float)
            place(out, dest)
    except ExportFailed:
        raise
    except Exception as exc:
        raise ExportFailed(f"fidelity int8 failed: {type(exc).__name__}: {exc}") from exc
    final = result.steps[-1]
    build = {
        "derived_from": _derived(base),
        "tool": "onnxruntime.quantization.quantize_dynamic + exporter sensitivity search",
        "versions": _versions(),
        "optimization_level": None,
        "quantization": {
            "scheme": "dynamic",
            "format": "QOperator",
            "mode": "IntegerOps",
            "weights_dtype": "QInt8",
            "activations_dtype": "QUInt8",
            "per_channel": bool(opts["per_channel"]),
            "reduce_range": bool(opts["reduce_range"]),
            "weights_symmetric": True,
            "activations_symmetric": False,
            "operators_to_quantize": list(opts["op_types"]),
            "matmul_const_b_only": True,
            "calibration_method": None,
        },
        "nodes_in_float": [
            {
                "node": node,
                "why": "measured sensitivity: keeping it alone in float cut the mean cosine deficit of the "
                f"{result.screen_texts} worst calibration texts by {result.screened[node]['deficit_cut']:.2e} "
                f"(min cosine +{result.screened[node]['min_gain']:.4f}); ranked {rank + 1} of {len(result.screened)}",
                **result.screened[node],
            }
            for rank, node in enumerate(result.kept_float)
        ],
        "not_quantized_op_types": "Gather (embedding tables), MatMuls of two activations: float by design",
        "search": {
            "goal": {
                "cosine_min": round(float(opts["target_cosine_min"]) + float(opts["margin"]), 6),
                "neighbour_agreement_at_10": round(float(opts["target_nn10"]) + float(opts["nn10_margin"]), 6),
                "measured_on": "calibration texts (never the probe set)",
            },
            "candidates": result.candidates,
            "screen_texts": result.screen_texts,
            "budget_seconds": opts["budget_seconds"],
            "max_float_fraction": opts["max_float_fraction"],
            "seconds": round(result.seconds, 1),
            "reached": result.reached,
            "stopped_by": result.stopped_by,
            "steps": result.steps,
            "sensitivity": dict(sorted(result.screened.items(), key=lambda kv: -kv[1]["deficit_cut"])),
            "calibration_result": {k: final[k] for k in ("cosine_min", "cosine_mean", "neighbour_agreement_at_10")},
        },
        "calibration": {**calibration_record(texts, len(texts)), "method": "sensitivity search (reference: torch)"},
        "op_counts": op_counts(dest),
    }
    return BuildResult(files=[dest], build=build)
