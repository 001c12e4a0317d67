"""Late-interaction (ColBERT) fidelity, pure numpy: per-token cosine and the MaxSim scores and rankings of
query/document pairs (``exporter.quality.kind_metrics`` calls it; the thresholds are
``exporter.quality.parity_gates.LATE_INTERACTION_THRESHOLDS``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from exporter.errors import FidelityError
from exporter.quality.parity import _check_outputs, compare_scores, strata_summary


@dataclass(frozen=True)
class LateInteractionMetrics:
    """Fidelity of a ColBERT model's token vectors and of the MaxSim scores they give query/document pairs."""

    token_cosine_min: float
    token_cosine_mean: float
    maxsim_spearman: float | None
    maxsim_spread_err_max: float | None
    top1_agreement: float | None
    top3_agreement: float | None
    n: int  # texts (queries + documents)
    n_tokens: int  # token vectors compared
    n_pairs: int
    n_lists: int
    skipped: dict[str, str] = field(default_factory=dict)
    strata: dict[str, dict] | None = None  # stratum -> its worst case (``strata_summary``), per text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_rows(vectors: np.ndarray) -> np.ndarray:
    """Which rows of ``(texts, width, dim)`` padded token vectors are tokens (a served vector has norm 1,
    padding is 0): a ``(texts, width)`` bool mask."""
    return np.linalg.norm(vectors, axis=-1) > 0.5


def maxsim(query: np.ndarray, document: np.ndarray) -> float:
    """ColBERT's late-interaction score: the sum over query tokens of the best dot product with a document
    token (the rows are token vectors; padding rows removed)."""
    if not len(query) or not len(document):
        return 0.0
    return float((query @ document.T).max(axis=1).sum())


def compare_late_interaction(
    reference: np.ndarray,
    candidate: np.ndarray,
    pairs: list[tuple[int, int]],
    lists: list[list[int]],
    strata: list[str] | None = None,
) -> LateInteractionMetrics:
    """``reference`` / ``candidate`` are ``(texts, width, dim)`` token vectors, zero rows where a text has
    no token; ``pairs`` are (query row, document row) and ``lists`` the pair indices of each query.

    A token one side serves and the other does not has cosine 0 (a tokenisation or skiplist difference is a
    failure, not a shape error); ``strata`` labels the texts (each stratum's worst text by its token cosine).
    Raises FidelityError for mismatched shapes or non-finite values."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 3:
        raise FidelityError(
            f"candidate token vectors have shape {tuple(cand.shape)}, the reference's have {tuple(ref.shape)}.",
            "The variant is broken (wrong output or tokenisation); rebuild it.",
        )
    _check_outputs(ref.reshape(len(ref), -1), cand.reshape(len(cand), -1), "token vectors")
    r_keep, c_keep = token_rows(ref), token_rows(cand)
    either = r_keep | c_keep
    dots = (ref * cand).sum(axis=-1)
    norms = np.linalg.norm(ref, axis=-1) * np.linalg.norm(cand, axis=-1)
    per_token = np.where(r_keep & c_keep, dots / np.maximum(norms, 1e-12), 0.0)
    per_text = np.where(either, per_token, np.inf).min(axis=1)
    per_text[~either.any(axis=1)] = 1.0  # no token on either side: nothing served, nothing lost
    cos = per_token[either]
    ref_scores = np.asarray([maxsim(ref[q][r_keep[q]], ref[d][r_keep[d]]) for q, d in pairs])
    cand_scores = np.asarray([maxsim(cand[q][c_keep[q]], cand[d][c_keep[d]]) for q, d in pairs])
    scores = compare_scores(ref_scores, cand_scores, lists) if pairs else None
    renamed = {"score_spearman": "maxsim_spearman", "score_spread_err_max": "maxsim_spread_err_max"}
    skipped = {renamed.get(k, k): v for k, v in (scores.skipped if scores else {}).items()}
    return LateInteractionMetrics(
        token_cosine_min=float(cos.min()) if cos.size else 1.0,
        token_cosine_mean=float(cos.mean()) if cos.size else 1.0,
        maxsim_spearman=scores.score_spearman if scores else None,
        maxsim_spread_err_max=scores.score_spread_err_max if scores else None,
        top1_agreement=scores.top1_agreement if scores else None,
        top3_agreement=scores.top3_agreement if scores else None,
        n=int(ref.shape[0]),
        n_tokens=int(either.sum()),
        n_pairs=len(pairs),
        n_lists=len(lists),
        skipped=skipped,
        strata=strata_summary(strata, ("token_cosine_min", per_text, True)),
    )
