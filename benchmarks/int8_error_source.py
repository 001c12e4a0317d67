"""Where a model's static-int8 error comes from, measured on the calibration texts (never the probe set).

Given an artifact holding ``openvino`` (the fp32 IR) and ``openvino-qint8`` (NNCF static int8, the catalogue's
options), this scores the int8 model with parts of it put back in float against the fp32 IR, on the built-in
calibration texts plus the samples derived from the model's tokenizer (what the fidelity search ranks on).
Everything goes through the fidelity search's one screening model
(``export_openvino_fidelity.switch_model``, every weight MatMul behind a switch input, compiled once):

- all int8; every weight MatMul in float;
- each MatMul kind (query/key/value, attention output, FFN in, FFN out) in float, alone;
- each layer's six MatMuls in float, alone;
- the int8 inputs of the attention scores (NNCF's FakeQuantize on the query and key outputs) left out
  (a separate model: those are activation quantisers, not weight MatMuls).

For each: min and mean cosine to the fp32 IR (mean pooling and normalisation as the model's modules do) and
the worst text. Written to ``benchmarks/results/int8_error_source-<UTC>.txt``.

    PYTHONPATH=. .venv/bin/python benchmarks/int8_error_source.py ART --source SNAPSHOT [--hf-home DIR] [--max-texts N]
"""

from __future__ import annotations

import re
import time

import numpy as np
from _common import artifact_parser, load_average, machine, offline_hub, stopwatch, write_results


def main() -> None:
    parser = artifact_parser(__doc__.splitlines()[0])
    parser.add_argument("--max-texts", type=int, default=0, help="every k-th text, at most this many (0: all)")
    args = parser.parse_args()
    offline_hub(args)
    import openvino as ov

    from exporter.builders import fidelity_search
    from exporter.builders.context import BuildContext
    from exporter.builders.export_openvino import BASE_FILE
    from exporter.builders.export_openvino_fidelity import OvScorer, Switched, switch_model, weight_matmuls
    from exporter.quality.probes import builtin_calibration
    from exporter.variants import BY_ID

    header = [machine(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), f"artifact {args.artifact}"]
    print("\n".join(header), flush=True)
    art = args.artifact.resolve()
    core = ov.Core()
    base = core.read_model(art / BASE_FILE)
    quantized = core.read_model(art / BY_ID["openvino-qint8"].file_name)
    ctx = BuildContext(source_dir=args.source, stage_dir=art, calibration_texts=builtin_calibration)
    texts = fidelity_search.search_texts(ctx).texts
    if args.max_texts and len(texts) > args.max_texts:
        texts = texts[:: -(-len(texts) // args.max_texts)]
    # the reference here is the fp32 IR through the model's own modules (what the int8 model departs from)
    dim = ctx.reference_model().get_sentence_embedding_dimension()
    scorer = OvScorer(ctx, texts, np.zeros((len(texts), dim), dtype=np.float32))
    idx = np.arange(len(texts))
    with stopwatch() as t:
        scorer.reference = scorer.encode(base, idx)
    lines = header + [
        f"{len(texts)} calibration texts (built-in + tokenizer-derived); fp32 IR encode {t.seconds:.1f} s"
    ]
    kinds = weight_matmuls(base)
    names = list(kinds)
    with stopwatch() as t:
        model = switch_model(quantized, base, names, {})
    lines.append(f"screening model with {len(names)} switches built in {t.seconds:.1f} s")

    def score(label: str, on: list[str] | None = None, ov_model=None) -> None:
        if ov_model is None:
            switch = np.array([1.0 if n in set(on or []) else 0.0 for n in names], dtype=np.float32)
            ov_model = Switched(model, switch)
        with stopwatch() as t:
            cos = scorer.cosines(ov_model)
        worst = int(np.argmin(cos))
        row = (
            f"{label:<44} min {cos.min():.5f}  mean {cos.mean():.6f}  texts < 0.99: {int((cos < 0.99).sum()):>3}"
            f"  worst {texts[worst][:50]!r}  ({t.seconds:.1f} s, load {load_average()})"
        )
        print(row, flush=True)
        lines.append(row)

    score("all int8")
    score("every weight MatMul in float", names)
    for kind in ("qkv", "attention_output", "ffn_in", "ffn_out"):
        score(f"{kind} in float ({sum(k == kind for k in kinds.values())})", [n for n in names if kinds[n] == kind])
    layers = sorted({int(m.group(1)) for n in names if (m := re.search(r"layer\.(\d+)\.", n))})
    for layer in layers:
        score(f"layer {layer} (6 MatMuls) in float", [n for n in names if f"layer.{layer}." in n])
    qk = quantized.clone()
    bypassed = 0
    for op in qk.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and all(
            t.get_node().get_type_name() != "MatMul" for t in op.output(0).get_target_inputs()
        ):
            for target in list(op.output(0).get_target_inputs()):
                target.replace_source_output(op.input_value(0))
            bypassed += 1
    qk.validate_nodes_and_infer_types()
    score(f"attention-score inputs (q, k) not int8 ({bypassed} FQ)", ov_model=qk)
    write_results("int8_error_source", lines)


if __name__ == "__main__":
    main()
