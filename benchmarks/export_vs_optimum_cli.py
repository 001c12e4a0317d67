"""Time to export and check the embedded default: `exporter export --variants onnx` vs `optimum-cli export onnx`.

Both run in this one script's run, back to back, on the same machine state, from the same local Hub
snapshot (optimum-cli has no --revision, so it is given the snapshot folder). One warm-up export, not counted,
fills the reference cache (``exporter.quality.refcache``) as a re-export finds it; then each side runs
ROUNDS times, alternating A B A B, and the medians are reported with their ratio, in wall seconds and in
CPU seconds (user + system of the child process): on a shared, loaded machine the wall time mostly measures
the other tenants, the CPU time much less so.

``--baseline-src DIR`` adds a third side: the same exporter command run from another source tree (e.g. the
main branch's worktree), in the same rotation, so a change is measured against what it changes.

What each side does:
- exporter: resolve the pin through the Hub cache, export the fp32 graph (pooling and normalisation
  inside), encode 500+ probe texts with the graph through sentence-transformers and the runtime, gate on
  cosine, nn@10, norms and batch invariance, hash every file, write the manifest.
- optimum-cli: export the transformer to ONNX and validate it on one dummy input with an atol
  (a mismatch is only a warning, exit 0).

Each round prints the 1-minute load average and the exporter's own step times (its progress lines). The
output is also written to ``benchmarks/results/export_vs_optimum_cli-<UTC time>.txt``, which names the CPU.

Run: .venv/bin/python benchmarks/export_vs_optimum_cli.py [--rounds 3] [--baseline-src /work/main]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from _common import BIN, REPO_ROOT, load_average, machine, stopwatch

STEP = re.compile(r"✓ (.+?) \(([\d.]+)s\)")  # the exporter's progress line of a finished step
TARGET = 1.1  # issue: plain export at most 1.1x optimum-cli's wall time


class Tee:
    """Print to stdout and keep every line for the results file."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


def run(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the child) and the output of ``cmd``; exits on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with stopwatch() as t:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return t.seconds, cpu, proc.stdout + proc.stderr


def main() -> None:
    from exporter.source.default_model import REPO_ID, REVISION, seed_default

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, help="also run the exporter from this source tree")
    args = parser.parse_args()
    say = Tee()
    say(machine())
    say(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; {REPO_ID}@{REVISION[:12]}; reference cache warm")

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    env = dict(os.environ, HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(EXPORTER_CACHE_DIR=str(work / "cache"))
    env.pop("HF_HUB_CACHE", None)
    os.environ.update(HF_HOME=env["HF_HOME"])
    snapshot = seed_default(work / "hf" / "hub")
    model = f"{REPO_ID}@{REVISION}"
    exporter = [str(BIN / "python"), "-m", "exporter", "export", model, "--variants", "onnx", "--out"]
    optimum = [str(BIN / "optimum-cli"), "export", "onnx", "--model", str(snapshot)]
    optimum += ["--library-name", "sentence_transformers", "--task", "feature-extraction"]
    sides = {"exporter": (exporter, {**env, "PYTHONPATH": str(REPO_ROOT)})}
    if args.baseline_src:
        sides["exporter-baseline"] = (exporter, {**env, "PYTHONPATH": str(args.baseline_src.resolve())})
    sides["optimum-cli"] = (optimum, env)
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    steps: dict[str, list[float]] = {}
    try:
        for n, (name, (cmd, side_env)) in enumerate(sides.items()):  # warm-up, not counted: caches of both kinds
            if name != "optimum-cli":
                run([*cmd, str(work / f"warm-{n}")], side_env)
        for i in range(args.rounds):
            load = load_average()
            for name, (cmd, side_env) in sides.items():
                seconds, used, output = run([*cmd, str(work / f"{name}-{i}")], side_env)
                wall[name].append(seconds)
                cpu[name].append(used)
                if name == "exporter":
                    for label, value in STEP.findall(output):
                        steps.setdefault(label, []).append(float(value))
            shown = "   ".join(f"{k} {wall[k][-1]:.1f}s wall / {cpu[k][-1]:.1f}s CPU" for k in sides)
            say(f"round {i + 1} (load {load}): {shown}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in sides}
    base = med["optimum-cli"]
    say()
    say(f"median of {args.rounds} rounds (A B A B), ratio to optimum-cli:")
    for k, (w, c) in med.items():
        say(f"  {k:18s} wall {w:6.1f}s ({w / base[0]:.2f}x)   CPU {c:6.1f}s ({c / base[1]:.2f}x)")
    verdict = "MET" if med["exporter"][0] / base[0] <= TARGET else "MISSED"
    say(f"{verdict} plain export at <= {TARGET}x optimum-cli's wall time ({med['exporter'][0] / base[0]:.2f}x)")
    say("exporter steps (median wall): " + ", ".join(f"{k} {statistics.median(v):.1f}s" for k, v in steps.items()))
    say(f"load average at the end: {load_average()} (2 shared cores: wall times are inflated by other tenants)")
    say("exporter's time includes the gate: 500+ probe texts through the graph on both serving paths, compared")
    say("with the cached torch reference; optimum-cli checks one dummy input and exits 0 even when outputs differ.")
    out = REPO_ROOT / "benchmarks" / "results" / f"export_vs_optimum_cli-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    out.write_text("\n".join(say.lines) + "\n", "utf-8")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
