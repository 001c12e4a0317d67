"""How steady `exporter bench` is: one timed pass per round against passes repeated to a minimum time.

On an artifact that holds ``openvino-bf16`` and ``openvino-qint8`` (e.g. ``export --variants best`` on a CPU with
bf16 and int8 units), runs ``exporter.quality.bench.bench`` as ``--variants best`` does (batch 32, 128 texts, 3
rounds) several times, alternating two timings of a pass in one process: the bench's own (each round's sample
is one pass) and a tried alternative, ``repeated`` (a pass shorter than ``MIN_SECONDS`` is repeated until its
repeats reach it, the sample their median; put in place of ``bench._time_one`` for its runs only). The
alternative was measured no steadier and was not kept (results/bench_steadiness-20261208T031509Z).

For each bench run it prints each runner's per-round throughputs, their spread ((max - min) / median) and the
bf16 / all-int8 ratio that ``best`` compares; then, per setting, the median spread and the range of that ratio
across runs. The output names the CPU and is written to ``benchmarks/results/bench_steadiness-<UTC time>.txt``.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_steadiness.py ARTIFACT [--runs 3] [--hf-home DIR]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from _common import load_average, machine, offline_hub, stopwatch, write_results

PAIR = ("openvino-bf16", "openvino-qint8")
MIN_SECONDS = 1.0


def repeated(runner, texts: list[str], batch_size: int, latencies: list[float]) -> float:
    """The tried timing (batch sizes above 1): repeat the pass until its repeats add up to ``MIN_SECONDS``;
    texts/s is their median."""
    rates: list[float] = []
    spent = 0.0
    while not rates or spent < MIN_SECONDS:
        with stopwatch() as t:
            runner.encode(texts, batch_size)
        rates.append(len(texts) / t.seconds)
        spent += t.seconds
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--runs", type=int, default=3, help="bench runs per setting, alternated")
    parser.add_argument("--hf-home", default=None)
    args = parser.parse_args()
    offline_hub(args)
    from exporter.quality import bench, best

    settings = {"one pass": bench._time_one, f"repeated to {MIN_SECONDS:g} s": repeated}
    lines = [machine(), f"artifact {args.artifact}; batch 32, {best.BENCH_TEXTS} texts, {best.BENCH_ROUNDS} rounds"]
    print("\n".join(lines), flush=True)
    spreads: dict[str, list[float]] = {k: [] for k in settings}
    ratios: dict[str, list[float]] = {k: [] for k in settings}
    for run in range(args.runs):
        for label, timing in settings.items():
            bench._time_one = timing  # measure() calls it through the module
            result = bench.bench(
                args.artifact, list(PAIR), batch_sizes=(32,), rounds=best.BENCH_ROUNDS, max_texts=best.BENCH_TEXTS
            )
            rows = {name: s["throughput_rounds"]["32"] for name, s in result.runners.items()}
            for name, rounds in rows.items():
                spread = (max(rounds) - min(rounds)) / statistics.median(rounds)
                spreads[label].append(spread)
                shown = ", ".join(f"{r:.0f}" for r in rounds)
                lines.append(f"run {run + 1} {label:<18} {name:<16} rounds [{shown}] texts/s, spread {spread:.0%}")
            ratio = result.runners[PAIR[0]]["throughput"]["32"] / result.runners[PAIR[1]]["throughput"]["32"]
            ratios[label].append(ratio)
            lines.append(f"run {run + 1} {label:<18} {PAIR[0]} / {PAIR[1]} = {ratio:.2f} (load {load_average()})")
            print("\n".join(lines[-len(rows) - 1 :]), flush=True)
    lines.append("")
    for label in settings:
        lines.append(
            f"{label:<18} median round spread {statistics.median(spreads[label]):.0%}; "
            f"{PAIR[0]} / {PAIR[1]} across runs {min(ratios[label]):.2f}-{max(ratios[label]):.2f}"
        )
    print("\n".join(lines[-len(settings) :]))
    write_results("bench_steadiness", lines)


if __name__ == "__main__":
    main()
