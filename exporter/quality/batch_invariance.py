"""Batch invariance: does a text's output depend on what else is in its batch?

A server batches differently from the gate: one request alone, or queued with long neighbours that pad the
batch, at whatever batch size it runs. A variant whose output for one text moves with its batch mates
(dynamic int8 computes its activation scales per batch, padding included; some kernels pick another
algorithm per shape) serves numbers the gate never saw. ``measure`` takes a small subset of the probe
inputs (``SUBSET``, spread over the length order of the shortest ``SUBSET_SPAN`` of them: short and long
texts, while the very longest, which only cost time here, serve as neighbours) and compares each one's
output across batch compositions (``compositions``):

- ``alone``: each input in a batch of one (bench batch size 1, a single request);
- ``long neighbours``: the ``NEIGHBOUR_BATCH`` shortest subset inputs in one batch with the longest other
  probe input, so they are padded to the longest input the probe set has;
- ``bench batch N``: the subset sorted longest first and cut into batches of N, for each bench batch size
  between 1 and the gate's own batch (``bench.DEFAULT_BATCH_SIZES``);
- ``gate batches``: the gate's own run over the whole probe set (batches of up to ``kinds.PARITY_BATCH``
  similar-length inputs, as bench's largest batch size and a length-sorted server queue form them); free,
  it is the run the gate compares with the reference.

``batch_cosine_min`` is the worst agreement: over the subset, the minimum cosine between one input's
outputs in any two compositions (rows flattened: an embedding, a sparse vector, a score row). Two zero rows
agree (cosine 1); a zero row against a non-zero one has cosine 0. The added cost is the subset's batches:
on the default probe set about a quarter of the tokens of one probe run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SUBSET = 16  # probe inputs measured in every composition
SUBSET_SPAN = 0.9  # the subset is spread over this shortest fraction of the probe inputs
NEIGHBOUR_BATCH = 4  # shortest subset inputs padded with the longest probe input
GATE_BATCHES = "gate batches"
SUBSET_RULE = {"subset": SUBSET, "span": SUBSET_SPAN, "neighbours": NEIGHBOUR_BATCH}  # what a cached result depends on


@dataclass(frozen=True)
class BatchInvariance:
    cosine_min: float
    texts: int  # subset size
    compositions: list[str]
    worst: dict[str, Any] = field(default_factory=dict)  # probe index and the two compositions of the minimum
    per_composition: dict[str, float] = field(default_factory=dict)  # min cosine of each against ``alone``

    def to_dict(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "compositions": list(self.compositions),
            "cosine_min": self.cosine_min,
            "against_alone": dict(self.per_composition),
            "worst": dict(self.worst),
        }


def _size(item) -> int:
    return len(item) if isinstance(item, str) else sum(len(str(part)) for part in item)


def subset(inputs: list, n: int = SUBSET) -> list[int]:
    """Indices of ``n`` inputs spread evenly over the length order of the shortest ``SUBSET_SPAN`` of them
    (the longest of those and the shortest included)."""
    order = sorted(range(len(inputs)), key=lambda i: (-_size(inputs[i]), i))
    order = order[len(order) - max(1, min(len(order), round(len(order) * SUBSET_SPAN))) :] if len(order) > n else order
    if len(order) <= n:
        return order
    picks = [order[round(j * (len(order) - 1) / (n - 1))] for j in range(n)]
    return list(dict.fromkeys(picks))


def compositions(inputs: list, chosen: list[int], batch_sizes, gate_batch: int) -> dict[str, list[list[int]]]:
    """Composition name -> batches of probe indices to run (the gate's own batches are not run again)."""
    taken = set(chosen)
    longest = sorted((i for i in range(len(inputs)) if i not in taken), key=lambda i: (-_size(inputs[i]), i))[:1]
    by_length = sorted(chosen, key=lambda i: (-_size(inputs[i]), i))
    out = {"alone": [[i] for i in chosen]}
    if longest:
        out["long neighbours"] = [by_length[-NEIGHBOUR_BATCH:] + longest]
    for b in sorted({b for b in batch_sizes if 1 < b < gate_batch}):
        out[f"bench batch {b}"] = [by_length[s : s + b] for s in range(0, len(by_length), b)]
    return out


def measure(outputs: Callable[[list], Any], inputs: list, batch_sizes, gate_run, gate_batch: int) -> BatchInvariance:
    """The batch invariance of ``outputs`` (a batch of inputs -> one output row each, run as one batch);
    ``gate_run``: its rows for every probe input from the gate's own run (in batches of ``gate_batch``)."""
    import numpy as np

    from exporter.quality.parity import _unit_rows

    def _unit(rows):  # unit rows (zero rows stay zero) and the zero-row mask
        unit, zero, _ = _unit_rows(np.asarray(rows, dtype=np.float64).reshape(len(rows), -1))
        return unit, zero

    chosen = subset(inputs)
    row_of = {i: r for r, i in enumerate(chosen)}
    gate_rows = np.asarray(gate_run)
    runs: dict[str, tuple[list[int], Any, Any]] = {}  # name -> (subset rows it covers, their unit outputs, zero mask)
    for name, batches in compositions(inputs, chosen, batch_sizes, gate_batch).items():
        got: dict[int, Any] = {}
        for batch in batches:
            for i, row in zip(batch, np.asarray(outputs([inputs[i] for i in batch])), strict=True):
                if i in row_of:
                    got[row_of[i]] = row
        rows = sorted(got)
        runs[name] = (rows, *_unit(np.stack([got[r] for r in rows])))
    runs[GATE_BATCHES] = (list(range(len(chosen))), *_unit(gate_rows[chosen]))
    names = list(runs)
    worst: tuple[float, dict] = (1.0, {})
    against_alone = {}
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            (ra, ua, za), (rb, ub, zb) = runs[names[a]], runs[names[b]]
            common = sorted(set(ra) & set(rb))
            ia, ib = [ra.index(r) for r in common], [rb.index(r) for r in common]
            cos = np.clip(np.einsum("ij,ij->i", ua[ia], ub[ib]), -1.0, 1.0)
            cos[za[ia] & zb[ib]] = 1.0
            k = int(np.argmin(cos))
            if names[a] == "alone":
                against_alone[names[b]] = float(cos[k])
            if not worst[1] or cos[k] < worst[0]:
                worst = (float(cos[k]), {"probe_index": chosen[common[k]], "between": [names[a], names[b]]})
    return BatchInvariance(
        cosine_min=worst[0], texts=len(chosen), compositions=names, worst=worst[1], per_composition=against_alone
    )
