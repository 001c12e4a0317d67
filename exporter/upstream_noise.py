"""Upstream log lines and warnings that tell our users nothing, dropped by where they come from and how
they start.

Two tables, one entry per line, each with why it is noise; :func:`quiet` installs a filter on each entry's
logger and a ``warnings`` filter for each warning (once per process; cheap: no upstream package is imported).
Only these exact lines go: every other warning of those loggers and modules still shows. A third table names
the upstream progress bars drawn on rich's shared console, which :func:`quiet` silences: they go to stdout,
where only results (and ``--json``) belong, and the CLI's own progress line already names the step.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Noise:
    logger: str  # the logger the line is sent to (the upstream module's name)
    starts_with: str
    why: str


NOISE = (
    Noise(
        "optimum.intel.openvino.modeling_base",
        "Could not infer whether the model was already converted",
        "optimum-intel asks the Hub cache for a local artifact's revision, fails, and logs the exception "
        '("expected str, bytes or os.PathLike object, not NoneType"); the load goes on with the recorded file',
    ),
    Noise(
        "optimum.exporters.onnx.base",
        "Weight deduplication check in the ONNX export requires accelerate",
        "the check deduplicates tied weights (an LM head's), which an embedding model's encoder does not have; "
        "the graph is the same without it",
    ),
    Noise(
        "transformers.modeling_utils",
        "`loss_type=None` was set in the config but it is unrecognized",
        "the ONNX export asks every model for its training loss; an embedding model has none, and nothing here trains",
    ),
    Noise(
        "nncf",
        "Statistics of the bitwidth distribution",
        "NNCF's table of how many weights went to int8; the variant's build record in the manifest says the same "
        "(method, mode), and the table is 8 lines of box drawing in the middle of the progress",
    ),
)


@dataclass(frozen=True)
class WarningNoise:
    module: str  # the upstream module that issues the warning (``warnings``' module filter)
    starts_with: str
    why: str


WARNING_NOISE = (
    WarningNoise(
        "transformers.modeling_attn_mask_utils",
        "torch.tensor results are registered as constants in the trace",
        "a TracerWarning on the constant 1.0 of the attention-mask inversion; the constant is the same for every "
        "input, so the trace is correct (the gate compares the traced graph with torch on every probe text)",
    ),
)


@dataclass(frozen=True)
class ProgressNoise:
    drawn_by: str  # the upstream function that draws a bar on rich's shared console (``rich.get_console()``)
    why: str


PROGRESS_NOISE = (
    ProgressNoise(
        "nncf.common.logging.track_progress.track",
        "NNCF's bars (statistics collection, SmoothQuant, bias correction, weight compression) are drawn on stdout; "
        "the CLI's step line on stderr already says which variant is being built, and stdout carries --json",
    ),
)


class _DropLine(logging.Filter):
    def __init__(self, starts_with: str) -> None:
        super().__init__()
        self.starts_with = starts_with

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts_with)


def quiet() -> None:
    """Drop every line in :data:`NOISE` from its logger and every warning in :data:`WARNING_NOISE`
    (idempotent)."""
    for noise in NOISE:
        log = logging.getLogger(noise.logger)
        if not any(isinstance(f, _DropLine) and f.starts_with == noise.starts_with for f in log.filters):
            log.addFilter(_DropLine(noise.starts_with))
    for warning in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=re.escape(warning.starts_with), module=re.escape(warning.module))
    if PROGRESS_NOISE:
        import rich  # already loaded by the CLI; the exporter's own consoles are separate instances

        rich.get_console().quiet = True
