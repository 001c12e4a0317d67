"""What the norm gate sees on the real variants of an artifact (e.g. the embedded default, all-MiniLM-L6-v2).

For every built variant of ARTIFACT, against the torch reference at its pinned source, on the artifact's
probe texts (the built-in set unless --probe):

- served embeddings (the model's own pipeline: mean pooling + Normalize for all-MiniLM-L6-v2), through
  sentence-transformers and, for ONNX graphs, the torch-free runtime (from the manifest's parity entry);
- the un-normalised mean-pooled token embeddings (``encode(output_value="token_embeddings")`` averaged):
  what a model without a Normalize module (a dot-product model) would serve from the same graph, so the
  norm error of each precision class is measured, not assumed;
- two real norm changes that keep every direction: mean pooling replaced by mean_sqrt_len_tokens pooling
  (a wrong pooling config in a dot model), and the graph output scaled by 1.5 (a buggy build).

    python benchmarks/norm_fidelity.py ARTIFACT [--probe FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import machine


def _pooled(model, texts: list[str]):
    import numpy as np

    tokens = model.encode(texts, batch_size=32, output_value="token_embeddings", show_progress_bar=False)
    return np.stack([t.float().mean(dim=0).cpu().numpy() for t in tokens])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--probe", type=Path)
    args = ap.parse_args()

    import numpy as np

    from exporter import manifest as mf
    from exporter.quality import parity, probes
    from exporter.runners.reference import load_reference, recorded_source
    from exporter.runners.variant import load_variant

    print(machine())  # int8 kernels round differently by ISA (VNNI or not): the figures hold for this CPU
    manifest = mf.load(args.artifact)
    texts = probes.load_text_set(args.probe, "probe").texts
    src = recorded_source(manifest)
    reference = load_reference(None, src.path)
    ref = _pooled(reference, texts)
    ref_norms = np.linalg.norm(ref, axis=1)
    print(
        f"{len(texts)} probe texts; un-normalised mean-pooled reference norms: "
        f"min {ref_norms.min():.3f}, median {np.median(ref_norms):.3f}, max {ref_norms.max():.3f}"
    )
    header = (
        f"{'variant':<24} {'class':<5} {'served cos_min':>14} {'served norm err':>15} "
        f"{'runtime norm err':>16} {'unnormalised cos_min':>20} {'unnormalised norm err max/mean':>31}"
    )
    print(header)
    rows = []
    for v in manifest["variants"]:
        if v["status"] == "error":
            continue
        model = load_variant(args.artifact, v, manifest["model"]["kind"])
        m = parity.compare(ref, _pooled(model, texts))
        p = v["parity"]
        rt = ((p.get("serving_paths") or {}).get("runtime") or {}).get("norm_rel_err_max")
        row = {
            "id": v["id"],
            "precision": v["precision"],
            "served_cosine_min": p["cosine_min"],
            "served_norm_rel_err_max": p.get("norm_rel_err_max"),
            "runtime_norm_rel_err_max": rt,
            "unnormalised_cosine_min": m.cosine_min,
            "unnormalised_norm_rel_err_max": m.norm_rel_err_max,
            "unnormalised_norm_rel_err_mean": m.norm_rel_err_mean,
        }
        rows.append(row)
        print(
            f"{v['id']:<24} {v['precision']:<5} {p['cosine_min']:>14.6f} {p.get('norm_rel_err_max') or 0:>15.2e} "
            f"{rt if rt is not None else float('nan'):>16.2e} {m.cosine_min:>20.6f} "
            f"{m.norm_rel_err_max:>15.2e} / {m.norm_rel_err_mean:.2e}"
        )
    lengths = np.array([len(t) for t in reference.encode(texts, output_value="token_embeddings", batch_size=32)])
    sqrt_len = ref * np.sqrt(lengths)[:, None]  # mean_sqrt_len_tokens pooling: sum / sqrt(len) = mean * sqrt(len)
    for name, cand in (("mean_sqrt_len pooling", sqrt_len), ("output x 1.5", 1.5 * ref)):
        m = parity.compare(ref, cand)
        print(
            f"{'[fault] ' + name:<30} cos_min {m.cosine_min:.6f}  norm err max {m.norm_rel_err_max:.3g}  "
            f"mean {m.norm_rel_err_mean:.3g}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
