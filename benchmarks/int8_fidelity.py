"""Fidelity and speed of every ONNX variant of the embedded default (all-MiniLM-L6-v2), in one run.

1. ``exporter export`` builds every ONNX variant (O1-O4, the int8 presets, static QDQ, the fidelity
   int8) into one artifact; fidelity comes from its manifest (probe set vs torch: min/mean cosine,
   nn@10) and the fidelity int8's search record (nodes kept in float, search time).
2. Throughput at batch 32 on the probe texts, each variant loaded as a user loads it
   (``SentenceTransformer(artifact, backend="onnx", model_kwargs={"file_name": ...})``) and torch fp32,
   in interleaved rounds (every model once per round, so drifting machine load hits all alike); the
   median per model, and ratios vs torch fp32 and vs fp32 ONNX.

Run: .venv/bin/python benchmarks/int8_fidelity.py [--rounds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import load_average, machine, stopwatch

ONNX_IDS = (
    "onnx",
    "onnx-o1",
    "onnx-o2",
    "onnx-o3",
    "onnx-o4",
    "onnx-qint8-avx512-vnni",
    "onnx-qint8-avx512",
    "onnx-quint8-avx2",
    "onnx-qint8-arm64",
    "onnx-qint8-static",
    "onnx-qint8-fidelity",
)


def build(out: Path, env: dict) -> dict:
    from exporter.source.default_model import DEFAULT_MODEL

    cmd = [
        sys.executable,
        "-m",
        "exporter",
        "export",
        DEFAULT_MODEL,
        "--out",
        str(out),
        "--variants",
        ",".join(ONNX_IDS),
    ]
    with stopwatch() as t:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    print(f"export of {len(ONNX_IDS)} variants: {t.seconds:.0f}s (exit {proc.returncode})")
    if proc.returncode not in (0, 3):  # 3: some variant failed its gate, which this benchmark reports
        sys.exit(proc.stderr[-3000:])
    return json.loads((out / "manifest.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="artifact folder (default: a temp dir)")
    args = parser.parse_args()
    print(machine(), flush=True)

    home = Path(tempfile.mkdtemp(prefix="int8-bench-hf-"))
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"}
    os.environ.update({k: env[k] for k in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE")})
    from exporter.source.default_model import seed_default

    snapshot = seed_default(home / "hub")
    out = args.out or Path(tempfile.mkdtemp(prefix="int8-bench-")) / "minilm"
    manifest = build(out, env)
    entries = {v["id"]: v for v in manifest["variants"]}

    import torch
    from sentence_transformers import SentenceTransformer

    from exporter.quality import probes

    torch.set_num_threads(os.cpu_count() or 1)
    texts = probes.load_text_set(None, "probe").texts
    models = {"torch fp32": SentenceTransformer(str(snapshot), device="cpu")}
    for variant_id in ONNX_IDS:
        if entries.get(variant_id, {}).get("files"):
            file_name = entries[variant_id]["load"]["file_name"]
            models[variant_id] = SentenceTransformer(
                str(out), device="cpu", backend="onnx", model_kwargs={"file_name": file_name}
            )
    for model in models.values():  # warm-up
        model.encode(texts[:64], batch_size=32)
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):
        for name, model in models.items():
            with stopwatch() as t:
                model.encode(texts, batch_size=32)
            times[name].append(t.seconds)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    tput = {name: len(texts) / statistics.median(t) for name, t in times.items()}
    print(f"\n{len(texts)} probe texts, batch 32, median of {args.rounds} interleaved rounds; load {load_average()}")
    cols = ("cos min", "cos mean", "nn@10", "texts/s", "vs torch", "vs onnx")
    header = f"{'variant':24} {'status':7} " + " ".join(f"{c:>8}" for c in cols)
    print(header)
    print("-" * len(header))
    for name, value in tput.items():
        p = (entries.get(name) or {}).get("parity") or {}
        status = (entries.get(name) or {}).get("status", "-")
        cos_min = f"{p['cosine_min']:.5f}" if p else "-"
        cos_mean = f"{p['cosine_mean']:.5f}" if p else "-"
        nn = f"{p['neighbour_agreement_at_10']:.3f}" if p else "-"
        vs_onnx = value / tput["onnx"] if "onnx" in tput else float("nan")
        print(
            f"{name:24} {status:7} {cos_min:>8} {cos_mean:>8} {nn:>6} {value:8.1f} "
            f"{value / tput['torch fp32']:7.2f}x {vs_onnx:7.2f}x"
        )
    fid = entries.get("onnx-qint8-fidelity", {}).get("build", {})
    if fid.get("search"):
        s = fid["search"]
        print(
            f"\nfidelity int8 search: {len(fid['nodes_in_float'])} of {s['candidates']} MatMuls kept in float, "
            f"{s['seconds']:.0f}s, reached={s['reached']}, "
            f"ranking {s['ranking_result']}, held-out {s['heldout_result']}, margin {s['margin']}"
        )
        for item in fid["nodes_in_float"]:
            print(f"  {item['node']}: deficit cut {item['deficit_cut']:.2e}, min gain {item['min_gain']:+.4f}")
    print(f"\nartifact: {out}")


if __name__ == "__main__":
    main()
