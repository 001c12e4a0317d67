"""Export + verify wall time per support-table row (``exporter.support``), so cost growth per shape is visible.

    PYTHONPATH=. .venv/bin/python benchmarks/shapes_wall_time.py [--rows ID,ID] [--variants onnx,onnx-o2,openvino]

For each row with a tiny model in ``tests/source/test_shapes.py`` (the same model the tests build): build it, run
``exporter export`` in-process with the row's allowed variants among ``--variants`` (the default probe set),
then ``exporter verify`` (parity re-run in a fresh process). Prints one line per row with the two wall times
and the CPU it ran on (model, cores, ISA flags) and the 1-minute load average before and after, since other
work on the machine inflates wall time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import load_average, machine, stopwatch


def run_row(row_id: str, kwargs: dict, wanted: list[str], root: Path) -> dict:
    from exporter import support
    from exporter.pipeline import ExportPlan, run_export
    from exporter.quality.verify import verify
    from tests.tiny_models import build_tiny_embedder

    variants = [v for v in wanted if v in support.BY_ID[row_id].allowed()]
    src = build_tiny_embedder(root / row_id / "src", **kwargs)
    with stopwatch() as exported:
        outcome = run_export(ExportPlan(model=str(src), variants=variants, out=root / row_id / "art"))
    with stopwatch() as verified:
        report = verify(outcome.artifact)
    return {
        "row": row_id,
        "variants": variants,
        "export_s": exported.seconds,
        "verify_s": verified.seconds,
        "export_ok": not outcome.failed,
        "verify_ok": report.ok,
    }


def main() -> None:
    from tests.source.test_shapes import SHAPE_MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(SHAPE_MODELS), help="comma-separated row ids")
    parser.add_argument("--variants", default="onnx,onnx-o2,openvino", help="variants to build where allowed")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(machine())
    print(f"{'row':<50} {'variants':<24} {'export s':>9} {'verify s':>9}  ok")
    total = 0.0
    with tempfile.TemporaryDirectory(prefix="shapes-bench-") as tmp:
        for row_id in args.rows.split(","):
            r = run_row(row_id, SHAPE_MODELS[row_id], args.variants.split(","), Path(tmp))
            total += r["export_s"] + r["verify_s"]
            ok = "yes" if r["export_ok"] and r["verify_ok"] else "NO"
            print(f"{r['row']:<50} {','.join(r['variants']):<24} {r['export_s']:>9.1f} {r['verify_s']:>9.1f}  {ok}")
    print(f"total export + verify: {total:.1f} s; load average after: {load_average()}")


if __name__ == "__main__":
    main()
