"""One search for the int8 variants that must keep fidelity: which weight ops to keep out of int8.

Used by ``onnx-qint8-fidelity`` (``exporter.builders.export_onnx_fidelity``) and
``openvino-qint8-fidelity`` (``exporter.builders.export_openvino_fidelity``). A backend gives three hooks
(:class:`SearchBackend`): its ``candidates`` (op names), ``quantize_all()`` (the all-int8 model) and
``keep_in_float(names)`` (the int8 model with those ops in float), and a :class:`Scorer` that encodes the
calibration texts through a candidate model (``encode``); the scoring against the torch reference, the
search and the manifest records are shared. The search never sees the probe set.

0. Split the calibration texts, deterministically (:func:`holdout_split`: by each text's sha256, so the split
   does not depend on their order), into a *ranking* part and a *held-out* part (``holdout_fraction``).
   Ranking and the early stops look only at the ranking part.
1. A model **counts** (:func:`judge`) only when the ranking texts clear ``gate + margin`` (min cosine and
   nn@10, ``margin`` the floor in the options) **and the held-out texts clear ``gate + margin'``**, where
   ``margin' = max(margin, ranking − held-out)``: the gap measured on that model between the texts the
   search tuned on and texts it never saw. Texts nobody has seen may fall below the held-out ones by as much
   as those fell below the ranking ones, so the held-out texts must carry that gap above the gate. A model
   that reaches the goal only on the ranking texts is rejected. Each stratum's nn@10 must clear the gate at
   its lower confidence bound, as the gate judges every probe stratum (:func:`search_texts`: the
   tokenizer-derived samples by kind, the rest ``calibration``; a stratum with
   ``search_scorer.MIN_STRATUM_QUERIES`` texts or more; the margin is the whole set's). All int8 first: if it
   counts, done.
2. Rank once: for each candidate alone in float, the cut in mean ``1 - cosine`` over the ``screen_texts``
   ranking texts that are worst under all-int8 (what the minimum-cosine gate sees), and the rise of their
   minimum, through one model compiled once where the backend has ``screen_model`` (OpenVINO's switch
   model), else through ``keep_in_float([name])`` per candidate.
   Before the screen, every candidate is kept in float at once: no prefix of the ranking can do better, so
   if that model does not count, the goal is out of reach within the candidates (``OUT_OF_REACH``) and the
   search ends with it, one model scanned (step 3's scan: usually settled by its worst batch) instead of a
   screen of every candidate and a gallop. A goal in reach costs that one model more.
3. Gallop, then bisect, over prefixes of the ranking: keep the top 1, 2, 4, ... candidates in float until a
   prefix counts (at most ``max_float_fraction`` of the candidates), then bisect between the last prefix that
   did not count and the first that did. ``O(log k)`` models scored for ``k`` kept, whatever the layer count.
   When the top one does not count, the cap is tried next: if even the cap does not count the goal is out of
   reach and the search ends there, after two models instead of ``log2(cap)`` (the gallop then resumes at 2;
   a goal in reach costs that one model more).
   A model's ranking texts are scanned worst batch first (``Scorer.scan``) and scoring ends at the first
   batch holding a text clearly below the goal: such a model cannot count whatever the rest give.
4. :func:`narrow` (a backend with a cheaper unit for some kept ops): try each in that unit, keeping the swap
   where the model still counts.

The bounds are counts (``max_screen`` screened, ``max_float_fraction`` kept), never seconds.
``keep_in_float`` is graph surgery on the quantised model (no re-calibration), so a step costs one encode;
``SearchResult.cost`` records the search's cost in counts beside the encode seconds.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from exporter.builders.context import BuildContext
from exporter.builders.options import SearchOptions
from exporter.builders.search_scorer import Scored, Scorer
from exporter.errors import ExportFailed

# A step's scan stops at a text this far below the goal's cosine (Scorer.scan); nearer ones are scored in full, so
# the row cosine here and the gate metric's rounding (6 digits) can never disagree on the verdict.
SCAN_MARGIN = 1e-5
MARGIN_RULE = (
    "held-out texts must clear gate + max(floor, ranking - held-out) on the candidate (min cosine and nn@10): "
    "unseen texts may fall below the held-out ones by as much as those fell below the texts the search ranked on"
)
OUT_OF_REACH = "out of reach"  # stopped_by's prefix when every candidate in float does not count
SPLIT_RULE = (
    "held-out: the ceil(fraction * n) texts with the lowest sha256 of their UTF-8 bytes (order-independent); "
    "never ranked on nor used for the early stops (NNCF's activation statistics, where a backend takes them, "
    "cover the calibration set's texts, not the tokenizer-derived samples)"
)


class SearchBackend(Protocol):
    """The backend's hooks: what can stay in float, and the models with none / some of it in float."""

    candidates: list[str]

    def quantize_all(self) -> Any: ...

    def keep_in_float(self, names: list[str]) -> Any: ...


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
    split: dict[str, Any] = field(default_factory=dict)  # the ranking / held-out split (holdout_split)
    # what the search cost: candidates screened, models encoded, texts encoded (counts that do not depend on
    # load) and the seconds spent encoding (which do); Scorer.cost
    cost: dict[str, Any] = field(default_factory=dict)
    # each ranking text's cosine under the all-int8 model (NaN elsewhere): a later scan's order, worst first
    scan_order: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)


# ------------------------------------------------------------------------------------------ inputs
class SearchTexts(NamedTuple):
    """The texts the search scores on and each one's stratum, as the gate labels probe texts."""

    texts: list[str]
    strata: list[str]


def search_texts(ctx: BuildContext) -> SearchTexts:
    """The non-blank calibration texts (stratum ``calibration``), then the samples derived from the model's
    own tokenizer (:mod:`exporter.quality.tokenizer_texts`, a calibration seed) labelled by kind
    (``tok_random``, ...): the search judges each stratum as the gate does. ExportFailed when fewer than two
    calibration texts."""
    from exporter.quality import tokenizer_texts

    texts = ctx.usable_calibration_texts()
    if len(texts) < 2:
        raise ExportFailed("the fidelity int8 search needs at least 2 calibration texts.", "Pass --calibration FILE.")
    derived = ctx.memo("tokenizer-calibration-texts", lambda: tokenizer_texts.calibration_labelled(ctx))
    seen = set(texts)
    extra = [(t, kind) for t, kind in derived if t not in seen]
    return SearchTexts(texts + [t for t, _ in extra], ["calibration"] * len(texts) + [k for _, k in extra])


def holdout_split(texts: list[str], fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(ranking, held_out)`` indices (each sorted) of ``texts``: the ``ceil(fraction * n)`` texts with the
    lowest sha256 are held out, at least one and never all (``SPLIT_RULE``). A text's side depends on the text
    alone, not on the order or the other texts' positions; duplicates fall on one side."""
    n = len(texts)
    if n < 2:
        raise ExportFailed("the fidelity int8 search needs at least 2 calibration texts.", "Pass --calibration FILE.")
    keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
    order = sorted(range(n), key=lambda i: (keys[i], i))
    k = min(n - 1, max(1, int(np.ceil(float(fraction) * n))))
    held = np.sort(np.array(order[:k], dtype=np.int64))
    ranking = np.setdiff1d(np.arange(n), held)
    return ranking, held


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
        return refcache.under_reference(ctx.reference_key, encode, calibration=sha, prompt="")

    return ctx.memo("calibration-reference", cached, texts=sha)


# ------------------------------------------------------------------------------------------ the rule
def judge(seen: Scored, held: Scored | None, opts: SearchOptions) -> dict[str, Any]:
    """Whether a model with ranking-text metrics ``seen`` and held-out metrics ``held`` counts (``MARGIN_RULE``),
    with the margins that rule derived from the measured gap. ``held`` None: the ranking texts already miss
    the goal, the held-out ones were not scored."""
    floor_ok = seen["cosine_min"] >= opts.goal_cosine_min and _strata_ok(seen, opts)
    nn_seen = seen["neighbour_agreement_at_10"]
    floor_ok = floor_ok and (nn_seen is None or nn_seen >= opts.goal_nn10)
    if held is None:
        return {"counts": False, "why": "ranking texts below gate + floor margin"}
    cos_gap = max(0.0, float(seen["cosine_min"]) - float(held["cosine_min"]))
    margin = max(float(opts.margin), cos_gap)
    nn_held = held["neighbour_agreement_at_10"]
    nn_gap = 0.0 if nn_seen is None or nn_held is None else max(0.0, nn_seen - nn_held)
    nn_margin = max(float(opts.nn10_margin), nn_gap)
    held_ok = held["cosine_min"] >= opts.target_cosine_min + margin - 1e-12
    held_ok = held_ok and (nn_held is None or nn_held >= opts.target_nn10 + nn_margin - 1e-12)
    held_ok = held_ok and _strata_ok(held, opts)
    why = None
    if not floor_ok:
        why = "ranking texts below gate + floor margin"
    elif not held_ok:
        why = "held-out texts below gate + margin (the goal reached on the ranking texts only)"
    return {
        "counts": bool(floor_ok and held_ok),
        "why": why,
        "margin": {"cosine_min": round(margin, 6), "neighbour_agreement_at_10": round(nn_margin, 4)},
        "gap": {"cosine_min": round(cos_gap, 6), "neighbour_agreement_at_10": round(nn_gap, 4)},
    }


def _strata_ok(scored: Scored, opts: SearchOptions) -> bool:
    """Every judged stratum's nn@10 clears the gate itself (the margin is carried by the whole set's)."""
    worst = scored.get("nn10_worst_stratum")
    return worst is None or worst["value"] >= opts.target_nn10 - 1e-12


# ------------------------------------------------------------------------------------------ search
def _rank(backend: SearchBackend, scorer: Scorer, worst: np.ndarray, all_cos: np.ndarray, max_screen: int):
    """Each candidate alone in float, scored on the ``worst`` texts; ranked, with why the screen stopped.
    ``all_cos``: the all-int8 cosine of each text (indexed like the texts)."""
    base_deficit, base_min = float((1 - all_cos[worst]).mean()), float(all_cos[worst].min())
    screened: dict[str, dict[str, float]] = {}
    stopped_by = None
    # a backend may screen all candidates through one model (no build and compile per candidate)
    one_alone = getattr(backend, "screen_model", None) or (lambda name: backend.keep_in_float([name]))
    for i, name in enumerate(backend.candidates):
        if i >= max_screen:
            stopped_by = f"max_screen: {i} of {len(backend.candidates)} candidates screened"
            break
        cos = scorer.cosines(one_alone(name), worst)
        screened[name] = {
            "deficit_cut": round(base_deficit - float((1 - cos).mean()), 7),
            "min_gain": round(float(cos.min()) - base_min, 6),
        }
    ranked = sorted(screened, key=lambda n: (screened[n]["deficit_cut"], screened[n]["min_gain"]), reverse=True)
    return {n: screened[n] for n in ranked}, stopped_by


def _cost(scorer: Scorer, result: SearchResult) -> dict[str, Any]:
    rounded = {k: round(v, 1) if isinstance(v, float) else v for k, v in scorer.cost.items()}
    return {"candidates_screened": len(result.screened), "models_scored": len(result.steps)} | rounded


def prefix_sizes(cap: int) -> list[int]:
    """The gallop's prefix sizes: 1, 2, 4, ... and ``cap`` itself last."""
    sizes, k = [], 1
    while k < cap:
        sizes.append(k)
        k *= 2
    return [*sizes, cap] if cap >= 1 else []


def _step(scorer: Scorer, opts: SearchOptions, kept, model, split, last_cos, elapsed, *, scan: bool, full: bool):
    """A model's verdict (``judge``); ``full``: the held-out texts scored even when the ranking ones miss."""
    ranking, held = split
    head: dict[str, Any] = {"kept_float": len(kept), "added": kept[-1] if kept else None}
    if scan:  # a ranking text clearly below the goal settles it before every text is encoded
        cos, scored = scorer.scan(model, opts.goal_cosine_min - SCAN_MARGIN, last_cos, ranking)
        seen_mask = ~np.isnan(cos)
        last_cos[seen_mask] = cos[seen_mask]
        if scored < len(ranking):
            low = round(float(np.nanmin(cos)), 6)
            seen: Scored = {"cosine_min": low, "cosine_mean": None, "neighbour_agreement_at_10": None}
            seen["texts_scored"] = scored
            return {**head, "ranking": seen, "heldout": None, **judge(seen, None, opts), "seconds": round(elapsed(), 1)}
    seen = scorer.metrics(model, ranking)
    verdict = judge(seen, None, opts)
    heldout = None
    nn_ok = seen["neighbour_agreement_at_10"] is None or seen["neighbour_agreement_at_10"] >= opts.goal_nn10
    # held-out texts only for a model the ranking ones do not settle: a stratum below the gate settles it too
    if full or (seen["cosine_min"] >= opts.goal_cosine_min and nn_ok and _strata_ok(seen, opts)):
        heldout = scorer.metrics(model, held)
        verdict = judge(seen, heldout, opts)
    return {**head, "ranking": seen, "heldout": heldout, **verdict, "seconds": round(elapsed(), 1)}


def _split_record(ranking: np.ndarray, held: np.ndarray, fraction: float) -> dict[str, Any]:
    return {"fraction": float(fraction), "ranking_texts": len(ranking), "heldout_texts": len(held), "rule": SPLIT_RULE}


def search(backend: SearchBackend, scorer: Scorer, opts: SearchOptions) -> tuple[Any, SearchResult]:
    """The model with the shortest prefix of the ranked candidates in float that counts (see the module doc)."""
    start = time.perf_counter()  # wall time is recorded, never a bound

    def elapsed() -> float:
        return time.perf_counter() - start

    candidates = list(backend.candidates)
    ranking, held = holdout_split(scorer.texts, opts.holdout_fraction)
    split = _split_record(ranking, held, opts.holdout_fraction)
    max_float = max(1, int(len(candidates) * float(opts.max_float_fraction)))

    def step(kept: list[str], model, scan: bool = True, full: bool = False) -> dict[str, Any]:
        return _step(scorer, opts, kept, model, (ranking, held), last_cos, elapsed, scan=scan, full=full)

    model = backend.quantize_all()
    all_cos = np.full(len(scorer.texts), np.nan)
    all_cos[ranking] = scorer.cosines(model, ranking)
    last_cos = all_cos.copy()  # each ranking text's latest cosine: the scan's batch order, worst first
    steps = [step([], model, scan=False, full=True)]
    n_screen = min(int(opts.screen_texts), len(ranking))
    result = SearchResult(candidates, {}, [], steps, steps[0]["counts"], None, 0.0, n_screen, split)
    result.scan_order = all_cos

    def done(final_model) -> tuple[Any, SearchResult]:  # the search ends on ``final_model``: record its cost
        result.seconds, result.cost = elapsed(), _cost(scorer, result)
        return final_model, result

    if result.reached or not candidates:
        result.stopped_by = None if result.reached else "no candidates to keep in float"
        return done(model)
    # every candidate in float, which no prefix can beat (built once; scanned as any step): out of reach ends here
    every = backend.keep_in_float(list(candidates))
    steps.append(step(list(candidates), every))
    if not steps[-1]["counts"]:
        result.kept_float = list(candidates)
        result.stopped_by = f"{OUT_OF_REACH}: all {len(candidates)} candidates kept in float do not count"
        return done(every)
    worst = ranking[np.argsort(all_cos[ranking], kind="stable")[:n_screen]]
    result.screened, stopped_by = _rank(backend, scorer, worst, all_cos, int(opts.max_screen))
    ranked = list(result.screened)
    cap = min(max_float, len(ranked))
    if cap < 1:
        result.stopped_by = stopped_by or "ran out of candidates"
        return done(model)

    tried: dict[int, dict[str, Any]] = {0: steps[0]}

    def attempt(k: int) -> bool:
        if k not in tried:
            tried[k] = step(ranked[:k], backend.keep_in_float(ranked[:k]))
            steps.append(tried[k])
        return bool(tried[k]["counts"])

    lo, hi = 0, None
    sizes = prefix_sizes(cap)
    for i, k in enumerate(sizes):  # gallop: O(log k) models for k kept
        if attempt(k):
            hi = k
            break
        lo = k
        if i == 0 and not attempt(cap):  # the cap does not count either: out of reach, stop after two models
            break
    if hi is None:
        result.kept_float = ranked[:cap]
        reason = f"max_float_fraction: {cap} of {len(candidates)} kept in float" if cap == max_float else None
        result.stopped_by = stopped_by or reason or "ran out of candidates"
        model = backend.keep_in_float(result.kept_float)
        if steps[-1].get("heldout") is None:  # the search ends on this model: its texts scored in full
            steps[-1] = tried[cap] = step(result.kept_float, model, scan=False, full=True)
        return done(model)
    while hi - lo > 1:  # bisect between the last prefix that did not count and the first that did
        mid = (lo + hi) // 2
        if attempt(mid):
            hi = mid
        else:
            lo = mid
    result.kept_float, result.reached = ranked[:hi], True
    model = backend.keep_in_float(result.kept_float)
    return done(model)


def narrow(
    scorer: Scorer, opts: SearchOptions, result: SearchResult, model: Any, names: list[str], model_for: Any
) -> tuple[Any, list[str]]:
    """After a search reached its goal with whole ops in float (``model``, what it returned): try each of
    ``names`` (kept ops that have a cheaper unit, in ranked order) in that unit, one more at a time, and keep
    the swap where the model still counts by the same rule (held-out texts included). ``model_for(swapped)``:
    the kept set with ``swapped`` in the cheaper unit. Each trial is a step of ``result`` (``narrowed``: the op
    tried), its scan ordered by the all-int8 model's cosines (``result.scan_order``); returns the final model
    and the ops swapped. At most ``len(names)`` models scored, a hopeless one settled by the scan."""
    start = time.perf_counter() - result.seconds
    ranking, held = holdout_split(scorer.texts, opts.holdout_fraction)
    last_cos = result.scan_order.copy()
    swapped: list[str] = []
    for name in names:
        trial = model_for([*swapped, name])
        step = _step(
            scorer,
            opts,
            result.kept_float,
            trial,
            (ranking, held),
            last_cos,
            lambda: time.perf_counter() - start,
            scan=True,
            full=False,
        )
        result.steps.append({**step, "added": None, "narrowed": name})
        if step["counts"]:
            swapped.append(name)
            model = trial
    result.seconds, result.cost = time.perf_counter() - start, _cost(scorer, result)
    return model, swapped
