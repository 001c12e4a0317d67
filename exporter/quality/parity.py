"""Fidelity of a variant's outputs against the torch reference's, over the same probe inputs.

Pure numpy. ``compare`` / ``compare_sparse`` / ``compare_scores`` measure (``exporter.quality.kind_metrics`` calls one
per model kind); the thresholds, ``judge`` and ``to_manifest`` live in ``exporter.quality.parity_gates`` and are
re-exported here. The rank metrics run in bounded memory and time and are defined on degenerate input
(``exporter.quality.parity_rank``: blockwise neighbour search, sampled pairs, tie tolerance, skipped metrics).

Embedders (row ``i`` of both matrices is the embedding of text ``i``), ``compare``:

- ``cosine_min`` / ``cosine_mean`` / ``cosine_p01``: cosine of each candidate row with its reference
  row; minimum, mean and 1st percentile (numpy's default linear interpolation). A zero row against a
  non-zero row has cosine 0; two zero rows have cosine 1 (the variant reproduced the reference).
- ``max_abs_diff``: largest element-wise absolute difference.
- ``norm_rel_err_max`` / ``norm_rel_err_mean``: ``| |c_i| - |r_i| | / |r_i|`` over texts (a zero reference
  row: 0 if the candidate's is zero too, else 1). Users who score with the dot product (inner-product
  indexes, ``similarity_fn_name: dot``) see every norm change; cosine does not.
- ``dot_rel_err_max``: over the Spearman pairs, ``|c_i.c_j - r_i.r_j| / (|r_i| |r_j|)``: the dot-product
  scores a consumer sees, relative to their scale. Recorded, not gated (cosine and norm bound it).
- ``neighbour_agreement_at_10``: for each query text, the fraction of its ``k`` nearest neighbours by
  cosine (among all other texts) under the candidate that are also among its ``k`` nearest under the
  reference, averaged over queries; ``k`` is clipped to ``n - 1``. A neighbour tying the reference's k-th
  within ``TIE_TOL`` agrees. Queries: every text, or a seeded sample of ``NN_MAX_QUERIES``
  (``neighbour_queries`` records how many were used).
- ``spearman_pairwise``: Spearman rank correlation (tie-tolerant) between the reference's and the
  candidate's cosine similarities over all pairs ``i < j`` of the texts, or of a seeded sample of
  ``SPEARMAN_MAX_TEXTS`` texts (``spearman_pairs`` records the number of pairs). ``None`` when ``n < 3``.
- ``skipped``: metric -> reason, for a metric that was not computed because the *reference* gives it
  nothing to measure (all probe texts embed alike: no neighbour order, no pair ordering). A skipped
  metric does not fail its gate; one that could not be computed for too few texts does.

Sparse encoders (SPLADE), ``compare_sparse``: everything above on the dense vocabulary-sized vectors, plus
``top_terms_overlap_at_10`` (for each text, the fraction of the candidate's 10 highest-weighted terms among
the reference's 10, fewer when the reference has fewer active terms; ties within ``TIE_TOL`` count) and
``weights_rel_l2_max`` (the values an inverted index stores: ``|c_i - r_i| / max(|r_i|, |c_i|)`` per text,
0 for two empty vectors, the maximum over texts; ``max_abs_diff`` is the largest weight error).

Cross-encoders (rerankers), ``compare_scores`` over (query, passage) pairs, on the scale the model serves
(``CrossEncoder.predict``: after its activation, e.g. sigmoid): ``score_max_abs_diff``,
``score_spread_err_max`` (per label, that difference over the spread of the reference scores, their 99th minus
1st percentile, floored at ``SCORE_SCALE_FLOOR``; the largest over labels: scale-free, so it gates raw logits
and probabilities alike, and robust to a few outlying scores), ``score_spearman`` (Spearman of all pair
scores), and over reranking lists (the indices of one query's candidate pairs) ``top1_agreement`` and
``top3_agreement`` (overlap of the top one / three, ties within ``TIE_TOL`` count), averaged over lists and,
for a multi-label model, over labels; a list whose reference scores all tie is left out.

Strata (``strata``: one ``exporter.quality.probes.STRATA`` name per row, optional): every compare also
reports, per stratum, its worst case (``strata_summary``): ``n``, ``worst_text_index`` (the row of its worst
text in the probe set) and, for embedders and sparse encoders, ``cosine_min``, ``norm_rel_err_max`` and
``neighbour_agreement_at_10``; for cross-encoders (rows are pairs, each in its passage's stratum)
``score_max_abs_diff`` and ``score_spread_err_max`` (each pair's error over the whole set's reference spread).
Rule for the rank metric: a text's neighbours are searched among the whole probe set (ten nearest neighbours
inside a stratum of a dozen texts would measure nothing), and its agreement is attributed to its own stratum;
the stratum's value is the mean over its texts, recorded with its standard error over those texts
(``neighbour_agreement_at_10_se``). ``judge`` holds every stratum to the same thresholds, a stratum's nn@10 by
its lower confidence bound (``exporter.quality.judging``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from exporter.errors import FidelityError
from exporter.quality import parity_rank as rank
from exporter.quality.judging import Verdict, judge, to_dict, to_manifest  # noqa: F401 - re-exported
from exporter.quality.parity_gates import (  # noqa: F401 - re-exported: the gate's public names live in parity
    ALL_METRIC_NAMES,
    ALL_SCOPE,
    DEFAULT_THRESHOLDS,
    LATE_INTERACTION_THRESHOLDS,
    MANDATORY,
    METRIC_NAMES,
    SCORE_THRESHOLDS,
    SPARSE_THRESHOLDS,
    UPPER_BOUNDS,
    VARIANT_METRICS,
    LateInteractionThresholds,
    PrecisionClass,
    ScoreThresholds,
    SparseThresholds,
    Thresholds,
    check_threshold,
    defaults,
    parse_threshold_overrides,
    thresholds_for,
    thresholds_from_dict,
)
from exporter.quality.parity_rank import NN_MAX_QUERIES, SPEARMAN_MAX_TEXTS, TIE_TOL  # noqa: F401
from exporter.quality.probes import STRATA

_ZERO_NORM = 1e-12
# The least score spread ``score_spread_err_max`` divides by, in the units the model serves (logit or
# probability): a hundredth of one unit. Where the reference's middle 98% of scores spans less (a model that
# barely ranks, e.g. a random one whose logits all sit near zero), the error is judged against this absolute
# scale instead: fp32 rounding (~1e-7) is then 1e-5 of it, not a failure, while a real reranker's logits
# spread over several units and never meet the floor.
SCORE_SCALE_FLOOR = 0.01


# ------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class ParityMetrics:
    cosine_min: float
    cosine_mean: float
    cosine_p01: float
    max_abs_diff: float
    n: int
    neighbour_agreement_at_10: float | None
    spearman_pairwise: float | None
    norm_rel_err_max: float | None = None
    norm_rel_err_mean: float | None = None
    dot_rel_err_max: float | None = None
    neighbour_queries: int | None = None  # texts whose neighbours were compared
    spearman_pairs: int | None = None  # pairs whose similarity ranks were correlated
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why the reference gives it nothing
    strata: dict[str, dict] | None = None  # stratum -> its worst case (``strata_summary``)
    batch_cosine_min: float | None = None  # set by the gate (exporter.quality.batch_invariance), not by compare

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def strata_summary(
    strata: list[str] | None,
    worst: tuple[str, np.ndarray, bool],
    **per_row: tuple[np.ndarray, str | Callable[[np.ndarray], float | None]],
) -> dict[str, dict] | None:
    """Per stratum (in ``STRATA`` order, unknown labels last): ``n``, ``worst_text_index`` (the row where the
    ``worst`` metric, ``(name, values, higher_is_better)``, is worst) and each metric of ``per_row``
    (``name=(values per row, "min" | "max" | a function of the stratum's values)``, NaN rows left out; None
    when a stratum has none, or the function returns None). None when no strata were given."""
    if strata is None:
        return None
    labels = np.asarray(strata, dtype=object)
    name, values, higher_is_better = worst
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} stratum labels for {len(values)} rows")
    reduce: dict[str, Callable[[np.ndarray], float | None]] = {"min": np.min, "max": np.max}
    order = list(STRATA)  # the table's order (a reranker's pairs meet the strata in list order)
    out: dict[str, dict] = {}
    for stratum in sorted(dict.fromkeys(strata), key=lambda s: order.index(s) if s in order else len(order)):
        rows = np.flatnonzero(labels == stratum)
        sel = values[rows]
        entry: dict[str, Any] = {"n": int(len(rows))}
        entry[name] = float(sel.min() if higher_is_better else sel.max())
        entry["worst_text_index"] = int(rows[np.argmin(sel) if higher_is_better else np.argmax(sel)])
        for metric, (vals, how) in per_row.items():
            v = vals[rows]
            v = v[~np.isnan(v)]
            fn = reduce[how] if isinstance(how, str) else how
            value = fn(v) if len(v) else None
            entry[metric] = None if value is None else float(value)
        out[stratum] = entry
    return out


def _check_outputs(ref: np.ndarray, cand: np.ndarray, what: str) -> None:
    """FidelityError for mismatched shapes, no rows, or non-finite values (a broken variant)."""
    if ref.shape != cand.shape or ref.ndim != 2:
        raise FidelityError(
            f"candidate {what} have shape {tuple(cand.shape)}, the reference's have {tuple(ref.shape)}.",
            "The variant is broken (wrong output or pooling); rebuild it and check which output it serves.",
        )
    if ref.shape[0] == 0:
        raise FidelityError(f"no {what} to compare (0 texts).", "Use a probe set with at least one text.")
    for name, mat in (("reference", ref), ("candidate", cand)):
        bad = int((~np.isfinite(mat)).any(axis=1).sum())
        if bad:
            raise FidelityError(
                f"{name} {what} contain NaN or inf in {bad} of {mat.shape[0]} rows.",
                "The model produced non-finite output; rebuild the variant or check the reference model.",
            )


def _unit_rows(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows scaled to unit length (zero rows stay zero, no NaN), the zero-row mask and the norms."""
    norms = np.linalg.norm(mat, axis=1)
    zero = norms <= _ZERO_NORM
    unit = mat / np.where(zero, 1.0, norms)[:, None]
    unit[zero] = 0.0
    return unit, zero, norms


def _relative(err: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``err / scale``; where the scale is zero: 0 if the error is too, else 1."""
    zero = scale <= _ZERO_NORM
    return np.where(zero, (err > _ZERO_NORM).astype(np.float64), err / np.where(zero, 1.0, scale))


def compare(
    reference: np.ndarray, candidate: np.ndarray, *, k: int = 10, strata: list[str] | None = None
) -> ParityMetrics:
    """Fidelity metrics of ``candidate`` against ``reference`` (both ``(n, dim)``, rows aligned), and per
    stratum when ``strata`` labels the rows (module doc).

    Raises:
        FidelityError: shapes differ, a matrix is not 2-D or empty, or holds NaN/inf. A variant whose
            output has the wrong shape or is not finite is broken, not merely imprecise.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    _check_outputs(ref, cand, "embeddings")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = ref.shape[0]
    ref_u, ref_zero, ref_n = _unit_rows(ref)
    cand_u, cand_zero, cand_n = _unit_rows(cand)
    cos = np.clip(np.einsum("ij,ij->i", ref_u, cand_u), -1.0, 1.0)
    cos[ref_zero & cand_zero] = 1.0  # both zero: the variant reproduced the reference exactly
    norm_err = _relative(np.abs(cand_n - ref_n), ref_n)

    nn = rank.neighbour_agreement(ref_u, cand_u, k, rank.text_sample(n, rank.NN_MAX_QUERIES))
    rows = rank.text_sample(n, rank.SPEARMAN_MAX_TEXTS)
    pairs = rank.pair_values if len(rows) == n else (lambda m: rank.pair_values(m[rows]))  # no copy when all
    ref_sim, cand_sim = pairs(ref_u), pairs(cand_u)
    sp = rank.spearman(ref_sim, cand_sim, "pair similarities") if n >= 3 else rank.RankResult(None, None, 0)
    scale = pairs(ref_n[:, None])  # |r_i| |r_j|
    dot_err = _relative(np.abs(pairs(cand) - pairs(ref)), scale)
    skipped = {name: r.reason for name, r in (("neighbour_agreement_at_10", nn), ("spearman_pairwise", sp)) if r.reason}
    per_text = nn.per_item if nn.per_item is not None else np.full(n, np.nan)  # agreeing neighbours per text
    return ParityMetrics(
        cosine_min=float(cos.min()),
        cosine_mean=float(cos.mean()),
        cosine_p01=float(np.percentile(cos, 1)),
        max_abs_diff=float(max(np.abs(ref[s : s + 4096] - cand[s : s + 4096]).max() for s in range(0, n, 4096))),
        n=n,
        neighbour_agreement_at_10=nn.value,
        spearman_pairwise=sp.value,
        norm_rel_err_max=float(norm_err.max()),
        norm_rel_err_mean=float(norm_err.mean()),
        dot_rel_err_max=float(dot_err.max()) if len(dot_err) else None,
        neighbour_queries=nn.used,
        spearman_pairs=int(len(ref_sim)),
        skipped=skipped,
        strata=strata_summary(
            strata,
            ("cosine_min", cos, True),
            norm_rel_err_max=(norm_err, "max"),
            # hits over (queries x k), as the whole set's: exactly 0.95 when 95 of 100 neighbours agree
            neighbour_agreement_at_10=(per_text, lambda hits: int(hits.sum()) / (len(hits) * min(k, n - 1))),
            neighbour_agreement_at_10_se=(per_text, lambda hits: rank.standard_error(hits / min(k, n - 1))),
        ),
    )


def _top_k_agreement(ref: np.ndarray, cand: np.ndarray, k: int, active: np.ndarray | None = None) -> np.ndarray:
    """Per row: the fraction of the candidate's top-``k`` columns that are in the reference's top-``k``.

    ``active`` (bool, same shape) limits the reference's top to its active entries (``k`` shrinks to their
    count per row); a row with no active entry agrees only if the candidate has none either. A column
    tying the reference's k-th value within ``TIE_TOL`` counts as agreeing.
    """
    n, width = ref.shape
    ks = np.full(n, min(k, width)) if active is None else np.minimum(k, active.sum(axis=1))
    out = np.empty(n)
    for i in range(n):
        ki = int(ks[i])
        if ki == 0:
            out[i] = 1.0 if not (cand[i] > 0).any() else 0.0
            continue
        ref_kth = np.partition(ref[i], width - ki)[width - ki]
        cand_top = np.argpartition(cand[i], width - ki)[width - ki :]
        hit = ref[i, cand_top] >= ref_kth - TIE_TOL
        if active is not None:
            hit &= active[i, cand_top]
        out[i] = hit.sum() / ki
    return out


@dataclass(frozen=True)
class SparseMetrics(ParityMetrics):
    """``ParityMetrics`` of the vocabulary-sized vectors, plus their top terms and weights."""

    top_terms_overlap_at_10: float | None = None
    weights_rel_l2_max: float | None = None
    active_terms_reference: float | None = None  # mean number of non-zero terms per text
    active_terms_candidate: float | None = None


def compare_sparse(
    reference: np.ndarray, candidate: np.ndarray, *, k: int = 10, strata: list[str] | None = None
) -> SparseMetrics:
    """``compare`` on dense ``(n, vocab)`` sparse-encoder outputs, plus the top-term overlap and weight error.

    Raises:
        FidelityError: as ``compare``.
    """
    base = compare(reference, candidate, strata=strata)
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    active = ref > 0
    err = np.linalg.norm(cand - ref, axis=1)
    scale = np.maximum(np.linalg.norm(ref, axis=1), np.linalg.norm(cand, axis=1))
    return SparseMetrics(
        **asdict(base),
        top_terms_overlap_at_10=float(_top_k_agreement(ref, cand, k, active).mean()),
        weights_rel_l2_max=float(_relative(err, scale).max()),
        active_terms_reference=float(active.sum(axis=1).mean()),
        active_terms_candidate=float((cand > 0).sum(axis=1).mean()),
    )


@dataclass(frozen=True)
class ScoreMetrics:
    """Fidelity of a cross-encoder's scores over (query, passage) pairs and reranking lists."""

    score_max_abs_diff: float
    score_spearman: float | None
    top1_agreement: float | None
    top3_agreement: float | None
    n: int  # pairs
    n_lists: int
    score_spread_err_max: float | None = None
    score_spread: float | None = None  # the smallest per-label p99 - p1 of the reference scores (before the floor)
    skipped: dict[str, str] = field(default_factory=dict)
    strata: dict[str, dict] | None = None  # stratum -> its worst case (``strata_summary``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _list_agreement(ref: np.ndarray, cand: np.ndarray, lists: list[list[int]], k: int) -> float | None:
    """Mean top-``k`` agreement over the lists (and labels) whose reference scores do not all tie."""
    per_list = []
    for idx in (np.asarray(x, dtype=int) for x in lists):
        r = ref[idx].T  # (labels, list size)
        keep = (r.max(axis=1) - r.min(axis=1)) > TIE_TOL if r.shape[1] > 1 else np.zeros(len(r), bool)
        if keep.any():
            per_list.append(_top_k_agreement(r[keep], cand[idx].T[keep], k).mean())
    return float(np.mean(per_list)) if per_list else None


def compare_scores(
    reference: np.ndarray, candidate: np.ndarray, lists: list[list[int]], strata: list[str] | None = None
) -> ScoreMetrics:
    """Score fidelity: ``reference``/``candidate`` are ``(n_pairs,)`` or ``(n_pairs, labels)``; ``lists``
    holds, per query, the indices of its candidate pairs (the reranking lists); ``strata`` one label per pair.

    Raises:
        FidelityError: shapes differ, no pairs, or NaN/inf scores.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    ref = ref.reshape(ref.shape[0], -1) if ref.ndim else ref.reshape(1, 1)
    cand = cand.reshape(cand.shape[0], -1) if cand.ndim else cand.reshape(1, 1)
    _check_outputs(ref, cand, "scores")
    flat_r, flat_c = ref.ravel(), cand.ravel()
    abs_err = np.abs(ref - cand)  # (pairs, labels)
    err = abs_err.max(axis=0)  # per label
    spread = np.percentile(ref, 99, axis=0) - np.percentile(ref, 1, axis=0)
    pair_diff = abs_err.max(axis=1)  # per pair, over labels (for the strata)
    pair_spread_err = (abs_err / np.maximum(spread, SCORE_SCALE_FLOOR)).max(axis=1)
    sp = rank.spearman(flat_r, flat_c, "scores") if flat_r.size >= 3 else rank.RankResult(None, None, flat_r.size)
    tops = {k: _list_agreement(ref, cand, lists, k) for k in (1, 3)}
    skipped = {"score_spearman": sp.reason} if sp.reason else {}
    tie = f"the reference scores all tie within every reranking list (within {TIE_TOL:g}): no ranking to compare"
    skipped |= {f"top{k}_agreement": tie for k, v in tops.items() if v is None and any(len(x) > 1 for x in lists)}
    return ScoreMetrics(
        score_max_abs_diff=float(err.max()),
        score_spearman=sp.value,
        top1_agreement=tops[1],
        top3_agreement=tops[3],
        n=int(ref.shape[0]),
        n_lists=len(lists),
        score_spread_err_max=float((err / np.maximum(spread, SCORE_SCALE_FLOOR)).max()),
        score_spread=float(spread.min()),
        skipped=skipped,
        strata=strata_summary(
            strata,
            ("score_max_abs_diff", pair_diff, False),
            score_spread_err_max=(pair_spread_err, "max"),
        ),
    )
