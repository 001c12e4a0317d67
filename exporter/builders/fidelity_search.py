"""One search for the int8 variants that must keep fidelity: which weight ops to keep out of int8.

Used by ``onnx-qint8-fidelity`` (``exporter.builders.export_onnx_fidelity``) and
``openvino-qint8-fidelity`` (``exporter.builders.export_openvino_fidelity``). A backend gives three hooks
(:class:`SearchBackend`): its ``candidates`` (op names), ``quantize_all()`` (the all-int8 model) and
``keep_in_float(names)`` (the int8 model with those ops in float), and a :class:`Scorer` that encodes the
calibration texts through a candidate model (``encode``); the scoring against the torch reference, the
search and the manifest records are shared. The search never sees the probe set.

1. All int8; if the calibration texts clear ``target + margin`` (min cosine and nn@10), done.
2. Rank once: for each candidate alone in float, the cut in mean ``1 - cosine`` over the ``screen_texts``
   texts that are worst under all-int8 (what the minimum-cosine gate sees), and the rise of their minimum.
3. Greedy: keep candidates in float in ranked order, measuring the whole calibration set after each, until
   the goal holds; stop at ``max_float_fraction`` of the candidates. A step's batches run worst first
   (``Scorer.scan``) and the step ends at the first batch holding a text clearly below the goal's minimum
   cosine: that step misses the goal whatever the rest give (recorded with ``texts_scored`` and only the
   minimum seen). The search's result is the same as scoring every text; the final step is always whole.

The bounds are counts (``max_screen`` candidates screened, ``max_float_fraction`` kept), not seconds: the same
model and texts give the same variant on a loaded machine as on an idle one.

``keep_in_float`` is graph surgery on the already-quantised model in both backends (OpenVINO: no
re-calibration; ONNX Runtime dynamic int8: no re-quantisation, ~1 s a step before), so a step costs an
encode of the texts it is scored on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from exporter.builders import kit
from exporter.builders.context import BuildContext
from exporter.builders.options import SearchOptions
from exporter.errors import ExportFailed

METRIC_KEYS = ("cosine_min", "cosine_mean", "neighbour_agreement_at_10")
BATCH = 32  # texts per batch, longest first: how both scorers encode (as sentence-transformers)
# A greedy step stops at a text this far below the goal's cosine (Scorer.scan); nearer ones are scored in full, so
# the row cosine here and the gate metric's rounding (6 digits) can never disagree on the verdict.
SCAN_MARGIN = 1e-5


class SearchBackend(Protocol):
    """The backend's hooks: what can stay in float, and the models with none / some of it in float."""

    candidates: list[str]

    def quantize_all(self) -> Any: ...

    def keep_in_float(self, names: list[str]) -> Any: ...


class Scorer:
    """Scores candidate models against the torch reference embeddings of the calibration texts.

    A backend subclass implements :meth:`encode`, embedding the texts ``idx`` through a candidate model
    the way it is served (rows in ``idx`` order)."""

    def __init__(self, texts: list[str], reference: np.ndarray):
        self.texts = texts
        self.reference = reference
        self._all: tuple[Any, np.ndarray] | None = None  # (model, every text through it): the last one

    def encode(self, model: Any, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode_all(self, model: Any) -> np.ndarray:
        """Every text through ``model``, encoded once for the same model object (the search scores the
        all-int8 model twice: per text, then the gate's metrics)."""
        if self._all is None or self._all[0] is not model:
            self._all = (model, self.encode(model, np.arange(len(self.texts))))
        return self._all[1]

    def batches(self) -> list[np.ndarray]:
        """The batches ``encode(model, every text)`` forms: longest text first (a stable sort), ``BATCH`` texts
        each, as both scorers (and sentence-transformers) batch. One of them encoded on its own is the very
        same batch, so it gives the same rows."""
        order = np.argsort([-len(t) for t in self.texts], kind="stable")
        return [order[s : s + BATCH] for s in range(0, len(order), BATCH)]

    def scan(self, model: Any, floor: float, worst_first: np.ndarray) -> tuple[np.ndarray, int]:
        """Encode every text, batch by batch, the batches with the lowest ``worst_first`` (a cosine per text)
        first, and stop at the first batch holding a text whose cosine is below ``floor``: such a model
        misses the goal whatever the other texts give. Returns each text's cosine (NaN where not encoded)
        and how many texts were encoded; when all were, :meth:`encode_all` has them."""
        cos, parts = np.full(len(self.texts), np.nan), []
        for batch in sorted(self.batches(), key=lambda b: float(worst_first[b].min())):
            parts.append((batch, self.encode(model, batch)))
            cos[batch] = kit.row_cosines(parts[-1][1], self.reference[batch])
            if cos[batch].min() < floor:
                return cos, sum(len(b) for b, _ in parts)
        out = np.empty((len(self.texts), *parts[0][1].shape[1:]), dtype=parts[0][1].dtype)
        for batch, rows in parts:
            out[batch] = rows
        self._all = (model, out)
        return cos, len(self.texts)

    def cosines(self, model: Any, idx: np.ndarray | None = None) -> np.ndarray:
        """Cosine to the reference of each text (``idx``: a subset, encoded as its own batches)."""
        if idx is None:
            return kit.row_cosines(self.encode_all(model), self.reference)
        return kit.row_cosines(self.encode(model, idx), self.reference[idx])

    def metrics(self, model: Any) -> dict[str, float | None]:
        """The gate's metrics on all calibration texts."""
        from exporter.quality import parity

        m = parity.compare(self.reference, self.encode_all(model))
        nn = m.neighbour_agreement_at_10
        return {
            "cosine_min": round(m.cosine_min, 6),
            "cosine_mean": round(m.cosine_mean, 6),
            "neighbour_agreement_at_10": None if nn is None else round(nn, 4),
        }


@dataclass
class SearchResult:
    candidates: list[str]
    screened: dict[str, dict[str, float]]  # candidate -> deficit_cut, min_gain, in ranked order
    kept_float: list[str]
    steps: list[dict[str, Any]]
    reached: bool
    stopped_by: str | None
    seconds: float
    screen_texts: int


# ------------------------------------------------------------------------------------------ inputs
def search_texts(ctx: BuildContext) -> list[str]:
    """The non-blank calibration texts the search scores on; ExportFailed when fewer than two."""
    texts = ctx.usable_calibration_texts()
    if len(texts) < 2:
        raise ExportFailed("the fidelity int8 search needs at least 2 calibration texts.", "Pass --calibration FILE.")
    return texts


def calibration_reference(ctx: BuildContext, texts: list[str]) -> np.ndarray:
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

    def cached():
        return refcache.under_reference(ctx.options.get("reference_key"), encode, calibration=sha, prompt="")

    return ctx.memo(f"calibration-reference:{sha}", cached)


# ------------------------------------------------------------------------------------------ search
def _rank(backend: SearchBackend, scorer: Scorer, worst: np.ndarray, all_cos: np.ndarray, max_screen: int):
    """Each candidate alone in float, scored on the ``worst`` texts; ranked, with why the screen stopped."""
    base_deficit, base_min = float((1 - all_cos[worst]).mean()), float(all_cos[worst].min())
    screened: dict[str, dict[str, float]] = {}
    stopped_by = None
    for i, name in enumerate(backend.candidates):
        if i >= max_screen:
            stopped_by = f"max_screen: {i} of {len(backend.candidates)} candidates screened"
            break
        cos = scorer.cosines(backend.keep_in_float([name]), worst)
        screened[name] = {
            "deficit_cut": round(base_deficit - float((1 - cos).mean()), 7),
            "min_gain": round(float(cos.min()) - base_min, 6),
        }
    ranked = sorted(screened, key=lambda n: (screened[n]["deficit_cut"], screened[n]["min_gain"]), reverse=True)
    return {n: screened[n] for n in ranked}, stopped_by


def search(backend: SearchBackend, scorer: Scorer, opts: SearchOptions) -> tuple[Any, SearchResult]:
    """The model with the fewest ranked candidates in float that meets the goal (see the module doc)."""
    start = time.perf_counter()  # wall time is recorded, never a bound

    def elapsed() -> float:
        return time.perf_counter() - start

    candidates = list(backend.candidates)
    max_float = max(1, int(len(candidates) * float(opts.max_float_fraction)))

    def good(metrics: dict[str, float | None]) -> bool:
        nn = metrics["neighbour_agreement_at_10"]
        return metrics["cosine_min"] >= opts.goal_cosine_min and (nn is None or nn >= opts.goal_nn10)

    def step(kept: list[str], added: str | None, model, scan: bool = False) -> dict[str, Any]:
        head = {"kept_float": len(kept), "added": added}
        if scan:  # a text clearly below the goal's cosine settles the step before every text is encoded
            cos, scored = scorer.scan(model, opts.goal_cosine_min - SCAN_MARGIN, last_cos)
            seen = ~np.isnan(cos)
            last_cos[seen] = cos[seen]
            if scored < len(cos):
                early = {"cosine_min": round(float(np.nanmin(cos)), 6), "cosine_mean": None}
                early |= {"neighbour_agreement_at_10": None, "texts_scored": scored}
                return {**head, **early, "seconds": round(elapsed(), 1)}
        return {**head, **scorer.metrics(model), "seconds": round(elapsed(), 1)}

    model = backend.quantize_all()
    all_cos = scorer.cosines(model, None)
    last_cos = all_cos.copy()  # each text's latest cosine: the scan's batch order, worst first
    steps = [step([], None, model)]
    n_screen = min(int(opts.screen_texts), len(all_cos))
    result = SearchResult(candidates, {}, [], steps, good(steps[0]), None, 0.0, n_screen)
    if result.reached or not candidates:
        result.stopped_by = None if result.reached else "no candidates to keep in float"
        result.seconds = elapsed()
        return model, result
    worst = np.argsort(all_cos, kind="stable")[:n_screen]
    result.screened, stopped_by = _rank(backend, scorer, worst, all_cos, int(opts.max_screen))

    for name in result.screened:
        if len(result.kept_float) >= max_float:
            kept = len(result.kept_float)
            stopped_by = stopped_by or f"max_float_fraction: {kept} of {len(candidates)} kept in float"
            break
        result.kept_float.append(name)
        model = backend.keep_in_float(list(result.kept_float))
        steps.append(step(result.kept_float, name, model, scan=True))
        if good(steps[-1]):
            result.reached = True
            break
    if "texts_scored" in steps[-1]:  # the search ends on this model: its calibration result in full
        steps[-1] = step(result.kept_float, steps[-1]["added"], model)
    result.stopped_by = None if result.reached else stopped_by or "ran out of candidates"
    result.seconds = elapsed()
    return model, result


# ------------------------------------------------------------------------------------------ records
def kept_records(result: SearchResult, key: str) -> list[dict[str, Any]]:
    """What the search kept out of int8 and why, for the manifest: one entry per op (``{key: name, ...}``)."""
    n = len(result.screened)
    ranks = {name: i for i, name in enumerate(result.screened)}
    return [
        {
            key: name,
            "why": "measured sensitivity: kept alone in float, it cut the mean cosine deficit of the "
            f"{result.screen_texts} worst calibration texts by {result.screened[name]['deficit_cut']:.2e} "
            f"(min cosine +{result.screened[name]['min_gain']:.4f}); ranked {ranks[name] + 1} of {n}",
            **result.screened[name],
        }
        for name in result.kept_float
    ]


def search_record(result: SearchResult, opts: SearchOptions) -> dict[str, Any]:
    """The search as the manifest records it (goal, bounds, every step, the ranking), for either backend."""
    final = result.steps[-1]
    return {
        "goal": {
            "cosine_min": round(opts.goal_cosine_min, 6),
            "neighbour_agreement_at_10": round(opts.goal_nn10, 6),
            "measured_on": "calibration texts (never the probe set)",
        },
        "candidates": len(result.candidates),
        "candidate_names": list(result.candidates),
        "screen_texts": result.screen_texts,
        "max_screen": int(opts.max_screen),
        "max_float_fraction": float(opts.max_float_fraction),
        "seconds": round(result.seconds, 1),
        "reached": result.reached,
        "stopped_by": result.stopped_by,
        "kept_float": list(result.kept_float),
        "steps": result.steps,
        "sensitivity": result.screened,  # most sensitive first
        "calibration_result": {k: final[k] for k in METRIC_KEYS},
    }
