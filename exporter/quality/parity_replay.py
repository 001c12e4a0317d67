"""An explicit cache of one ONNX Runtime session's outputs, keyed by a digest of the exact feeds.

``builders.export_onnx.verify`` runs the fresh graph on its check texts, then checks the torch-free runtime
(``exporter.runtime``) on the same texts: the runtime's bare run gets exactly the graph check's feeds from
the same session. ``Tape().add(feeds, outputs)`` keeps that run; ``ReplayingSession(session, tape)`` wraps
the runtime's session so that a batch whose feeds (names, dtypes, shapes, bytes) equal a taped run's is
served from the tape, and any other batch (another tokenisation, a prompt, an output not taped) runs for
real. Only runs of the same session object go on a tape, so a replayed batch is the number that session
computes from those feeds. The fidelity gate (``exporter.quality.gate``) replays nothing: each serving
path runs its own session on every probe batch.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def feeds_key(feeds: dict[str, Any]) -> bytes:
    """A digest of the feeds: input names, dtypes, shapes and values."""
    digest = hashlib.blake2b(digest_size=20)
    for name in sorted(feeds):
        arr = np.ascontiguousarray(np.asarray(feeds[name]))
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.digest()


class Tape:
    """Outputs of runs already made, by feeds digest (filled explicitly with :meth:`add`)."""

    def __init__(self) -> None:
        self.runs: dict[bytes, dict[str, np.ndarray]] = {}

    def add(self, feeds: dict[str, Any], outputs: dict[str, np.ndarray]) -> Tape:
        """Keep the outputs of one run already made on ``feeds``."""
        self.runs[feeds_key(feeds)] = outputs
        return self


class ReplayingSession:
    """An ``exporter.runtime`` session that serves ``tape``'s batches: runs ``real`` itself made (the same
    session on the same feeds gives the same numbers); every other batch runs for real."""

    def __init__(self, real, tape: Tape) -> None:
        self._real = real
        self._tape = tape
        self.replayed = 0  # batches served from the tape
        self.ran = 0  # batches run for real

    def __getattr__(self, name):  # input_names, output_names, providers, optional_input_names
        return getattr(self._real, name)

    def run(self, output_names, feeds):
        taped = self._tape.runs.get(feeds_key(feeds))
        if taped is not None and all(n in taped for n in output_names):
            self.replayed += 1
            return [taped[n] for n in output_names]
        self.ran += 1
        return self._real.run(output_names, feeds)
