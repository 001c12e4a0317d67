"""Rank metrics of the fidelity gate in bounded memory and time, defined on degenerate input.

Used by ``exporter.quality.parity``; pure numpy. Two ideas:

- **Bounded cost.** Nothing here builds an ``n x n`` matrix. Nearest neighbours are searched blockwise
  (``_block_rows`` query rows against all ``n`` texts at a time, at most ``BLOCK_ELEMENTS`` similarities per
  block) for at most ``NN_MAX_QUERIES`` query texts (a seeded sample when ``n`` is larger; their neighbours
  are still searched among all ``n``). Spearman runs on all pairs of the texts while there are at most
  ``SPEARMAN_MAX_TEXTS``, else on all pairs of a seeded sample of that many texts (499,500 pairs).
  Cost: ``O(min(n, NN_MAX_QUERIES) * n * dim)`` time and ``O(n * dim + BLOCK_ELEMENTS)`` memory.
- **No false verdicts on degenerate input.** Values within ``TIE_TOL`` of each other are ties (chained:
  sorted values whose gaps are all within the tolerance form one tie group, ranked at their average).
  A metric whose *reference* side carries no ordering (every pair similarity ties; a query text whose
  similarities to all others tie, e.g. a probe set of one text repeated) is not computed: the caller gets
  ``None`` and the reason, and records it as skipped. The decision depends on the reference only, so a
  broken variant (constant output, zero vectors) can never make a metric skip itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TIE_TOL = 1e-6  # similarities closer than this are ties (fp32 rounding of a cosine is ~1e-7)
NN_MAX_QUERIES = 2000  # texts whose 10 nearest neighbours are compared (all n when n is smaller)
SPEARMAN_MAX_TEXTS = 1000  # Spearman over all pairs of at most this many texts (a seeded sample when more)
BLOCK_ELEMENTS = 4_000_000  # similarities held per block (32 MB in float64)
SEED = 0  # the sample of queries and pairs is the same on every run


@dataclass(frozen=True)
class RankResult:
    """A rank metric's value (None: not computed), why it was not, and how many items it used."""

    value: float | None
    reason: str | None
    used: int  # queries (neighbours) or pairs (Spearman) the value is computed over
    per_item: np.ndarray | None = None  # neighbours: each text's agreeing neighbours (NaN: not a query / no order)


def _block_rows(n: int, width: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(1, n, width))


def tie_ranks(x: np.ndarray, tol: float = TIE_TOL) -> np.ndarray:
    """Ranks 1..n; values chained within ``tol`` of each other share their average rank."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    bounds = np.flatnonzero(np.diff(sx) > tol) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(x)]))
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(ref: np.ndarray, cand: np.ndarray, what: str = "values", tol: float = TIE_TOL) -> RankResult:
    """Spearman correlation of ``cand`` with ``ref`` (tie-tolerant ranks); skipped if ``ref`` all ties."""
    n = len(ref)
    if n < 2:
        return RankResult(None, None, n)  # too few to rank: the caller's gate fails, it is not skipped
    a = tie_ranks(np.asarray(ref, dtype=np.float64), tol)
    b = tie_ranks(np.asarray(cand, dtype=np.float64), tol)
    a -= a.mean()
    b -= b.mean()
    va, vb = float(a @ a), float(b @ b)
    if va == 0.0:
        return RankResult(None, f"the reference's {n} {what} all tie (within {tol:g}): no ranking to compare", n)
    if vb == 0.0:  # the candidate lost the ordering the reference has
        return RankResult(0.0, None, n)
    return RankResult(float(np.clip((a @ b) / math.sqrt(va * vb), -1.0, 1.0)), None, n)


def text_sample(n: int, cap: int, seed: int = SEED) -> np.ndarray:
    """Row indices: all ``n`` when ``n <= cap``, else a seeded sample of ``cap`` (sorted)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def standard_error(values: np.ndarray) -> float | None:
    """The standard error of ``values``' mean (sample standard deviation over the square root of their
    count); None for fewer than two values."""
    if len(values) < 2:
        return None
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def pair_values(mat: np.ndarray) -> np.ndarray:
    """``mat[i] . mat[j]`` for all pairs ``i < j`` of rows (row-major order)."""
    return (mat @ mat.T)[np.triu_indices(mat.shape[0], k=1)]


def neighbour_agreement(
    ref_u: np.ndarray, cand_u: np.ndarray, k: int, queries: np.ndarray, tol: float = TIE_TOL
) -> RankResult:
    """Mean fraction of each query's ``k`` nearest candidate neighbours (among all other texts) that are
    among its ``k`` nearest reference neighbours; a neighbour tying the reference's k-th within ``tol``
    agrees. Rows are unit vectors (zero rows allowed). A query whose reference similarities to all other
    texts tie has no neighbour order and is left out; if every query is, the metric is skipped."""
    n = ref_u.shape[0]
    if n < 2:
        return RankResult(None, None, 0)
    k = min(k, n - 1)
    hits, used = 0, 0
    per_item = np.full(n, np.nan)
    step = _block_rows(n, 1)  # query rows per block: at most BLOCK_ELEMENTS similarities per matrix
    for s in range(0, len(queries), step):
        q = queries[s : s + step]
        rows = np.arange(len(q))
        ref_s = ref_u[q] @ ref_u.T
        cand_s = cand_u[q] @ cand_u.T
        ref_s[rows, q] = -np.inf  # a text is not its own neighbour
        cand_s[rows, q] = -np.inf
        ref_kth = np.partition(ref_s, n - k, axis=1)[:, n - k]
        top_ref = ref_s.max(axis=1)
        ref_s[rows, q] = np.inf
        informative = (top_ref - ref_s.min(axis=1)) > tol
        ref_s[rows, q] = -np.inf
        cand_top = np.argpartition(cand_s, n - k, axis=1)[:, n - k :]
        agree = np.take_along_axis(ref_s, cand_top, axis=1) >= (ref_kth - tol)[:, None]
        per_item[q[informative]] = agree[informative].sum(axis=1)
        hits += int(agree[informative].sum())
        used += int(informative.sum())
    if used == 0:
        reason = f"every text's reference similarities to the other {n - 1} tie (within {tol:g}): no neighbour order"
        return RankResult(None, reason, 0, per_item)
    return RankResult(hits / (used * k), None, used, per_item)
