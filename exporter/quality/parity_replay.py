"""One ONNX Runtime pass per probe batch for both serving paths of a variant.

The sentence-transformers path (``SentenceTransformer(backend="onnx")``, optimum's ``ORTModel``) calls
``session.run(None, feeds)``: ONNX Runtime computes every graph output, ``sentence_embedding`` included,
and sentence-transformers keeps only ``last_hidden_state``. The runtime path (``exporter.runtime``) then ran
the same graph again on the same batches (``parity_run.encode_in_st_batches`` feeds it the batches
sentence-transformers forms) to read ``sentence_embedding``: the probe set went through the graph twice.

``record(model)`` keeps, per batch the sentence-transformers path ran, the outputs the runtime reads, keyed
by a digest of the exact feeds (names, dtypes, shapes, bytes). ``replaying(session, tape)`` wraps the
runtime's own session: a batch whose feeds the runtime tokeniser made identical to sentence-transformers'
is served from the tape; any other batch (another tokenisation, a ``prompt_length`` feed, an output not
recorded) runs for real. The runtime's session is opened as always, and its first taped batch runs for real
too and must equal the tape bit for bit (both sessions run the same file on the same feeds), else the tape
is dropped and every batch runs for real: a replayed batch holds the numbers the runtime's own session
computes from those feeds (checked on one batch), so reuse cannot change a verdict. What the runtime path gates is
unchanged: its tokeniser (through the feeds), its output choice and its session on one batch. The replay is
scoped to one variant's check (``exporter.quality.gate`` records during the sentence-transformers path's run
only) and recorded (``serving_paths.runtime.graph_runs``: batches run and replayed).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

RECORDED_OUTPUTS = frozenset({"sentence_embedding", "sparse_embedding"})  # what the runtime reads, pooled in graph


def feeds_key(feeds: dict[str, Any]) -> bytes:
    """A digest of the feeds: input names, dtypes, shapes and values."""
    digest = hashlib.blake2b(digest_size=20)
    for name in sorted(feeds):
        arr = np.ascontiguousarray(np.asarray(feeds[name]))
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.digest()


class Tape:
    """The recorded outputs of one ONNX Runtime session, by feeds; ``close`` stops recording. Without a
    session, an empty tape that :meth:`add` fills with runs already made."""

    def __init__(self, session=None) -> None:
        self.runs: dict[bytes, dict[str, np.ndarray]] = {}
        self._session = session
        self.session = session  # the ONNX Runtime session recorded (None: a tape filled by ``add``)
        if session is not None:
            self._real_run = session.run
            self._names = [o.name for o in session.get_outputs()]
            session.run = self._run  # an instance attribute: only this session object records

    def add(self, feeds: dict[str, Any], outputs: dict[str, np.ndarray]) -> Tape:
        """Keep the outputs of one run already made on ``feeds``."""
        self.runs[feeds_key(feeds)] = outputs
        return self

    def _run(self, output_names, input_feed, run_options=None):
        result = self._real_run(output_names, input_feed, run_options)
        names = output_names or self._names
        kept = {n: np.array(r, copy=True) for n, r in zip(names, result, strict=False) if n in RECORDED_OUTPUTS}
        if kept:
            self.runs[feeds_key(input_feed)] = kept
        return result

    def close(self) -> None:
        if self._session is not None and self._session.__dict__.get("run") == self._run:
            del self._session.run


def onnx_session(model):
    """The ONNX Runtime session inside a sentence-transformers model loaded with ``backend="onnx"``, or None."""
    try:
        first = model[0]
    except (TypeError, IndexError, KeyError):
        return None
    inner = getattr(first, "model", None) or getattr(first, "auto_model", None)
    session = getattr(inner, "session", None)
    if session is None or getattr(inner, "use_io_binding", False):  # io binding never calls session.run
        return None
    return session if callable(getattr(session, "get_outputs", None)) else None


def record(model) -> Tape | None:
    """Start recording the sentence-transformers path's session outputs; None when it has no ONNX session."""
    session = onnx_session(model)
    return Tape(session) if session is not None else None


class ReplayingSession:
    """An ``exporter.runtime`` session that serves taped batches (see the module doc). ``same_session``: the
    tape holds runs of ``real`` itself (the same session on the same feeds gives the same numbers), so no
    batch is re-run to check it."""

    def __init__(self, real, tape: Tape, *, same_session: bool = False) -> None:
        self._real = real
        self._tape: Tape | None = tape
        self._checked = same_session
        self.replayed = 0  # batches served from the tape
        self.ran = 0  # batches run for real

    def __getattr__(self, name):  # input_names, output_names, providers, optional_input_names
        return getattr(self._real, name)

    def run(self, output_names, feeds):
        taped = self._tape.runs.get(feeds_key(feeds)) if self._tape is not None else None
        if taped is not None and all(n in taped for n in output_names):
            if self._checked:
                self.replayed += 1
                return [taped[n] for n in output_names]
            out = self._real.run(output_names, feeds)
            self.ran += 1
            self._checked = True
            pairs = zip(out, output_names, strict=True)
            if not all(np.array_equal(o, taped[n]) for o, n in pairs):
                self._tape = None  # the sessions disagree: trust only real runs from here on
            return out
        self.ran += 1
        return self._real.run(output_names, feeds)


def replaying(encoder, tape: Tape | None, *, same_session: bool = False):
    """``encoder`` (an ``exporter.runtime.Encoder``) with its session serving ``tape``'s batches, if any
    (``same_session``: the encoder runs on the very session the tape recorded)."""
    if tape is not None and tape.runs:
        encoder.session = ReplayingSession(encoder.session, tape, same_session=same_session)
    return encoder
