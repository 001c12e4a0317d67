"""What every benchmark script shares: the repository on ``sys.path``, one timer, one way to time a command,
and one line saying which machine the numbers come from.

Scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path`` and ``from _common import ...``
works; importing it puts the repository root there too (``exporter``, ``tests.tiny_models``).

The machine line names the CPU model, its logical cores, and the ISA flags that decide which variants are fast
and how int8 kernels round (``exporter.hostcaps``, as the catalogue reads them), with the 1-minute load average:
on a shared machine, load inflates wall times, so a figure without it cannot be compared with another.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
BIN = Path(sys.executable).parent  # the venv's console scripts: exporter, optimum-cli


@dataclass
class Stopwatch:
    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """``with stopwatch() as t: ...`` then ``t.seconds``: wall time of the block (``time.perf_counter``)."""
    watch = Stopwatch()
    start = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - start


def timed_run(cmd: list[str], env: dict, ok: tuple[int, ...] = (0,)) -> float:
    """Wall seconds of ``cmd`` (output captured); exits with the tail of its stderr on an exit code not in ``ok``."""
    with stopwatch() as t:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode not in ok:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return t.seconds


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, e.g. ``0.52 0.61 0.70``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """``CPU: <model> | <n> logical cores | x86_64 [avx2 avx512f ...] | load <1/5/15 min>``."""
    from exporter.environment import cpu_info
    from exporter.hostcaps import this_host

    return (
        f"CPU: {cpu_info()['model']} | {os.cpu_count()} logical cores | {this_host().describe()} "
        f"| load {load_average()}"
    )


def ov_throughput(models: dict, batches: list[dict], rounds: int) -> dict:
    """Texts per second of OpenVINO models side by side in this process: ``models`` maps a key to (an
    ``ov.Model`` or an IR path, its compile config); each is compiled once and warmed up with one pass over
    ``batches`` (dicts of input arrays; inputs a model lacks are left out), then ``rounds`` rounds alternate
    over all models, so drifting load hits them alike; the median round per key."""
    import openvino as ov

    core = ov.Core()
    requests = {}
    for key, (model, config) in models.items():
        compiled = core.compile_model(core.read_model(model) if isinstance(model, str | Path) else model, "CPU", config)
        requests[key] = (compiled.create_infer_request(), {p.get_any_name() for p in compiled.inputs})

    def one_pass(key) -> float:
        request, names = requests[key]
        with stopwatch() as t:
            for batch in batches:
                request.infer({k: v for k, v in batch.items() if k in names})
        return t.seconds

    times = {key: [] for key in requests}
    for r in range(rounds + 1):  # round 0 warms up
        for key in requests:
            seconds = one_pass(key)
            if r:
                times[key].append(seconds)
    texts = sum(len(b["input_ids"]) for b in batches)
    return {key: texts / statistics.median(t) for key, t in times.items()}


def artifact_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a script that works on one artifact of a real model: ``ART``, ``--source SNAPSHOT``
    (the model's snapshot folder, torch weights) and ``--hf-home DIR``; see :func:`offline_hub`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--source", type=Path, required=True, help="the model's snapshot folder (torch weights)")
    parser.add_argument("--hf-home", default=None)
    return parser


def offline_hub(args: argparse.Namespace) -> None:
    """``HF_HOME`` from ``--hf-home`` when given, and the Hub offline unless the caller's environment says so."""
    if args.hf_home:
        os.environ["HF_HOME"] = args.hf_home
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_results(name: str, lines: list[str]) -> Path:
    """``lines`` to ``benchmarks/results/<name>-<UTC time>.txt``; prints and returns the path."""
    results = REPO_ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"written: {out}")
    return out
