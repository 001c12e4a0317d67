"""One search for the int8 variants that must keep fidelity: which weight MatMuls to keep out of int8.

Backend-neutral: a backend gives ``make(kept) -> model`` (the int8 model with the ``kept`` ops in float),
``cosines(model, idx)`` (cosine to the torch reference of calibration texts ``idx``) and ``full(model)`` (the
gate's metrics on every calibration text). The search never sees the probe set.

1. All int8; if the calibration texts clear ``target + margin`` (min cosine and nn@10), done.
2. Rank once: for each candidate alone in float, the cut in mean ``1 - cosine`` over the ``screen_texts``
   texts that are worst under all-int8 (what the minimum-cosine gate sees), and the rise of their minimum.
3. Greedy: keep candidates in float in ranked order, measuring the whole calibration set after each, until
   the goal holds; stop at ``max_float_fraction`` of the candidates or when the budget is spent.

``make`` is cheap where the backend can float an op in the already-quantised model (OpenVINO: graph
surgery, no re-calibration) and a re-quantisation where it cannot (ONNX Runtime dynamic int8, ~1 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SEARCH_DEFAULTS: dict[str, Any] = {
    "target_cosine_min": 0.99,  # the int8 gate
    "margin": 0.003,  # the calibration set must clear target + margin (the probe set is unseen)
    "target_nn10": 0.95,
    "nn10_margin": 0.01,
    "screen_texts": 64,
    "budget_seconds": 420.0,  # whole search, wall clock; stops early and records it when exceeded
    "max_float_fraction": 0.5,  # never keep more than this share of the candidates in float
}


@dataclass
class SearchResult:
    candidates: int
    screened: dict[str, dict[str, float]]  # candidate -> deficit_cut, min_gain (the ranking)
    kept_float: list[str]
    steps: list[dict[str, Any]]
    reached: bool
    stopped_by: str | None
    seconds: float
    screen_texts: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 1)}


def search(
    candidates: list[str],
    make: Callable[[list[str]], Any],
    cosines: Callable[[Any, np.ndarray | None], np.ndarray],
    full: Callable[[Any], dict[str, float | None]],
    opts: dict[str, Any],
) -> tuple[Any, SearchResult]:
    """The model with the fewest ranked candidates in float that meets the goal (see the module doc)."""
    start = time.perf_counter()
    budget = float(opts["budget_seconds"])
    goal_cos = float(opts["target_cosine_min"]) + float(opts["margin"])
    goal_nn = float(opts["target_nn10"]) + float(opts["nn10_margin"])
    max_float = max(1, int(len(candidates) * float(opts["max_float_fraction"])))

    def good(metrics: dict[str, float | None]) -> bool:
        nn = metrics["neighbour_agreement_at_10"]
        return metrics["cosine_min"] >= goal_cos and (nn is None or nn >= goal_nn)

    def elapsed() -> float:
        return time.perf_counter() - start

    model = make([])
    all_cos = cosines(model, None)
    first = full(model)
    steps = [{"kept_float": 0, "added": None, **first, "seconds": round(elapsed(), 1)}]
    n_screen = min(int(opts["screen_texts"]), len(all_cos))
    if good(first) or not candidates:
        stop = None if good(first) else "no candidates to keep in float"
        return model, SearchResult(len(candidates), {}, [], steps, good(first), stop, elapsed(), n_screen)
    worst = np.argsort(all_cos, kind="stable")[:n_screen]
    base_deficit, base_min = float((1 - all_cos[worst]).mean()), float(all_cos[worst].min())

    screened: dict[str, dict[str, float]] = {}
    stopped_by = None
    for i, node in enumerate(candidates):
        if elapsed() > budget * 0.6:  # leave time for the greedy steps
            stopped_by = f"screen budget: {i} of {len(candidates)} candidates screened"
            break
        cos = cosines(make([node]), worst)
        screened[node] = {
            "deficit_cut": round(base_deficit - float((1 - cos).mean()), 7),
            "min_gain": round(float(cos.min()) - base_min, 6),
        }
    ranked = sorted(screened, key=lambda n: (screened[n]["deficit_cut"], screened[n]["min_gain"]), reverse=True)

    kept: list[str] = []
    reached = False
    for node in ranked:
        if len(kept) >= max_float:
            stopped_by = stopped_by or f"max_float_fraction: {len(kept)} of {len(candidates)} kept in float"
            break
        if elapsed() > budget:
            stopped_by = f"budget: {budget:.0f} s spent"
            break
        kept.append(node)
        model = make(kept)
        metrics = full(model)
        steps.append({"kept_float": len(kept), "added": node, **metrics, "seconds": round(elapsed(), 1)})
        if good(metrics):
            reached = True
            break
    result = SearchResult(
        candidates=len(candidates),
        screened=screened,
        kept_float=kept,
        steps=steps,
        reached=reached,
        stopped_by=None if reached else stopped_by or "ran out of candidates",
        seconds=elapsed(),
        screen_texts=n_screen,
    )
    return model, result
