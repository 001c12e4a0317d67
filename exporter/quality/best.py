"""``exporter export --variants best``: build the candidates that fit this CPU, gate them, bench them
against torch in the same command and record the recommended one.

The candidates are the catalogue's (``VariantSpec.best``, filtered by ``exporter.hostcaps``); this module
decides what the one bench run measures: every candidate that passed its gate (but an fp32 one whose bf16
twin passed too, ``not_timed``), plus the all-int8 variant (``ALL_INT8``) even when it fails, so the
recommended variant's speed is shown next to the int8 speed it gave up for fidelity. A candidate failing
its gate is expected here (the dynamic int8 presets usually do); the command fails only when no candidate
passes.
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import FidelityError

ALL_INT8 = "openvino-qint8"  # the fastest int8 the catalogue builds: the speed fidelity is measured against
BENCH_BATCH_SIZES = (32,)  # the batch the recommendation rule compares at (exporter.quality.recommend)
BENCH_ROUNDS = 3
BENCH_TEXTS = 128  # probe texts per timed pass: enough for a stable ratio, half the default bench's time


def wants_best(ids: list[str] | None) -> bool:
    return any(w.strip().lower() == "best" for w in ids or [])


def bf16_twins() -> dict[str, str]:
    """Variant id -> its bf16 twin in the catalogue: the same files, run with the bf16 precision hint."""
    from exporter import variants

    return {
        s.derives_from: s.id
        for s in variants.CATALOGUE
        if s.derives_from
        and s.model_kwargs == variants.OV_BF16
        and s.file_name == variants.BY_ID[s.derives_from].file_name
    }


def not_timed(manifest: dict) -> dict[str, str]:
    """Gate-passing candidates the bench leaves out, with why: those whose bf16 twin passed too. The twin is
    the same graph computed in bf16, which a host can build only with bf16 units, where it is the faster of the
    two (1.7-2.1x the fp32 twin at batch 32 on both real models, AVX-512 BF16: int8_search-20261208T003211Z), so
    the fp32 one cannot be the recommendation and timing it costs a bench pass per round for nothing."""
    passed = {v["id"] for v in manifest["variants"] if v["status"] == "passed"}
    return {
        vid: f"its bf16 twin {twin} (the same files computed in bf16) passed the gate and is the faster of the two"
        for vid, twin in bf16_twins().items()
        if vid in passed and twin in passed
    }


def bench_ids(manifest: dict) -> list[str]:
    """What the bench run measures: gate-passing candidates but those ``not_timed``, and the all-int8 one for
    comparison."""
    skip = not_timed(manifest)
    return [
        v["id"]
        for v in manifest["variants"]
        if (v["status"] == "passed" and v["id"] not in skip) or (v["id"] == ALL_INT8 and v["files"])
    ]


def bench_and_recommend(artifact: Path, manifest: dict, threads: int | None = None, on_step=None):
    """One bench run over ``bench_ids``; records it (and ``recommended``) in the manifest. Returns both.
    ``on_step`` gets a ``bench.BenchStep`` per stage of each timed pass (progress)."""
    from exporter.quality import bench as bench_mod

    result = bench_mod.bench(
        artifact,
        bench_ids(manifest),
        batch_sizes=BENCH_BATCH_SIZES,
        threads=threads,
        rounds=BENCH_ROUNDS,
        max_texts=BENCH_TEXTS,
        on_step=on_step,
    )
    result.config["not_timed"] = not_timed(manifest)  # passed, left out of the bench by this module's rule
    return result, bench_mod.record(artifact, result)


def raise_unless_recommended(artifact: Path, manifest: dict) -> None:
    """FidelityError when no candidate passed its gate (nothing to recommend)."""
    rec = manifest.get("recommended") or {}
    if not rec.get("variant"):
        failed = ", ".join(v["id"] for v in manifest["variants"] if v["status"] != "passed")
        raise FidelityError(
            f"no candidate passed its fidelity gate (failed: {failed}); artifact kept at {artifact}.",
            "See manifest.json variants[].parity, or loosen a threshold with --threshold.",
        )
