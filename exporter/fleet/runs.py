"""Run many recipes: each model in its own process, ``jobs`` at a time, then one summary.

A model runs as ``python -m exporter.cli.fleet_worker --json RECIPE`` (the worker); a crash (even a segfault or
the OOM killer) ends only that process, and the others go on. The worker prints the export summary as JSON on
stdout when the export completed (passed or not); its stderr (progress, the error line) goes to a log
file per model. The parent reads the artifact's manifest for the summary rows. Nothing here prints.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from exporter import kinds
from exporter.environment import helper_env
from exporter.errors import ExitCode

if TYPE_CHECKING:
    from exporter.fleet.recipe import Recipe


@dataclass
class ModelRun:
    """The outcome of one recipe's worker process."""

    recipe: Path
    name: str  # the recipe's file stem
    model: str  # org/name@sha
    exit_code: int
    seconds: float
    log: Path
    artifact: Path | None = None  # set when the export completed (its manifest is there)
    manifest: dict | None = None
    error: str | None = None  # the worker's last error line, when it did not complete
    published: dict[str, str] = field(default_factory=dict)  # variant id -> where it is published (not rebuilt)

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK


def worker_command(
    recipe: Path, *, artifacts_root: Path, result: Path, force: bool = False, variants: str | None = None
) -> list[str]:
    """The command line that runs one recipe in a fresh interpreter (the same Python as this one); the
    worker writes its summary to ``result`` (a file, not stdout, which backends may print into)."""
    cmd = [sys.executable, "-m", "exporter.cli.fleet_worker"]
    cmd += ["--artifacts", str(artifacts_root), "--result", str(result)]
    if force:
        cmd.append("--force")
    if variants:
        cmd += ["--variants", variants]
    return [*cmd, str(recipe)]


def run_fleet(
    recipes: list[tuple[Path, Recipe]],
    *,
    jobs: int = 1,
    artifacts_root: Path = Path("artifacts"),
    log_dir: Path | None = None,
    force: bool = False,
    variants: str | None = None,
    on_start: Callable[[Path], None] | None = None,
    on_done: Callable[[ModelRun], None] | None = None,
) -> list[ModelRun]:
    """Run each (path, Recipe) in its own process, ``jobs`` at a time; results in recipe order.

    A worker that fails or crashes is recorded and the others continue. On Ctrl-C the running workers
    are terminated (each leaves no half-written variant behind) and the interrupt is re-raised.
    """
    artifacts_root = Path(artifacts_root).resolve()
    log_dir = Path(log_dir or artifacts_root / ".logs").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    live: set[subprocess.Popen] = set()
    lock = threading.Lock()

    def one(item: tuple[Path, Recipe]) -> ModelRun:
        path, recipe = item
        if on_start:
            on_start(path)
        log = log_dir / f"{path.stem}.log"
        result = log_dir / f"{path.stem}.result.json"
        result.unlink(missing_ok=True)
        cmd = worker_command(
            path.resolve(), artifacts_root=artifacts_root, result=result, force=force, variants=variants
        )
        start = time.perf_counter()
        with open(log, "w", encoding="utf-8") as out:
            # the worker dies with the thread that started it (environment.die_with_parent); this one waits for it
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=helper_env())
            with lock:
                live.add(proc)
            try:
                proc.wait()
            finally:
                with lock:
                    live.discard(proc)
        run = ModelRun(path, path.stem, recipe.model, proc.returncode, time.perf_counter() - start, log)
        _read_result(run, result)
        if on_done:
            on_done(run)
        return run

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="fleet")
    futures = []
    try:
        futures = [pool.submit(one, item) for item in recipes]
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        with lock:
            for proc in live:
                proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _read_result(run: ModelRun, result: Path) -> None:
    """Fill artifact/manifest from the worker's result file (written when its export completed, passed or
    not, so a model with some failed variants still shows every variant), or the error from its log."""
    from exporter import manifest as mf
    from exporter.errors import ExporterError

    try:
        summary = json.loads(result.read_text("utf-8"))
    except (OSError, ValueError):
        summary = None
    if isinstance(summary, dict) and isinstance(summary.get("published"), dict):
        run.published = {str(k): str(v) for k, v in summary["published"].items()}
    if isinstance(summary, dict) and summary.get("artifact"):
        run.artifact = Path(summary["artifact"])
        try:
            run.manifest = mf.load(run.artifact)
        except ExporterError as exc:
            run.error = str(exc)
    if run.manifest is None and not run.error and not run.ok:
        run.error = _last_error(run.log, run.exit_code)


def _last_error(log: Path, code: int) -> str:
    lines = [ln.strip() for ln in log.read_text("utf-8", errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    if errors:
        return errors[-1].removeprefix("Error:").strip()
    if code < 0:
        return f"the worker was killed by signal {-code}" + (f" ({lines[-1]})" if lines else "")
    return lines[-1] if lines else f"the worker exited with code {code} and printed nothing"


# --------------------------------------------------------------------------------------------- summary
def speed_ratio(variant: dict) -> float | None:
    """The variant's throughput ratio to torch at the largest batch size benchmarked, if benched."""
    ratios = (variant.get("bench") or {}).get("ratio_to_torch") or {}
    if not ratios:
        return None
    return float(ratios[max(ratios, key=int)])


def summary_rows(runs: list[ModelRun]) -> list[dict]:
    """One row per (model, variant): verdict (``published``: not rebuilt, the registry holds it with the same
    fingerprint; the row's ``published`` says where), the kind's primary fidelity metric (``metric`` names it, and
    the row holds it under that name: ``cosine_min`` for embedders, ``score_spearman`` for rerankers), speed
    ratio, artifact; one row for a failed model."""
    rows = []
    for run in runs:
        for vid, where in run.published.items():  # skipped: the registry holds it with the same fingerprint
            rows.append({**_row(run, vid, "published", None, None, None, None), "published": where})
        if run.manifest is None and run.published and run.ok:
            continue
        if run.manifest is None:
            known = run.exit_code in {c.value for c in ExitCode}
            verdict = "error" if known and run.exit_code > 0 else "crashed"
            rows.append(_row(run, None, verdict, None, None, None, run.error))
            continue
        key = kinds.of_manifest(run.manifest).primary.key
        for v in run.manifest["variants"]:
            parity = v.get("parity") or {}
            rows.append(_row(run, v["id"], v["status"], key, parity.get(key), speed_ratio(v), v.get("error")))
    return rows


def _row(run: ModelRun, variant, verdict, metric, value, ratio, error) -> dict:
    return {
        "recipe": run.name,
        "model": run.model,
        "variant": variant,
        "verdict": verdict,
        "metric": metric,  # the kind's primary fidelity metric (cosine_min, score_spearman, ...)
        "value": value,
        **({metric: value} if metric else {}),  # also under its own name (embedders: "cosine_min", as before)
        "speed_ratio": ratio,
        "artifact": str(run.artifact) if run.artifact else None,
        "error": error,
        "log": str(run.log),
    }


def fleet_exit_code(runs: list[ModelRun]) -> int:
    """0 if every model passed; the shared code if all failures agree (e.g. 3, fidelity); else 1."""
    codes = {r.exit_code for r in runs if not r.ok}
    if not codes:
        return int(ExitCode.OK)
    if len(codes) == 1 and (code := codes.pop()) > 0:
        return code
    return int(ExitCode.FAILURE)
