"""Speed of each variant against the torch reference, measured in one run on this CPU.

Method (``METHOD`` is recorded in the manifest):

- Every runner (the torch reference and each variant) is loaded the way a user loads it
  (``SentenceTransformer(..., backend=..., model_kwargs={"file_name": ...})``, or ``CrossEncoder`` /
  ``SparseEncoder`` for those kinds: ``exporter.runners``) with a fixed thread count:
  ``torch.set_num_threads``, ONNX Runtime ``intra_op_num_threads`` (inter-op 1, CPUExecutionProvider, idle
  threads not spinning, so one runner's spin-wait does not eat the next runner's time),
  OpenVINO ``INFERENCE_NUM_THREADS`` (one stream, latency hint). After loading, the provider / device that
  actually runs the session is read back and must be the CPU one asked for (no silent fallback).
- Bounded memory: one runner is resident at a time. Each of the ``rounds`` rounds loads every runner in
  turn (the order rotated each round, so slow drifts of a noisy machine hit all runners alike), warms it up
  at every batch size, times every batch size, then frees it (``del`` + ``gc``) before loading the next.
  The peak resident memory of the process (``ru_maxrss``) and each runner's resident memory while loaded
  are recorded (``memory``).
- Batches are formed as servers form them: the inputs are sorted by length (characters; a pair by the sum
  of both texts), longest first, before they are cut into batches, so each batch pads only to its own
  longest text (``batching``). sentence-transformers sorts the same way inside ``encode``/``predict``;
  sorting up front makes every runner see the same batches.
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
from functools import partial
from pathlib import Path

from exporter import environment, memory
from exporter.errors import BenchError, UsageError
from exporter.kinds import BENCH_BATCH_SIZES as DEFAULT_BATCH_SIZES  # one home: kinds (the gate runs them too)
from exporter.runners.runner import REFERENCE, Runner

BATCHING = (
    "sorted by length: inputs ordered longest first (characters; a pair by both texts) before cutting "
    "batches, as servers batch, so a batch pads only to its own longest input"
)
WARMUP = (
    "every load (each runner in each round): the first max(largest batch size, 8) inputs encoded once at each "
    "batch size, untimed, before timing"
)
METHOD = (
    "texts/s of SentenceTransformer.encode (pairs/s of CrossEncoder.predict, texts/s of SparseEncoder.encode) "
    "on the same inputs per batch size, median of rounds; each round loads one runner at a time "
    "(order rotated per round), warms it up, times it and frees it; latency = per-call time of single-text encodes "
    "(p50/p95 over all rounds); ratio = median over rounds of variant/torch throughput in the same round."
)


@dataclass
class Samples:
    throughput: dict[int, list[float]] = field(default_factory=dict)  # batch size -> texts/s per round
    latencies: list[float] = field(default_factory=list)  # seconds per single-text call
    runtime: dict = field(default_factory=dict)  # what ran it (provider / device / threads), read after warm-up
    rss_mb: float | None = None  # the largest resident set seen with this runner loaded


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
    on_step: Callable[[BenchStep], None] | None = None,
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
    from exporter.plan_check import not_applicable
    from exporter.quality import probes

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
    idle = environment.idle_threads_sleep()

    loaders = _loaders(artifact, manifest, chosen, threads)
    load_before, peak_before = os.getloadavg()[0], memory.peak_rss_mb()
    samples = measure(loaders, sort_by_length(inputs), batch_sizes, rounds, on_step, kspec.unit)
    load_after = os.getloadavg()[0]
    summaries = {name: summarize(samples[name], samples[REFERENCE]) for name, _ in loaders}
    config = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": threads,
        "batch_sizes": list(batch_sizes),
        "rounds": rounds,
        "warmup": WARMUP,
        "texts": {"name": text_set.name, "sha256": text_set.sha256, "n": len(sample), "source": text_set.source},
        "kind": kind,
        "unit": kspec.unit,  # throughput is in these per second
        "n_inputs": len(inputs),
        "cpu": environment.cpu_info(),
        "loadavg_1min": {"before": load_before, "after": load_after},  # other work on the machine
        "method": METHOD,
        "not_applicable": skipped,  # variant id -> why this CPU cannot run it (not timed)
        "batching": BATCHING,
        "torch_idle_threads": idle,
        "memory": _memory_record(samples, peak_before),
    }
    return BenchResult(config, summaries)


def _loaders(artifact: Path, manifest: dict, chosen: list[dict], threads: int) -> list[tuple[str, Callable]]:
    """(name, load) for the torch reference and each chosen variant. The pinned source is resolved and
    checked against its hashes here, once: ``measure`` loads every runner once per round."""
    from exporter.runners.reference import recorded_source
    from exporter.runners.runner import reference_runner, variant_runner

    model, src = manifest["model"], recorded_source(manifest)
    pin = {"max_seq_length": model.get("max_seq_length"), "truncate_dim": model.get("truncate_dim")}
    loaders = [(REFERENCE, lambda: reference_runner(src.path, model["kind"], threads, **pin))]
    return loaders + [(v["id"], lambda v=v: variant_runner(artifact, v, model["kind"], threads)) for v in chosen]


def _memory_record(samples: dict[str, Samples], peak_before: float) -> dict:
    """MiB; the peak is the whole process's, so it includes what ran before the bench (``peak_rss_mb_before``)."""
    return {
        "peak_rss_mb": memory.peak_rss_mb(),
        "peak_rss_mb_before": peak_before,
        "runners_resident": 1,  # measure loads, times and frees one runner at a time
        "rss_mb_by_runner": {name: s.rss_mb for name, s in samples.items()},
    }


def check_runtime(name: str, backend: str, runtime: dict) -> None:
    """BenchError unless the session runs where it was asked to (CPU), with a recorded thread count."""
    if backend == "onnx" and runtime.get("provider") != "CPUExecutionProvider":
        raise BenchError(f"{name} ran on {runtime.get('provider')}, not CPUExecutionProvider.", "Check onnxruntime.")
    if backend == "openvino" and not str(runtime.get("device", "")).startswith("CPU"):
        raise BenchError(f"{name} ran on OpenVINO device {runtime.get('device')}, not CPU.", "Check openvino.")


# -------------------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class BenchStep:
    """Where a bench run is, for a progress display: a runner of a round at one ``stage`` ("load",
    "warm-up", "batch N", "done"). ``figures`` (throughput per batch size) and ``seconds`` come with "done"."""

    round: int  # 1-based
    rounds: int
    runner: str
    position: int  # this (round, runner) pass, 1-based, of ``total``
    total: int
    stage: str
    fraction: float  # of this pass done, 0..1
    figures: dict[int, float] | None = None
    seconds: float | None = None
    unit: str = "texts"

    @property
    def done(self) -> bool:
        return self.figures is not None

    def __str__(self) -> str:
        head = f"round {self.round}/{self.rounds}, runner {self.runner} ({self.position}/{self.total})"
        if self.figures is None:  # not done
            return f"{head}: {self.stage}"
        rates = ", ".join(f"{v:.1f} {self.unit}/s @{b}" for b, v in self.figures.items())
        return f"{head}: {rates} ({self.seconds:.1f}s with load)"


def sort_by_length(inputs: list) -> list:
    """Longest first by characters (a pair by the sum of its texts), as servers order a queue into batches."""

    def size(item) -> int:
        return len(item) if isinstance(item, str) else sum(len(str(part)) for part in item)

    return sorted(inputs, key=size, reverse=True)


def measure(
    loaders: list[tuple[str, Callable[[], Runner]]],
    texts: list,
    batch_sizes,
    rounds: int,
    on_step: Callable[[BenchStep], None] | None = None,
    unit: str = "texts",
) -> dict[str, Samples]:
    """Rounds of: for each runner (order rotated per round) load it, warm it up at every batch size, time
    every batch size, free it. One runner is resident at a time; its runtime is checked on every load.

    ``on_step`` gets a ``BenchStep`` at each stage of each (round, runner) pass: progress a person sees."""
    samples = {name: Samples({b: [] for b in batch_sizes}) for name, _ in loaders}
    warm = texts[: max(max(batch_sizes), 8)]  # WARMUP
    total = rounds * len(loaders)
    for i in range(rounds):
        order = loaders[i % len(loaders) :] + loaders[: i % len(loaders)]
        for j, (name, load) in enumerate(order):
            step = partial(BenchStep, i + 1, rounds, name, i * len(loaders) + j + 1, total, unit=unit)
            _one_pass(load, samples[name], texts, warm, batch_sizes, step, on_step or (lambda _step: None))
    return samples


def _one_pass(load, mine: Samples, texts: list, warm: list, batch_sizes, step, tell) -> None:
    """One runner in one round: load, warm up at every batch size, time every batch size, free."""
    stages = 2 + len(batch_sizes)  # load, warm-up, one per batch size
    start = time.perf_counter()
    tell(step("load", 0.0))
    runner = load()
    tell(step("warm-up", 1 / stages))
    for b in batch_sizes:
        runner.encode(warm, b)
    mine.runtime = runner.runtime()
    check_runtime(runner.name, runner.backend, mine.runtime)
    for k, b in enumerate(batch_sizes):
        tell(step(f"batch {b}", (2 + k) / stages))
        mine.throughput[b].append(_time_one(runner, texts, b, mine.latencies))
    mine.rss_mb = max(mine.rss_mb or 0.0, memory.rss_mb() or 0.0) or None
    del runner
    memory.release()
    figures = {b: mine.throughput[b][-1] for b in batch_sizes}
    tell(step("done", 1.0, figures=figures, seconds=time.perf_counter() - start))


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


def summarize(mine: Samples, ref: Samples) -> dict:
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
        "runtime": mine.runtime,
        "rss_mb": mine.rss_mb,  # resident memory of the process with this runner loaded (MiB)
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
