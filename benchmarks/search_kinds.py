"""The OpenVINO int8 search with other candidate kinds or sites fixed in float, on a real model's artifact.

Builds ``openvino-qint8-fidelity`` into a copy of an artifact that holds ``openvino`` (the fp32 IR), with the
catalogue's options except ``candidate_kinds`` and ``float_sites`` (``OvFidelityOptions``), and prints what the
search did: candidates by kind, whether it reached its goal, why it stopped, what it kept in float, each scored
model's ranking / held-out metrics and its cost in counts and seconds. Written to
``benchmarks/results/search_kinds-<UTC>.txt``.

    PYTHONPATH=. .venv/bin/python benchmarks/search_kinds.py ART --source SNAPSHOT \
        --kinds qkv,attention_output,ffn_in,ffn_out,attention_scores [--float-sites embeddings] [--hf-home DIR]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import artifact_parser, load_average, machine, offline_hub, stopwatch, write_results


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def main() -> None:
    parser = artifact_parser(__doc__.splitlines()[0])
    parser.add_argument("--kinds", type=_csv, required=True, help="candidate kinds, comma-separated")
    parser.add_argument("--float-sites", type=_csv, default=(), help="site kinds kept in float before the search")
    args = parser.parse_args()
    offline_hub(args)
    from exporter.builders.context import BuildContext
    from exporter.builders.export_openvino import BASE_FILE
    from exporter.quality.probes import builtin_calibration
    from exporter.variants import BY_ID

    art = args.artifact.resolve()
    spec = BY_ID["openvino-qint8-fidelity"]
    spec = replace(spec, options=replace(spec.options, candidate_kinds=args.kinds, float_sites=args.float_sites))
    lines = [
        machine(),
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        f"artifact {art}; candidate_kinds {list(args.kinds)}; float_sites {list(args.float_sites)}",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        for suffix in (".xml", ".bin"):
            (stage / BASE_FILE).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(art / Path(BASE_FILE).with_suffix(suffix), stage / Path(BASE_FILE).with_suffix(suffix))
        ctx = BuildContext(source_dir=args.source, stage_dir=stage, calibration_texts=builtin_calibration)
        with stopwatch() as t:
            build = spec.build_fn()(ctx, spec).build
    search = build["search"]
    kept = [f"{o['op']} ({o['kind']})" for o in build["ops_in_float"] + build["ops_split"]]
    lines += [
        f"candidates by kind {build['candidates_by_kind']}; sites in float {len(build['sites_in_float'])}",
        f"reached={search['reached']} stopped_by={search['stopped_by']}; kept out of int8: {len(kept)}",
        f"cost {search.get('cost')}; build {t.seconds:.1f} s (NNCF included); load {load_average()}",
    ]
    for step in search["steps"]:
        ranking, held = step.get("ranking") or {}, step.get("heldout") or {}
        lines.append(
            f"  kept {step['kept_float']:>3} counts {str(step['counts']):<5}"
            f" ranking cos_min {ranking.get('cosine_min')} nn@10 {ranking.get('neighbour_agreement_at_10')}"
            f" worst {ranking.get('nn10_worst_stratum')}"
            f" held-out cos_min {held.get('cosine_min')} ({step.get('why') or 'counts'})"
        )
    lines += [f"  {k}" for k in kept]
    print("\n".join(lines[3:]), flush=True)
    write_results("search_kinds", lines)


if __name__ == "__main__":
    main()
