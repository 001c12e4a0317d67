"""Scoring a candidate model of the int8 search against the torch reference on the calibration texts.

A backend subclass of :class:`Scorer` implements ``encode`` (the texts through a candidate model, the way it
is served); the scorer counts what encoding cost (``cost``), keeps the last model's rows, scans a model's
texts worst batch first so a hopeless model is settled early (``scan``), keeps each candidate's screening
cosines so a second search over the same base model does not encode them again (``screen``), and computes
the gate's metrics (``metrics``). Used by :mod:`exporter.builders.fidelity_search`.
"""

from __future__ import annotations

import time
from typing import Any, NotRequired, TypedDict

import numpy as np

from exporter.builders import kit

BATCH = 32  # texts per batch, longest first: how both scorers encode (as sentence-transformers)
# A stratum's nn@10 is judged where it has this many texts among those scored (its hits over >= 100 neighbours):
# the held-out side of a small stratum holds a handful of texts, whose nn@10 moves by 0.02 per neighbour.
MIN_STRATUM_QUERIES = 10


def _all(n: int) -> np.ndarray:
    return np.arange(n)


class Scored(TypedDict):
    """The gate's metrics on some calibration texts (``Scorer.metrics``), as the search record keeps them."""

    cosine_min: float
    cosine_mean: float | None  # None: a scan settled the step before every text was scored
    neighbour_agreement_at_10: float | None
    texts_scored: NotRequired[int]  # when a scan stopped early: how many texts it scored
    # the stratum with the lowest nn@10 and its value at the gate's lower confidence bound
    # (``exporter.quality.judging.rank_bound``), among those with MIN_STRATUM_QUERIES texts
    nn10_worst_stratum: NotRequired[dict[str, Any]]


class Scorer:
    """Scores candidate models against the torch reference embeddings of the calibration texts.

    A backend subclass implements :meth:`encode`, embedding the texts ``idx`` through a candidate model
    the way it is served (rows in ``idx`` order)."""

    def __init__(self, texts: list[str], reference: np.ndarray, strata: list[str] | None = None):
        self.texts = texts
        self.reference = reference
        # each text's stratum (fidelity_search.search_texts): metrics() then also reports the stratum with the
        # lowest nn@10 (nn10_worst_stratum), which the search's rule holds to the gate; None: no strata
        self.strata = strata
        self._rows: tuple[Any, bytes, np.ndarray] | None = None  # (model, subset key, its rows): the last one
        # what the search cost, in counts that do not depend on load (and the seconds, which do)
        self.cost = {"models_encoded": 0, "encode_calls": 0, "texts_encoded": 0, "encode_seconds": 0.0}
        self._last_model: Any = None

    def encode(self, model: Any, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _encode(self, model: Any, idx: np.ndarray) -> np.ndarray:
        """:meth:`encode`, counted in ``cost``."""
        start = time.perf_counter()
        if model is not self._last_model:
            self.cost["models_encoded"] += 1
            self._last_model = model
        out = self.encode(model, idx)
        self.cost["encode_calls"] += 1
        self.cost["texts_encoded"] += len(idx)
        self.cost["encode_seconds"] += time.perf_counter() - start
        return out

    def encode_all(self, model: Any, idx: np.ndarray | None = None) -> np.ndarray:
        """The texts ``idx`` (every text when None) through ``model``, encoded once for the same model object
        and subset (a model is scored per text, then with the gate's metrics)."""
        idx = _all(len(self.texts)) if idx is None else np.asarray(idx)
        key = idx.tobytes()
        if self._rows is None or self._rows[0] is not model or self._rows[1] != key:
            self._rows = (model, key, self._encode(model, idx))
        return self._rows[2]

    def batches(self, idx: np.ndarray | None = None) -> list[np.ndarray]:
        """The batches ``encode(model, idx)`` forms: longest text first (a stable sort), ``BATCH`` texts
        each, as both scorers (and sentence-transformers) batch. One of them encoded on its own is the very
        same batch, so it gives the same rows."""
        idx = _all(len(self.texts)) if idx is None else np.asarray(idx)
        order = idx[np.argsort([-len(self.texts[i]) for i in idx], kind="stable")]
        return [order[s : s + BATCH] for s in range(0, len(order), BATCH)]

    def scan(
        self, model: Any, floor: float, worst_first: np.ndarray, idx: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """Encode the texts ``idx`` (all when None), batch by batch, the batches with the lowest ``worst_first``
        (a cosine per text, indexed like the texts) first, and stop at the first batch holding a text whose
        cosine is below ``floor``: such a model misses the goal whatever the other texts give. Returns each
        text's cosine (over all texts; NaN where not encoded) and how many texts were encoded; when all of
        ``idx`` were, :meth:`encode_all` has them."""
        idx = _all(len(self.texts)) if idx is None else np.asarray(idx)
        cos, parts = np.full(len(self.texts), np.nan), []
        for batch in sorted(self.batches(idx), key=lambda b: float(worst_first[b].min())):
            parts.append((batch, self._encode(model, batch)))
            cos[batch] = kit.row_cosines(parts[-1][1], self.reference[batch])
            if cos[batch].min() < floor:
                return cos, sum(len(b) for b, _ in parts)
        rows = {int(i): r for batch, out in parts for i, r in zip(batch, out, strict=True)}
        self._rows = (model, idx.tobytes(), np.stack([rows[int(i)] for i in idx]))
        return cos, len(idx)

    def cosines(self, model: Any, idx: np.ndarray | None = None) -> np.ndarray:
        """Cosine to the reference of each text ``idx`` (all when None), in ``idx`` order."""
        idx = _all(len(self.texts)) if idx is None else np.asarray(idx)
        return kit.row_cosines(self.encode_all(model, idx), self.reference[idx])

    def metrics(self, model: Any, idx: np.ndarray | None = None) -> Scored:
        """The gate's metrics on the texts ``idx`` (all calibration texts when None)."""
        from exporter.quality import judging, parity

        idx = _all(len(self.texts)) if idx is None else np.asarray(idx)
        strata = None if self.strata is None else [self.strata[i] for i in idx]
        m = parity.compare(self.reference[idx], self.encode_all(model, idx), strata=strata)
        nn = m.neighbour_agreement_at_10
        scored: Scored = {
            "cosine_min": round(m.cosine_min, 6),
            "cosine_mean": round(m.cosine_mean, 6),
            "neighbour_agreement_at_10": None if nn is None else round(nn, 4),
        }
        sized: dict[str, float] = {  # the gate judges nn@10 per stratum too, at its lower confidence bound
            name: bound
            for name, entry in (m.strata or {}).items()
            if entry["n"] >= MIN_STRATUM_QUERIES
            and (bound := judging.rank_bound(entry, "neighbour_agreement_at_10")) is not None
        }
        if sized:
            worst = min(sized, key=lambda name: sized[name])
            scored["nn10_worst_stratum"] = {"stratum": worst, "value": round(sized[worst], 4)}
        return scored
