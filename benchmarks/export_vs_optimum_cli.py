"""Time to export and check the embedded default: `exporter export` vs `optimum-cli export onnx`.

Both run in this one process's run, back to back, on the same machine state, from the same local Hub
snapshot (optimum-cli has no --revision, so it is given the snapshot folder). Each side is run
ROUNDS times, alternating, and the median is reported with the ratio.

What each side does:
- exporter: resolve the pin through the Hub cache, export the fp32 graph (pooling and normalisation
  inside), encode 300+ probe texts with torch and with the graph, gate on cosine, hash every file,
  write the manifest.
- optimum-cli: export the transformer to ONNX and validate it on one dummy input with an atol
  (a mismatch is only a warning, exit 0).

Each round prints the 1-minute load average and the exporter's own step times (its progress lines), so a
slow round can be told from a loaded machine, and the median of each step is printed at the end. The first
exporter round may run the torch reference on the probe set; later ones read it from the reference cache
(``exporter.quality.refcache``), as a re-export does.

Run: .venv/bin/python benchmarks/export_vs_optimum_cli.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import BIN, load_average, machine, stopwatch, timed_run

STEP = re.compile(r"✓ (.+?) \(([\d.]+)s\)")  # the exporter's progress line of a finished step


def exporter_run(cmd: list[str], env: dict) -> tuple[float, dict[str, float]]:
    """Wall seconds of an ``exporter export`` run and the seconds of each step it reported."""
    with stopwatch() as t:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return t.seconds, {label: float(s) for label, s in STEP.findall(proc.stdout + proc.stderr)}


def main() -> None:
    from exporter.source.default_model import REPO_ID, REVISION, seed_default

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine(), flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    env = dict(os.environ, HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("HF_HUB_CACHE", None)
    os.environ.update(HF_HOME=env["HF_HOME"])
    snapshot = seed_default(work / "hf" / "hub")
    ours, theirs, steps = [], [], {}
    try:
        for i in range(args.rounds):
            out_a, out_b = work / f"ours-{i}", work / f"optimum-{i}"
            load = load_average()
            seconds, phases = exporter_run(
                [str(BIN / "exporter"), "export", f"{REPO_ID}@{REVISION}", "--out", str(out_a)], env
            )
            ours.append(seconds)
            for label, value in phases.items():
                steps.setdefault(label, []).append(value)
            theirs.append(
                timed_run(
                    [
                        str(BIN / "optimum-cli"),
                        "export",
                        "onnx",
                        "--model",
                        str(snapshot),
                        "--library-name",
                        "sentence_transformers",
                        "--task",
                        "feature-extraction",
                        str(out_b),
                    ],
                    env,
                )
            )
            print(f"round {i + 1} (load {load}): exporter {ours[-1]:.1f}s   optimum-cli {theirs[-1]:.1f}s", flush=True)
            print("  exporter steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"\nmedian of {args.rounds}: exporter export+check {a:.1f}s | optimum-cli export {b:.1f}s | ratio {a / b:.2f}x"
    )
    print("exporter steps (median): " + ", ".join(f"{k} {statistics.median(v):.1f}s" for k, v in steps.items()))
    print(f"load average at the end: {load_average()}")
    print("exporter's time includes encoding the probe set with torch and ONNX and hashing every file;")
    print("optimum-cli checks one dummy input and exits 0 even when outputs differ.")


if __name__ == "__main__":
    main()
