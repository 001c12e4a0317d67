"""``bench --consumers``: each variant's speed through the consumers users load it with, beside the bare runtime,
side by side in one run on this CPU.

Runners, per variant:

- ``bare``: the variant's own engine session (ONNX Runtime, or OpenVINO with the variant's recorded
  ``ov_config``), loaded as sentence-transformers loads it (``exporter.runners.variant``), run on batches
  tokenised before any timing: the graph alone, the floor no consumer can beat;
- one per named consumer that applies (``exporter.quality.consumers``: the torch-free ``runtime``,
  ``sentence-transformers``, ``fastembed``, ``optimum``), loaded once the way its users load it and timed through
  its own encode (tokenisation, graph, pooling, normalisation).

All runners share ``bench.measure``'s method: one runner resident at a time, the order rotated per round, a
warm-up at every batch size, the same length-sorted texts, ``threads`` threads. A consumer's ``ratio_to_bare``
is the median over rounds of (its throughput / the bare runtime's) in the same round. A consumer that cannot
run here (not installed, it would pool differently from the model, it runs in another process, or it fails
to load) gets a row that says why and no figures. Nothing is recorded in the manifest: the gate judges
what the consumers serve (``parity.consumers``); this measures what they cost.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from exporter import environment
from exporter.errors import UsageError
from exporter.kinds import BENCH_BATCH_SIZES as DEFAULT_BATCH_SIZES
from exporter.runners.runner import Runner

BARE = "bare runtime"
TIMED, NOT_RUN = "timed", "not run"
METHOD = (
    "texts/s per batch size, median of rounds, each round loading one runner at a time (order rotated), warming "
    "it up and timing it on the same length-sorted texts; bare runtime = the variant's engine session on batches "
    "tokenised before timing; ratio_to_bare = median over rounds of consumer / bare throughput in the same round"
)


@dataclass
class ConsumerBench:
    config: dict
    rows: list[dict]  # variant, runner, status, throughput {batch: texts/s}, ratio_to_bare {batch: x}, message


def bench_consumers(
    artifact: Path,
    variant_ids: list[str] | None,
    names: list[str],
    *,
    batch_sizes: list[int] | tuple[int, ...] = DEFAULT_BATCH_SIZES,
    threads: int | None = None,
    texts: Path | None = None,
    max_texts: int = 256,
    rounds: int = 3,
    on_step=None,
) -> ConsumerBench:
    """Time the chosen ONNX / OpenVINO variants (default: every built one) of an embedding artifact through the
    consumers ``names`` beside their bare runtime. UsageError for bad arguments or another kind of model."""
    from exporter import kinds
    from exporter import manifest as mf
    from exporter.quality import bench, consumers, probes
    from exporter.source import st_modules

    if rounds < 1 or max_texts < 1:
        raise UsageError("rounds and max_texts must be at least 1.", "Pass positive numbers.")
    if not names:
        raise UsageError("--consumers names no consumer.", f"Name some of: all, {', '.join(consumers.BY_NAME)}.")
    threads = threads or os.cpu_count() or 1
    manifest = mf.load(artifact)
    kind = manifest["model"]["kind"]
    if kind != kinds.ModelKind.SENTENCE_TRANSFORMER.value:
        raise UsageError(f"bench --consumers times embedding models; {artifact} holds a {kind}.", "Drop --consumers.")
    chosen = [mf.get_variant(manifest, v) for v in variant_ids] if variant_ids else manifest["variants"]
    chosen = [v for v in chosen if v["status"] != "error" and v["files"] and v["load"]["backend"] in ENGINES]
    if not chosen:
        raise UsageError(f"{artifact} has no built ONNX or OpenVINO variant to time.", "Export one first.")
    mf.require_intact(artifact, manifest, [v["id"] for v in chosen])
    sample = bench.sort_by_length(list(probes.load_text_set(texts, "probe", min_texts=1).texts[:max_texts]))
    warm = sample[: max(max(batch_sizes), 8)]  # bench.WARMUP
    facts = st_modules.read(Path(artifact))

    loaders: list[tuple[str, Callable[[], Runner]]] = []
    rows: list[dict] = []
    pre = (sample, warm)
    for v in chosen:
        loaders.append((_name(v, BARE), partial(bare_runner, artifact, v, kind, threads, pre, batch_sizes)))
        rows.append({"variant": v["id"], "runner": BARE})
        target = consumers.Target(Path(artifact), v, facts, threads=threads)
        for c in consumers.CONSUMERS:
            if c.name not in names:
                continue
            row = {"variant": v["id"], "runner": c.name}
            why = _cannot_run(c, target, kind)
            if why:
                rows.append({**row, "status": NOT_RUN, "message": why})
                continue
            loaders.append((_name(v, c.name), partial(consumer_runner, c, target)))
            rows.append(row)
    samples = bench.measure(loaders, sample, batch_sizes, rounds, on_step)
    for row in rows:
        if row.get("status") == NOT_RUN:
            continue
        mine, bare = samples[_name({"id": row["variant"]}, row["runner"])], samples[_name({"id": row["variant"]}, BARE)]
        row.update(status=TIMED, message="", **_figures(mine, bare))
    config = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": threads,
        "batch_sizes": list(batch_sizes),
        "rounds": rounds,
        "n_texts": len(sample),
        "cpu": environment.cpu_info(),
        "loadavg_1min": os.getloadavg()[0],
        "consumers": list(names),
        "method": METHOD,
    }
    return ConsumerBench(config, rows)


ENGINES = ("onnx", "openvino")  # backends with an engine session to time bare


def _name(variant: dict, runner: str) -> str:
    return f"{variant['id']} / {runner}"


def _cannot_run(consumer, target, kind: str) -> str | None:
    """Why ``consumer`` cannot be timed on ``target`` here (None: it can; it was loaded once to find out)."""
    from exporter.quality.consumers import Unavailable

    if not consumer.applies(target.variant, kind):
        return f"{consumer.name} does not load {target.backend} variants"
    if consumer.open is None:
        return f"{consumer.name} runs as a {consumer.runs}: not timed beside in-process runners"
    problem = consumer.pooling_problem(target.facts, target.variant["load"].get("truncate_dim"))
    if problem:
        return problem
    try:
        consumer.open(target)(["a"], 1)
    except Unavailable as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a consumer that cannot load the variant is reported, not fatal
        return f"{consumer.name} could not run it: {type(exc).__name__}: {exc}"
    return None


def consumer_runner(consumer, target) -> Runner:
    """``consumer`` loaded on ``target`` as its users load it, as a bench runner."""
    encode = consumer.open(target)
    runtime = {"consumer": consumer.name, "runs": consumer.runs, "threads": target.threads}
    return Runner(_name(target.variant, consumer.name), "consumer", encode, lambda: runtime)


def bare_runner(artifact: Path, variant: dict, kind: str, threads: int, texts: tuple[list, ...], sizes) -> Runner:
    """The variant's engine session alone, on feeds tokenised at load time for every (texts, batch size) the
    bench runs, single texts included: timing it times the graph, nothing else."""
    from exporter.runners.runner import _RUNTIMES
    from exporter.runners.variant import load_variant

    model = load_variant(artifact, variant, kind, threads=threads)
    backend = variant["load"]["backend"]
    engine = model[0].auto_model
    if backend == "onnx":
        session = engine.session
        inputs = {i.name for i in session.get_inputs()}
        run = lambda feeds: session.run(None, feeds)  # noqa: E731
    else:
        compiled = engine.request
        inputs = {p.get_any_name() for p in compiled.inputs}
        run = compiled.create_infer_request().infer
    tokenised: dict[tuple, list[dict]] = {}

    def feeds_for(batch: list[str], size: int) -> list[dict]:
        key = (tuple(batch), size)
        if key not in tokenised:
            chunks = [batch[s : s + size] for s in range(0, len(batch), size)]
            tokenised[key] = [
                {k: v.numpy() for k, v in model.tokenize(chunk).items() if k in inputs} for chunk in chunks
            ]
        return tokenised[key]

    for batch in texts:
        for size in sizes:
            feeds_for(batch, size)
            if size == 1:  # latency: every text is its own call
                for text in batch:
                    feeds_for([text], 1)

    def encode(batch: list[str], size: int) -> None:
        for feeds in feeds_for(batch, size):
            run(feeds)

    return Runner(_name(variant, BARE), backend, encode, lambda: _RUNTIMES[backend](model))


def _figures(mine, bare) -> dict:
    return {
        "throughput": {str(b): statistics.median(v) for b, v in mine.throughput.items()},
        "ratio_to_bare": {
            str(b): statistics.median(m / r for m, r in zip(v, bare.throughput[b], strict=True))
            for b, v in mine.throughput.items()
        },
        "runtime": mine.runtime,
    }
