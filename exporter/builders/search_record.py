"""What the int8 fidelity search records in the manifest: the ops it kept out of int8 and why
(``kept_records``), and the search itself (``search_record``: goal, margin and its rule, the split, every step,
the ranking), for either backend (``exporter.builders.fidelity_search``)."""

from __future__ import annotations

from typing import Any

from exporter.builders.fidelity_search import MARGIN_RULE, SearchResult
from exporter.builders.options import SearchOptions


def kept_records(result: SearchResult, key: str) -> list[dict[str, Any]]:
    """What the search kept out of int8 and why, for the manifest: one entry per op (``{key: name, ...}``).
    Ops kept unranked (the goal out of reach before the screen: every candidate in float) say so."""
    n = len(result.screened)
    ranks = {name: i for i, name in enumerate(result.screened)}
    unranked = (
        f"kept in float with every other candidate: the search's goal was out of reach even so "
        f"({result.stopped_by}), so no ranking was measured"
    )
    return [
        {
            key: name,
            "why": "measured sensitivity: kept alone in float, it cut the mean cosine deficit of the "
            f"{result.screen_texts} worst ranking calibration texts by {result.screened[name]['deficit_cut']:.2e} "
            f"(min cosine +{result.screened[name]['min_gain']:.4f}); ranked {ranks[name] + 1} of {n}",
            **result.screened[name],
        }
        if name in result.screened
        else {key: name, "why": unranked}
        for name in result.kept_float
    ]


def final_step(result: SearchResult) -> dict[str, Any]:
    """The step that scored the search's model: the last counting one with the kept prefix when the search
    reached its goal (after ``narrow``, the last swap that held), else the last with that prefix."""
    n = len(result.kept_float)
    steps = [s for s in result.steps if s["kept_float"] == n and (s["counts"] or not result.reached)]
    return steps[-1] if steps else result.steps[-1]


def search_record(result: SearchResult, opts: SearchOptions) -> dict[str, Any]:
    """The search as the manifest records it (goal, margin and its rule, the split, bounds, every step, the
    ranking), for either backend."""
    final = final_step(result)
    return {
        "goal": {
            "gate_cosine_min": round(opts.target_cosine_min, 6),
            "gate_neighbour_agreement_at_10": round(opts.target_nn10, 6),
            "floor_margin": {
                "cosine_min": round(opts.margin, 6),
                "neighbour_agreement_at_10": round(opts.nn10_margin, 6),
            },
            "cosine_min": round(opts.goal_cosine_min, 6),
            "neighbour_agreement_at_10": round(opts.goal_nn10, 6),
            "margin_rule": MARGIN_RULE,
            "measured_on": "calibration texts (never the probe set), split into ranking and held-out texts",
        },
        "split": result.split,
        "margin": final.get("margin"),  # derived on the search's model: max(floor, ranking - held-out)
        "gap": final.get("gap"),
        "ranking_result": final.get("ranking"),
        "heldout_result": final.get("heldout"),
        "candidates": len(result.candidates),
        "candidate_names": list(result.candidates),
        "screen_texts": result.screen_texts,
        "max_screen": int(opts.max_screen),
        "max_float_fraction": float(opts.max_float_fraction),
        "order": "every candidate in float first (out of reach: stop), then gallop over prefixes of the ranking "
        "(1, the cap, 2, 4, ...), then bisect",
        "seconds": round(result.seconds, 1),
        "cost": result.cost,
        "reached": result.reached,
        "stopped_by": result.stopped_by,
        "kept_float": list(result.kept_float),
        "steps": result.steps,
        "sensitivity": result.screened,  # most sensitive first
    }
