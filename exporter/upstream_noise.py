"""Upstream log lines that tell our users nothing, dropped by where they come from and how they start.

A table, one entry per line, each with why it is noise; :func:`quiet` installs a filter on each entry's logger
(once per process; cheap: no upstream package is imported). Only these exact lines go: every other warning of
those loggers still shows.
"""

from __future__ import annotations

import logging
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
)


class _DropLine(logging.Filter):
    def __init__(self, starts_with: str) -> None:
        super().__init__()
        self.starts_with = starts_with

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts_with)


def quiet() -> None:
    """Drop every line in :data:`NOISE` from its logger (idempotent)."""
    for noise in NOISE:
        log = logging.getLogger(noise.logger)
        if not any(isinstance(f, _DropLine) and f.starts_with == noise.starts_with for f in log.filters):
            log.addFilter(_DropLine(noise.starts_with))
