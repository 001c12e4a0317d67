"""Which int8 sites keep a static-int8 model from the fidelity search's goal, judged as the search judges.

Given an artifact holding ``openvino`` (the fp32 IR) and ``openvino-qint8`` (NNCF static int8), this keeps
groups of int8 sites in float by the search's own graph surgery (``export_openvino_fidelity._KeepOutOfInt8``):
the weight MatMuls, the attention scores' int8 query / key inputs and the int8 embedding tables
(``exporter.builders.ov_int8_sites``), alone and together. Each model is scored on the search's texts (built-in
calibration + tokenizer-derived samples, split into ranking / held-out as the search splits them, never the probe
set) against the torch reference, and judged by ``fidelity_search.judge`` with the catalogue's search options:
whether it counts, the min cosine, nn@10 and the worst stratum at its lower bound. Written to
``benchmarks/results/int8_sites-<UTC>.txt``.

    PYTHONPATH=. .venv/bin/python benchmarks/int8_sites.py ART --source SNAPSHOT [--hf-home DIR]
"""

from __future__ import annotations

import time

from _common import artifact_parser, load_average, machine, offline_hub, stopwatch, write_results


def main() -> None:
    args = artifact_parser(__doc__.splitlines()[0]).parse_args()
    offline_hub(args)
    import openvino as ov

    from exporter.builders import fidelity_search, ov_int8_sites
    from exporter.builders.context import BuildContext
    from exporter.builders.export_openvino import BASE_FILE
    from exporter.builders.export_openvino_fidelity import OvScorer, _KeepOutOfInt8, weight_matmuls
    from exporter.builders.options import OvFidelityOptions
    from exporter.quality.probes import builtin_calibration
    from exporter.variants import BY_ID

    art = args.artifact.resolve()
    lines = [machine(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), f"artifact {art}"]
    print("\n".join(lines), flush=True)
    core = ov.Core()
    base = core.read_model(art / BASE_FILE)
    quantized = core.read_model(art / BY_ID["openvino-qint8"].file_name)
    ctx = BuildContext(source_dir=args.source, stage_dir=art, calibration_texts=builtin_calibration)
    texts, strata = fidelity_search.search_texts(ctx)
    scorer = OvScorer(ctx, texts, fidelity_search.calibration_reference(ctx, texts), strata)
    opts = OvFidelityOptions().search
    ranking, held = fidelity_search.holdout_split(texts, opts.holdout_fraction)
    matmuls = list(weight_matmuls(base))
    sites = ov_int8_sites.site_kinds(quantized)
    attention = [n for n, k in sites.items() if k == "attention_scores"]
    tables = [n for n, k in sites.items() if k == "embeddings"]
    hooks = _KeepOutOfInt8(quantized, base, {}, matmuls + list(sites))
    lines.append(
        f"{len(texts)} search texts ({len(ranking)} ranking / {len(held)} held-out); goal: the catalogue's search "
        f"options (cosine_min >= {opts.goal_cosine_min}, nn@10 >= {opts.goal_nn10}, each stratum's nn@10 at its "
        f"lower bound >= {opts.target_nn10}); {len(matmuls)} weight MatMuls, {len(attention)} attention ops, "
        f"{len(tables)} int8 tables"
    )
    groups = [
        ("all int8", []),
        ("embedding tables", tables),
        ("attention scores", attention),
        ("tables + attention", tables + attention),
        ("weight MatMuls", matmuls),
        ("weight MatMuls + tables", matmuls + tables),
        ("weight MatMuls + attention", matmuls + attention),
        ("every site (the fp32 IR)", matmuls + tables + attention),
    ]
    for label, names in groups:
        with stopwatch() as t:
            model = hooks.keep_in_float(names) if names else quantized
            seen, heldout = scorer.metrics(model, ranking), scorer.metrics(model, held)
            verdict = fidelity_search.judge(seen, heldout, opts)
        worst = seen.get("nn10_worst_stratum") or {}
        row = (
            f"{label:<28} in float {len(names):>3}  counts {str(verdict['counts']):<5}  ranking cos_min "
            f"{seen['cosine_min']:.5f} nn@10 {seen['neighbour_agreement_at_10']:.4f} worst stratum "
            f"{worst.get('stratum')} {worst.get('value')}  held-out cos_min {heldout['cosine_min']:.5f}"
            f"  ({t.seconds:.1f} s, load {load_average()})"
        )
        print(row, flush=True)
        lines.append(row)
    write_results("int8_sites", lines)


if __name__ == "__main__":
    main()
