"""Speed of each variant against the torch reference, measured in one run on this CPU.

Method (``METHOD`` is recorded in the manifest):

- Every runner (the torch reference and each variant) is loaded the way a user loads it
  (``SentenceTransformer(..., backend=..., model_kwargs={"file_name": ...})``, or ``CrossEncoder`` /
  ``SparseEncoder`` for those kinds: ``exporter.runners``) with a fixed thread count:
  ``torch.set_num_threads``, ONNX Runtime ``intra_op_num_threads`` (inter-op 1, CPUExecutionProvider, idle
  threads not spinning, so one runner's spin-wait does not eat the next runner's time),
  OpenVINO ``INFERENCE_NUM_THREADS`` (one stream, latency hint). After loading, the provider / device that
  actually runs the session is read back and must be the CPU one asked for (no silent fallback).
- One warm-up pass per runner and batch size, then ``rounds`` rounds. In each round every batch size is
  measured for every runner back to back, the runner order rotated each round, so slow drifts of a noisy
  machine hit all runners alike.
- Throughput: texts/s encoding the same texts (tokenisation, model, pooling, normalisation: what
  ``encode`` does) at each batch size; the median over rounds. Rerankers are timed on (query, passage)
  pairs built from the texts as the fidelity check builds them, through ``predict``: pairs/s (the
  ``unit`` recorded in the bench config); sparse encoders on texts through ``encode``. Latency: each
  text (pair) encoded alone (batch 1), per-call p50 / p95 over all rounds. Ratio to torch: the median
  over rounds of (variant / torch) throughput measured in the same round (``ratio_range``: min and max
  of those). The 1-minute load average before and after is recorded: other work on the machine shows
  there, not in the ratios alone.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from exporter.errors import BenchError, UsageError
from exporter.runners.runner import REFERENCE, Runner

DEFAULT_BATCH_SIZES = (1, 8, 32)
METHOD = (
    "texts/s of SentenceTransformer.encode (pairs/s of CrossEncoder.predict, texts/s of SparseEncoder.encode) "
    "on the same inputs per batch size, median of interleaved rounds "
    "(runner order rotated per round) after one warm-up pass; latency = per-call time of single-text encodes "
    "(p50/p95 over all rounds); ratio = median over rounds of variant/torch throughput in the same round."
)


@dataclass
class Samples:
    throughput: dict[int, list[float]] = field(default_factory=dict)  # batch size -> texts/s per round
    latencies: list[float] = field(default_factory=list)  # seconds per single-text call


@dataclass
class BenchResult:
    config: dict  # threads, batch sizes, rounds, texts, cpu, method, created_at
    runners: dict[str, dict]  # name -> summary (throughput, latency_ms, ratio_to_torch, runtime)

    @property
    def reference(self) -> dict:
        return self.runners[REFERENCE]

    @property
    def variants(self) -> dict[str, dict]:
        return {k: v for k, v in self.runners.items() if k != REFERENCE}


def parse_batch_sizes(text: str) -> list[int]:
    """ "1,8,32" -> [1, 8, 32]; UsageError on anything that is not a positive integer list."""
    try:
        sizes = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError(f"bad --batch-sizes {text!r}.", "Give positive integers separated by commas, e.g. 1,8,32.")
    return sorted(set(sizes))


def bench(
    artifact: Path,
    variant_ids: list[str] | None = None,
    *,
    batch_sizes: list[int] | tuple[int, ...] = DEFAULT_BATCH_SIZES,
    threads: int | None = None,
    texts: Path | None = None,
    max_texts: int = 256,
    rounds: int = 3,
    on_step: Callable[[str], None] | None = None,
    host=None,
) -> BenchResult:
    """Benchmark the chosen variants (default: every built one) and the torch reference in one run.

    A variant ``host`` (default: this CPU) cannot run (e.g. bf16 without bf16 units) is left out, its reason
    in ``config["not_applicable"]``: timed anyway it would show f32 speed under the bf16 name.

    Raises UsageError (bad arguments / manifest), IntegrityError (files do not match the manifest),
    SourceError (the pinned reference is not in the Hub cache), BenchError (wrong provider/device).
    """
    from exporter import kinds
    from exporter import manifest as mf
    from exporter.environment import cpu_info
    from exporter.quality import probes
    from exporter.quality.verify import not_applicable
    from exporter.runners.runner import recorded_reference_runner, variant_runner

    if rounds < 1 or max_texts < 1:
        raise UsageError("rounds and max_texts must be at least 1.", "Pass positive numbers.")
    threads = threads or os.cpu_count() or 1
    if threads < 1:
        raise UsageError(f"--threads {threads} is not a positive number.", "Pass e.g. --threads 2.")
    manifest = mf.load(artifact)
    chosen = [mf.get_variant(manifest, v) for v in variant_ids] if variant_ids else manifest["variants"]
    chosen = [v for v in chosen if v["status"] != "error" and v["files"]]
    skipped = {v["id"]: why for v in chosen if (why := not_applicable(v["id"], host))}
    chosen = [v for v in chosen if v["id"] not in skipped]
    if not chosen:
        raise UsageError(
            f"{artifact} has no built variant to benchmark on this CPU"
            + (f" ({'; '.join(skipped.values())})." if skipped else "."),
            "Export one with `exporter export`, or bench on a host that can run it.",
        )
    mf.require_intact(artifact, manifest, [v["id"] for v in chosen])
    text_set = probes.load_text_set(texts, "probe", min_texts=1)  # timing needs no minimum
    sample = list(text_set.texts[:max_texts])
    kind = manifest["model"]["kind"]
    kspec = kinds.get(kind)
    inputs = kspec.probe(sample).inputs[:max_texts]  # texts, or (query, passage) pairs for a reranker
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # the tokenizers' pool, before first use

    runners = [recorded_reference_runner(manifest, threads)] + [
        variant_runner(artifact, v, kind, threads) for v in chosen
    ]
    load_before = os.getloadavg()[0]
    samples = measure(runners, inputs, batch_sizes, rounds, on_step)
    load_after = os.getloadavg()[0]
    summaries = {r.name: summarize(samples[r.name], samples[REFERENCE], r.runtime()) for r in runners}
    for r in runners:
        check_runtime(r.name, r.backend, summaries[r.name]["runtime"])
    config = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": threads,
        "batch_sizes": list(batch_sizes),
        "rounds": rounds,
        "warmup_rounds": 1,
        "texts": {"name": text_set.name, "sha256": text_set.sha256, "n": len(sample), "source": text_set.source},
        "kind": kind,
        "unit": kspec.unit,  # throughput is in these per second
        "n_inputs": len(inputs),
        "cpu": cpu_info(),
        "loadavg_1min": {"before": load_before, "after": load_after},  # other work on the machine
        "method": METHOD,
        "not_applicable": skipped,  # variant id -> why this CPU cannot run it (not timed)
    }
    return BenchResult(config, summaries)


def check_runtime(name: str, backend: str, runtime: dict) -> None:
    """BenchError unless the session runs where it was asked to (CPU), with a recorded thread count."""
    if backend == "onnx" and runtime.get("provider") != "CPUExecutionProvider":
        raise BenchError(f"{name} ran on {runtime.get('provider')}, not CPUExecutionProvider.", "Check onnxruntime.")
    if backend == "openvino" and not str(runtime.get("device", "")).startswith("CPU"):
        raise BenchError(f"{name} ran on OpenVINO device {runtime.get('device')}, not CPU.", "Check openvino.")


# -------------------------------------------------------------------------------------- measuring
def measure(
    runners: list[Runner], texts: list[str], batch_sizes, rounds: int, on_step: Callable[[str], None] | None = None
) -> dict[str, Samples]:
    """Warm up every runner at every batch size, then time interleaved rounds (order rotated per round).

    ``on_step`` gets one line per timed pass (round, batch size, runner, texts/s): progress a person sees."""
    samples = {r.name: Samples({b: [] for b in batch_sizes}) for r in runners}
    warm = texts[: max(max(batch_sizes), 8)]
    for r in runners:
        for b in batch_sizes:
            r.encode(warm, b)
    for i in range(rounds):
        order = runners[i % len(runners) :] + runners[: i % len(runners)]
        for b in batch_sizes:
            for j, r in enumerate(order):
                took = _time_one(r, texts, b, samples[r.name].latencies)
                samples[r.name].throughput[b].append(took)
                if on_step:
                    on_step(f"round {i + 1}/{rounds}, batch {b}, runner {j + 1}/{len(order)} {r.name}: {took:.1f}/s")
    return samples


def _time_one(runner: Runner, texts: list[str], batch_size: int, latencies: list[float]) -> float:
    """texts/s for one pass; at batch 1 every text is its own call and each call's time is kept."""
    if batch_size == 1:
        total = 0.0
        for t in texts:
            start = time.perf_counter()
            runner.encode([t], 1)
            took = time.perf_counter() - start
            latencies.append(took)
            total += took
        return len(texts) / total
    start = time.perf_counter()
    runner.encode(texts, batch_size)
    return len(texts) / (time.perf_counter() - start)


def summarize(mine: Samples, ref: Samples, runtime: dict) -> dict:
    """Medians, latency percentiles and per-round ratios to the reference: the manifest's ``bench`` entry."""
    out: dict = {
        "throughput": {str(b): statistics.median(v) for b, v in mine.throughput.items()},
        "throughput_rounds": {str(b): v for b, v in mine.throughput.items()},
        "ratio_to_torch": {
            str(b): statistics.median(m / r for m, r in zip(v, ref.throughput[b], strict=True))
            for b, v in mine.throughput.items()
        },
        "ratio_range": {
            str(b): [min(rs), max(rs)]
            for b, v in mine.throughput.items()
            for rs in [[m / r for m, r in zip(v, ref.throughput[b], strict=True)]]
        },
        "latency_ms": None,
        "runtime": runtime,
    }
    if mine.latencies:
        out["latency_ms"] = {
            "p50": 1000 * _percentile(mine.latencies, 50),
            "p95": 1000 * _percentile(mine.latencies, 95),
            "n": len(mine.latencies),
        }
    return out


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


# ----------------------------------------------------------------------------------------- record
def record(artifact: Path, result: BenchResult) -> dict:
    """Write ``variants[].bench`` and top-level ``bench`` (and ``recommended``) into the manifest, atomically.

    Ratios compare only within one run, so variants not in this run lose an older ``bench`` entry.
    """
    from exporter import manifest as mf
    from exporter.quality.recommend import recommend

    manifest = mf.load(artifact)
    for v in manifest["variants"]:
        v["bench"] = result.variants.get(v["id"])
    manifest["bench"] = {**result.config, "reference": result.reference, "variants": list(result.variants)}
    manifest["recommended"] = recommend(manifest)
    mf.save(artifact, manifest)
    return manifest
