"""ONNX Runtime graph optimisation of the base graph: O1, O2, O3 for CPU, and O4 (fp16) on request.

Each level reads the base ``onnx/model.onnx`` from the artifact (never re-exports from torch) and runs
optimum-onnx's ``ORTOptimizer`` with ``AutoOptimizationConfig.with_optimization_level(level)``, exactly
what ``optimum-cli export onnx --optimize O<n>`` and sentence-transformers'
``export_optimized_onnx_model`` do, and names the result as sentence-transformers does:
``onnx/model_O<n>.onnx``.

- O1: ONNX Runtime's basic graph optimisations (constant folding, redundant node removal).
- O2: O1 + extended optimisations + transformer fusions (Attention, SkipLayerNormalization, BiasGelu).
- O3: O2 + GELU approximated by FastGelu (tanh form): a tiny numerical change.
- O4: O3 + fp16 weights and compute. optimum forces ``optimize_for_gpu=True`` for O4; ONNX Runtime's CPU
  provider gains nothing from fp16 (it is no faster than fp32 there, often slower), so O4 is built only
  when asked for by id and its build record says so.

The optimised graphs keep the base graph's inputs and outputs (``last_hidden_state`` and
``sentence_embedding``), so both sentence-transformers and the torch-free runtime serve them.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from pathlib import Path
from typing import Any

from exporter.builders import kit
from exporter.builders.context import BuildContext, BuildResult
from exporter.builders.options import OPTIMIZATION_LEVELS, OptimizeOptions
from exporter.errors import ExportFailed
from exporter.variants import VariantSpec

BASE_FILE = "onnx/model.onnx"
LEVELS = OPTIMIZATION_LEVELS
FP16_ON_CPU_NOTE = (
    "fp16 (O4): ONNX Runtime's CPU provider gains nothing from fp16 (no faster than fp32, often slower); "
    "built only on request, for GPU serving or half-size files."
)
# Ops that show which fusions happened; recorded in the manifest.
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu")


def base_graph(ctx: BuildContext) -> Path:
    """The base fp32 graph in the stage dir; ExportFailed if the ``onnx`` variant was not built first."""
    path = kit.transformer_dir(ctx.stage_dir) / BASE_FILE
    if not path.is_file():
        raise ExportFailed(f"{BASE_FILE} is missing from the artifact.", "Build the `onnx` variant first.")
    return path


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(Counter(n.op_type for n in graph.node).items()))


def derived_from(base: Path) -> dict[str, str]:
    """The manifest's record of the base graph a variant was made from."""
    from exporter.fsutil import sha256_file

    return {"variant": "onnx", "file": BASE_FILE, "sha256": sha256_file(base)}


def optimization_config(level: str):
    """optimum's config for ``level`` (O1..O4), as optimum-cli and sentence-transformers build it."""
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    if level not in LEVELS:
        raise ExportFailed(f"unknown optimisation level {level!r}.", f"Use one of {', '.join(LEVELS)}.")
    return AutoOptimizationConfig.with_optimization_level(level, for_gpu=level == "O4")


def optimize_graph(base: Path, out: Path, level: str, model_config_dir: Path) -> dict[str, Any]:
    """Optimise ``base`` to ``out`` at ``level``; returns the config actually used (for the manifest)."""
    from optimum.onnxruntime import ORTOptimizer
    from transformers import AutoConfig

    config = optimization_config(level)
    # from_ortmodel=True: optimum otherwise deletes the base graph's external data (<base>_data) when it
    # is done, as if the base were a scratch copy.
    optimizer = ORTOptimizer([base], config=AutoConfig.from_pretrained(model_config_dir), from_ortmodel=True)
    with kit.scratch(out.parent) as tmp:
        # ORT's symbolic shape inference prints "failed in shape inference" for the pooling tail; the
        # fusions still apply (checked by the fused-op counts below and by parity).
        noise = io.StringIO()
        with contextlib.redirect_stdout(noise):
            optimizer.optimize(config, tmp, file_suffix=level)
        kit.place(tmp / f"{base.stem}_{level}{base.suffix}", out)
    return {
        "optimization_level": level,
        "ort_optimization_level": config.optimization_level,
        "enable_transformers_specific_optimizations": config.enable_transformers_specific_optimizations,
        "enable_gelu_approximation": config.enable_gelu_approximation,
        "fp16": config.fp16,
        "optimize_for_gpu": config.optimize_for_gpu,
        "disable_shape_inference": config.disable_shape_inference,
    }


def build_optimized(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Variant builder: ``onnx/model_<level>.onnx`` from the base graph (``OptimizeOptions.level``)."""
    from importlib.metadata import version

    level = kit.options_of(spec, OptimizeOptions).level
    base = base_graph(ctx)
    root = kit.transformer_dir(ctx.stage_dir)
    dest = root / spec.file_name
    with kit.backend_errors(f"ONNX Runtime optimisation {level}", "Try a lower level (O1), or report the model."):
        config = optimize_graph(base, dest, level, root)
    counts = op_counts(dest)
    build = {
        "derived_from": derived_from(base),
        "tool": "optimum.onnxruntime.ORTOptimizer + AutoOptimizationConfig (as optimum-cli --optimize)",
        "versions": {"optimum-onnx": version("optimum-onnx"), "onnxruntime": version("onnxruntime")},
        **config,
        "quantization": None,
        "fused_ops": {op: counts[op] for op in FUSED_OPS if counts.get(op)},
        "op_counts": counts,
    }
    if level == "O4":
        build["note"] = FP16_ON_CPU_NOTE
    return BuildResult(files=[dest], build=build)
