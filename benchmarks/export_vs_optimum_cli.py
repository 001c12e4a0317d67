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

Run: .venv/bin/python benchmarks/export_vs_optimum_cli.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from _common import BIN, machine, timed_run


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
    ours, theirs = [], []
    try:
        for i in range(args.rounds):
            out_a, out_b = work / f"ours-{i}", work / f"optimum-{i}"
            ours.append(timed_run([str(BIN / "exporter"), "export", f"{REPO_ID}@{REVISION}", "--out", str(out_a)], env))
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
            print(f"round {i + 1}: exporter {ours[-1]:.1f}s   optimum-cli {theirs[-1]:.1f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"\nmedian of {args.rounds}: exporter export+check {a:.1f}s | optimum-cli export {b:.1f}s | ratio {a / b:.2f}x"
    )
    print("exporter's time includes encoding the probe set with torch and ONNX and hashing every file;")
    print("optimum-cli checks one dummy input and exits 0 even when outputs differ.")


if __name__ == "__main__":
    main()
