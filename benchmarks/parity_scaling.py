"""Time and peak memory of the fidelity gate's metrics (``exporter.quality.parity.compare``) by probe-set size.

Each size runs in a fresh process on synthetic clustered unit embeddings (``--dim``, default 384 as
all-MiniLM-L6-v2) and a candidate with int8-like noise, so the numbers are the metrics' own cost (the
model runs are not included). Reported per size: wall time of ``compare``, the peak of numpy/Python
allocations during it (tracemalloc), the process's peak RSS (getrusage, includes the inputs), and the sample
sizes the gate recorded (neighbour queries, Spearman pairs).

    python benchmarks/parity_scaling.py                 # 1k, 10k, 50k texts
    python benchmarks/parity_scaling.py --sizes 1000,10000 --dim 768
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tracemalloc

from _common import machine, stopwatch


def _embeddings(n: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 20), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))
    ref = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cand = (ref + rng.normal(scale=0.005, size=ref.shape)).astype(np.float32)
    return ref, cand


def measure(n: int, dim: int) -> dict:
    """One size, in this process: time and memory of ``parity.compare``."""
    from exporter.quality import parity

    ref, cand = _embeddings(n, dim)
    tracemalloc.start()
    with stopwatch() as t:
        m = parity.compare(ref, cand)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "n": n,
        "dim": dim,
        "seconds": round(t.seconds, 2),
        "peak_alloc_mb": round(peak / 2**20, 1),
        "inputs_mb": round((ref.nbytes + cand.nbytes) / 2**20, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "neighbour_queries": m.neighbour_queries,
        "spearman_pairs": m.spearman_pairs,
        "nn@10": round(m.neighbour_agreement_at_10, 4),
        "spearman": round(m.spearman_pairwise, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.dim)))
        return
    from exporter.quality import parity_rank as rank

    print(machine())
    print(
        f"caps: NN_MAX_QUERIES={rank.NN_MAX_QUERIES}, SPEARMAN_MAX_TEXTS={rank.SPEARMAN_MAX_TEXTS}, "
        f"BLOCK_ELEMENTS={rank.BLOCK_ELEMENTS} ({rank.BLOCK_ELEMENTS * 8 / 2**20:.0f} MB per block)"
    )
    print(
        f"{'n':>7} {'dim':>5} {'seconds':>8} {'peak alloc MB':>14} {'inputs MB':>10} {'max RSS MB':>11} "
        f"{'queries':>8} {'pairs':>8} {'nn@10':>7} {'spearman':>9}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--dim", str(args.dim)], capture_output=True, text=True
        )
        if proc.returncode:
            print(f"{n:>7} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{r['n']:>7} {r['dim']:>5} {r['seconds']:>8} {r['peak_alloc_mb']:>14} {r['inputs_mb']:>10} "
            f"{r['max_rss_mb']:>11} {r['neighbour_queries']:>8} {r['spearman_pairs']:>8} {r['nn@10']:>7} "
            f"{r['spearman']:>9}"
        )
    print(
        "bound: time O(min(n, NN_MAX_QUERIES) * n * dim); memory O(n * dim) for the inputs and their float64 "
        "unit copies + O(BLOCK_ELEMENTS + SPEARMAN_MAX_TEXTS^2) for the blocks and the pair sample."
    )


if __name__ == "__main__":
    main()
