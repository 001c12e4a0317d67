"""bge-m3 fidelity, pure numpy: each of the three heads judged by its own metrics, from the packed outputs
``exporter.quality.kind_metrics.m3_outputs`` writes (row 0 dense; rows 1.. the ColBERT vectors, and the lexical
weights as (token id, weight) in the last two columns). The thresholds are
``exporter.quality.parity_gates.M3_THRESHOLDS``.

- dense: ``exporter.quality.parity.compare`` on the dense vectors (``cosine_min``, ``neighbour_agreement_at_10``...);
- sparse (lexical weights, ``{token id: weight}`` per text): ``top_terms_overlap_at_10`` (the candidate's ten
  highest-weighted token ids among the reference's ten, fewer when the reference has fewer; ties within
  ``TIE_TOL`` count) and ``lexical_spread_err_max``: the largest weight difference over the texts' token ids
  (a token one side leaves out has weight 0) divided by the spread of the reference weights (99th minus 1st
  percentile of every reference weight in the probe set, floored at ``LEXICAL_SPREAD_FLOOR`` of the largest);
- ColBERT: ``exporter.quality.parity_late.compare_late_interaction`` on the ColBERT vectors and the probe's
  query/document pairs (``token_cosine_min``, ``maxsim_spearman``, ``maxsim_spread_err_max``, top-1 / top-3).

Strata: each stratum's worst text by dense cosine, with its worst token cosine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from exporter.errors import FidelityError
from exporter.quality import parity, parity_late
from exporter.quality.parity import TIE_TOL

LEXICAL_SPREAD_FLOOR = 1e-3  # of the largest reference weight: a model whose weights barely vary is judged on scale


@dataclass(frozen=True)
class M3Metrics:
    """Fidelity of bge-m3's dense vectors, lexical weights and ColBERT vectors."""

    # dense
    cosine_min: float
    cosine_mean: float
    neighbour_agreement_at_10: float | None
    spearman_pairwise: float | None
    norm_rel_err_max: float | None
    # sparse
    top_terms_overlap_at_10: float
    lexical_spread_err_max: float
    lexical_spread: float
    lexical_terms_reference: float  # mean token ids with a weight per text
    lexical_terms_candidate: float
    # colbert
    token_cosine_min: float
    token_cosine_mean: float
    maxsim_spearman: float | None
    maxsim_spread_err_max: float | None
    top1_agreement: float | None
    top3_agreement: float | None
    n: int  # texts
    n_tokens: int  # ColBERT vectors compared
    n_pairs: int
    n_lists: int
    gated_tokens: int  # per text, at most this many ColBERT vectors / lexical weights compared
    skipped: dict[str, str] = field(default_factory=dict)
    strata: dict[str, dict] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lexical(packed: np.ndarray) -> list[dict[int, float]]:
    ids, weights = packed[:, 1:, -2], packed[:, 1:, -1]
    return [{int(t): float(w) for t, w in zip(ids[i], weights[i], strict=True) if w > 0} for i in range(len(packed))]


def _top_overlap(ref: dict[int, float], cand: dict[int, float], k: int = 10) -> float:
    """The fraction of the candidate's top-``k`` ids among the reference's top-``k`` (ties count)."""
    ki = min(k, len(ref))
    if ki == 0:
        return 1.0 if not cand else 0.0
    kth = sorted(ref.values(), reverse=True)[ki - 1]
    top = sorted(cand, key=lambda t: -cand[t])[:ki]
    return sum(ref.get(t, 0.0) >= kth - TIE_TOL for t in top) / ki


def compare_m3(
    reference: np.ndarray,
    candidate: np.ndarray,
    pairs: list[tuple[int, int]],
    lists: list[list[int]],
    strata: list[str] | None = None,
) -> M3Metrics:
    """Metrics of packed ``(texts, 1 + width, columns)`` outputs (module doc); ``pairs`` are (query text,
    document text) rows and ``lists`` the pair indices of each query. FidelityError for mismatched shapes or
    non-finite values."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 3 or ref.shape[1] < 2 or ref.shape[2] < 3:
        raise FidelityError(
            f"candidate bge-m3 outputs have shape {tuple(cand.shape)}, the reference's {tuple(ref.shape)}.",
            "The variant is broken (wrong outputs or tokenisation); rebuild it.",
        )
    dense = parity.compare(ref[:, 0, :], cand[:, 0, :], strata=strata)
    late = parity_late.compare_late_interaction(ref[:, 1:, :-2], cand[:, 1:, :-2], pairs, lists, strata)
    r_lex, c_lex = _lexical(ref), _lexical(cand)
    all_ref = np.asarray([w for d in r_lex for w in d.values()], dtype=np.float64)
    top = float(all_ref.max()) if all_ref.size else 0.0
    spread = float(np.percentile(all_ref, 99) - np.percentile(all_ref, 1)) if all_ref.size else 0.0
    scale = max(spread, LEXICAL_SPREAD_FLOOR * top, 1e-12)
    pairs_lex = list(zip(r_lex, c_lex, strict=True))
    errs = [max((abs(r.get(t, 0.0) - c.get(t, 0.0)) for t in set(r) | set(c)), default=0.0) for r, c in pairs_lex]
    overlap = [_top_overlap(r, c) for r, c in pairs_lex]
    skipped = {**dense.skipped, **late.skipped}
    return M3Metrics(
        cosine_min=dense.cosine_min,
        cosine_mean=dense.cosine_mean,
        neighbour_agreement_at_10=dense.neighbour_agreement_at_10,
        spearman_pairwise=dense.spearman_pairwise,
        norm_rel_err_max=dense.norm_rel_err_max,
        top_terms_overlap_at_10=float(np.mean(overlap)),
        lexical_spread_err_max=float(max(errs, default=0.0) / scale),
        lexical_spread=spread,
        lexical_terms_reference=float(np.mean([len(d) for d in r_lex])),
        lexical_terms_candidate=float(np.mean([len(d) for d in c_lex])),
        token_cosine_min=late.token_cosine_min,
        token_cosine_mean=late.token_cosine_mean,
        maxsim_spearman=late.maxsim_spearman,
        maxsim_spread_err_max=late.maxsim_spread_err_max,
        top1_agreement=late.top1_agreement,
        top3_agreement=late.top3_agreement,
        n=int(ref.shape[0]),
        n_tokens=late.n_tokens,
        n_pairs=late.n_pairs,
        n_lists=late.n_lists,
        gated_tokens=int(ref.shape[1] - 1),
        skipped=skipped,
        strata=_strata(dense.strata, late.strata),
    )


def _strata(dense: dict[str, dict] | None, late: dict[str, dict] | None) -> dict[str, dict] | None:
    """Each stratum's dense worst case (its worst text by dense cosine) with its worst ColBERT token cosine."""
    if dense is None or late is None:
        return None
    return {name: {**entry, "token_cosine_min": late[name]["token_cosine_min"]} for name, entry in dense.items()}
