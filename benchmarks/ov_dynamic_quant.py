"""OpenVINO's dynamic int8 activations against NNCF's static ones, judged as the fidelity search judges, side by side.

OpenVINO's CPU plugin quantises the activations of a weight-compressed MatMul at run time, per group of
``DYNAMIC_QUANTIZATION_GROUP_SIZE`` input channels of each token (32 by default; 0 turns it off), and runs the
MatMul on int8 units. So ``openvino-int8-weights`` is int8 compute with per-token ranges, where
``openvino-qint8`` has NNCF's one static range per tensor. This script asks whether a group size makes weight-only
int8 pass the search's goal at a speed near all-int8.

Given an artifact holding ``openvino``, ``openvino-qint8`` and ``openvino-int8-weights``, each row compiles one IR
with one config (f32 pinned, as the variants are), scores it on the search's texts (calibration + tokenizer-derived
samples, ranking / held-out split, never the probe set) against the torch reference with
``fidelity_search.judge`` and the catalogue's search options, then times every row side by side on the probe
texts in length-sorted batches of 32 (interleaved rounds, median; ``_common.ov_throughput``) and prints the ratio
to all-int8. Written to ``benchmarks/results/ov_dynamic_quant-<UTC>.txt``.

    PYTHONPATH=. .venv/bin/python benchmarks/ov_dynamic_quant.py ART --source SNAPSHOT [--hf-home DIR] [--rounds 5]
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import artifact_parser, load_average, machine, offline_hub, ov_throughput, stopwatch, write_results
from fidelity_units import batches

GROUP_SIZES = (0, 8, 16, 32, 64)


def rows(art: Path) -> list[tuple[str, Path, dict]]:
    """(label, IR path, compile config) per row: fp32, all-int8, then weight-only int8 at each group size."""
    from exporter.variants import BY_ID

    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    out = [
        ("openvino (fp32)", art / BY_ID["openvino"].file_name, f32),
        ("openvino-qint8 (all int8)", art / BY_ID["openvino-qint8"].file_name, f32),
    ]
    weights = art / BY_ID["openvino-int8-weights"].file_name
    for size in GROUP_SIZES:
        label = f"int8-weights, dyn. group {size}" + (" (off)" if size == 0 else "")
        out.append((label, weights, {**f32, "DYNAMIC_QUANTIZATION_GROUP_SIZE": str(size)}))
    return out


def main() -> None:
    parser = artifact_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    offline_hub(args)
    import openvino as ov

    from exporter.builders import fidelity_search
    from exporter.builders.context import BuildContext
    from exporter.builders.export_openvino_fidelity import OvScorer
    from exporter.builders.options import OvFidelityOptions
    from exporter.quality.probes import builtin_calibration

    art = args.artifact.resolve()
    lines = [machine(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), f"artifact {art}"]
    print("\n".join(lines), flush=True)
    ctx = BuildContext(source_dir=args.source, stage_dir=art, calibration_texts=builtin_calibration)
    texts, strata = fidelity_search.search_texts(ctx)
    opts = OvFidelityOptions().search
    ranking, held = fidelity_search.holdout_split(texts, opts.holdout_fraction)
    core = ov.Core()

    class Scorer(OvScorer):  # the search's scorer, compiled with the row's config
        config: dict = {}

        def _compile(self, ov_model):
            return core.compile_model(ov_model, "CPU", self.config)

    scorer = Scorer(ctx, texts, fidelity_search.calibration_reference(ctx, texts), strata)
    lines.append(
        f"{len(texts)} search texts ({len(ranking)} ranking / {len(held)} held-out); goal: cosine_min >= "
        f"{opts.goal_cosine_min}, nn@10 >= {opts.goal_nn10}, each stratum's nn@10 at its lower bound >= "
        f"{opts.target_nn10}; speed: probe texts, batch 32, 2 threads, {args.rounds} interleaved rounds"
    )
    table = rows(art)
    verdicts = {}
    for label, xml, config in table:
        scorer.config = config
        model = core.read_model(xml)
        seen, heldout = scorer.metrics(model, ranking), scorer.metrics(model, held)
        verdicts[label] = (fidelity_search.judge(seen, heldout, opts), seen, heldout)
        print(f"scored {label}", flush=True)
    threads = {"INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY"}
    with stopwatch() as t:
        timed = {label: (xml, {**threads, **cfg}) for label, xml, cfg in table}
        speed = ov_throughput(timed, batches(art), args.rounds)
    base = speed["openvino-qint8 (all int8)"]
    for label, _, _ in table:
        verdict, seen, heldout = verdicts[label]
        worst = seen.get("nn10_worst_stratum") or {}
        lines.append(
            f"{label:<32} counts {str(verdict['counts']):<5} ranking cos_min {seen['cosine_min']:.5f} nn@10 "
            f"{seen['neighbour_agreement_at_10']:.4f} worst stratum {worst.get('stratum')} {worst.get('value')}  "
            f"held-out cos_min {heldout['cosine_min']:.5f}  {speed[label]:7.1f} texts/s  x all-int8 "
            f"{speed[label] / base:.2f}"
        )
        print(lines[-1], flush=True)
    lines.append(f"timing took {t.seconds:.0f} s; load {load_average()}")
    write_results("ov_dynamic_quant", lines)


if __name__ == "__main__":
    main()
