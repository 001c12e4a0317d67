"""How the tool's wall time and memory grow with model size: export + verify + bench for three models.

Models (``--models``, default all three):
- ``tiny``: the 2-layer, 32-wide BERT sentence-transformer the tests build (tests/tiny_models.py);
- ``minilm``: the embedded default, all-MiniLM-L6-v2 (22M parameters, ``exporter seed-default``);
- ``bert-base``: a BERT-base-shaped model (hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 30522,
  110M parameters) built here with random weights and the MiniLM tokenizer (the same 30522-token vocab),
  saved as a sentence-transformers folder with mean pooling and normalisation. Random weights: its speed
  and memory are a real 110M model's; its int8 fidelity is not (the gate results are shown, not judged).

Each phase runs the real CLI (``exporter export`` / ``verify`` / ``bench``) in its own process, so the
peak resident memory printed is that phase's own (``wait4`` rusage ``ru_maxrss``); wall time is measured
around the process. The bench's own record (one runner resident at a time, peak RSS, batches sorted by
length) is read from the manifest it writes. Growth is printed as ratios to the previous model.

Exit status: 1 when a phase fails (crash or any exit other than 0, or 3 for a variant missing its
fidelity gate, which is reported in the table as "gate").

    .venv/bin/python benchmarks/scaling.py                       # tiny, minilm, bert-base
    .venv/bin/python benchmarks/scaling.py --models tiny,minilm --variants onnx,openvino
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO_ROOT, machine, stopwatch

MODELS = ("tiny", "minilm", "bert-base")
PHASES = ("export", "verify", "bench")
FIDELITY_EXIT = 3  # a variant missed its gate: the phase ran, the result is a measurement
BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def build_bert_base(out: Path, seed: int = 0) -> Path:
    """A BERT-base-shaped sentence-transformer with random weights and the MiniLM tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from exporter.source.default_model import packaged_model_dir

    torch.manual_seed(seed)
    work = out.parent / f".{out.name}.hf"
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir())
    tokenizer.save_pretrained(work)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **BERT_BASE)
    BertModel(config).save_pretrained(work, safe_serialization=True)
    transformer = models.Transformer(str(work), max_seq_length=256)
    pool = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pool, models.Normalize()], device="cpu").save(
        str(out), safe_serialization=True
    )
    shutil.rmtree(work, ignore_errors=True)
    return out


def prepare(name: str, work: Path) -> tuple[str, Path]:
    """The MODEL argument of ``exporter export`` for ``name`` (a local folder, or the pinned default), and
    the folder its weights are in."""
    if name == "tiny":
        from tests.tiny_models import build_tiny_sentence_transformer

        folder = build_tiny_sentence_transformer(work / "tiny-st")
        return str(folder), folder
    if name == "minilm":
        from exporter.source.default_model import DEFAULT_MODEL, packaged_model_dir, seed_default

        seed_default()  # into HF_HOME, which main points at the work folder
        return DEFAULT_MODEL, packaged_model_dir()
    folder = build_bert_base(work / "bert-base-st")
    return str(folder), folder


def count_parameters(folder: Path) -> int:
    """Parameters in the model's safetensors weights."""
    from safetensors import safe_open

    total = 0
    for path in folder.rglob("*.safetensors"):
        with safe_open(str(path), "np") as f:
            total += sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    return total


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def run_phase(cmd: list[str], env: dict) -> dict:
    """Run one CLI phase in its own process: wall seconds, its own peak RSS (MiB), exit code, stderr tail."""
    with stopwatch() as watch, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-1500:]
    return {
        "seconds": watch.seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "code": proc.returncode,
        "stderr": tail,
    }


def measure_model(name: str, args, work: Path, env: dict) -> dict:
    """Prepare one model, then export, verify and bench it, each phase in its own process."""
    model, folder = prepare(name, work)
    out = work / f"artifact-{name}"
    exporter = [sys.executable, "-m", "exporter"]
    cmds = {
        "export": [*exporter, "export", model, "--variants", args.variants, "--out", str(out), "--force"],
        "verify": [*exporter, "verify", str(out)],
        "bench": [
            *exporter, "bench", str(out), "--threads", str(args.threads), "--rounds", str(args.rounds),
            "--max-texts", str(args.max_texts), "--batch-sizes", args.batch_sizes, "--no-report",
        ],
    }  # fmt: skip
    row = {"model": name, "parameters": count_parameters(folder), "phases": {}}
    for phase, cmd in cmds.items():
        print(f"  {name}: {phase} ...", file=sys.stderr, flush=True)
        result = row["phases"][phase] = run_phase(cmd, env)
        if result["code"] not in (0, FIDELITY_EXIT):
            print(f"{name} {phase} failed (exit {result['code']}):\n{result['stderr']}", file=sys.stderr)
            row["failed"] = phase
            return row
    manifest = json.loads((out / "manifest.json").read_text())
    row["bench"] = manifest["bench"]
    row["gates"] = {v["id"]: v["status"] for v in manifest["variants"]}
    row["ratios"] = {v["id"]: v["bench"]["ratio_to_torch"] for v in manifest["variants"] if v.get("bench")}
    return row


def print_report(rows: list[dict], args) -> None:
    print(machine())
    print(
        f"variants {args.variants}; bench: {args.threads} thread(s), {args.rounds} round(s), "
        f"{args.max_texts} texts, batch sizes {args.batch_sizes}; load average now {os.getloadavg()[0]:.2f}"
    )
    print(f"\n{'model':<10}{'params':>8}" + "".join(f"{p + ' s':>11}{p + ' MiB':>13}" for p in PHASES))
    for r in rows:
        cells = "".join(
            f"{r['phases'][p]['seconds']:>11.1f}{r['phases'][p]['peak_rss_mb']:>13.0f}"
            if p in r["phases"]
            else f"{'-':>11}{'-':>13}"
            for p in PHASES
        )
        failed = f"  FAILED in {r['failed']}" if "failed" in r else ""
        print(f"{r['model']:<10}{r['parameters'] / 1e6:>7.2f}M{cells}{failed}")
    print("\nbench record (from the manifest):")
    for r in (r for r in rows if "bench" in r):
        b, mem, top = r["bench"], r["bench"]["memory"], str(r["bench"]["batch_sizes"][-1])
        by_runner = ", ".join(f"{k} {v:.0f}" for k, v in mem["rss_mb_by_runner"].items())
        print(
            f"  {r['model']}: peak RSS {mem['peak_rss_mb']:.0f} MiB, {mem['runners_resident']} runner resident "
            f"at a time (RSS with each loaded, MiB: {by_runner}); batches {b['batching'].split(':')[0]}"
        )
        ratios = ", ".join(f"{k} {v[top]:.2f}x" for k, v in r["ratios"].items())
        gates = ", ".join(f"{k} {v}" for k, v in r["gates"].items())
        print(f"    x torch @{top}: {ratios}; gate: {gates}")
    print("\ngrowth against the previous model (x parameters -> x time, x peak memory per phase):")
    done = [r for r in rows if "failed" not in r]
    for prev, cur in zip(done, done[1:], strict=False):
        growth = ", ".join(
            f"{p} {cur['phases'][p]['seconds'] / prev['phases'][p]['seconds']:.1f}x time "
            f"{cur['phases'][p]['peak_rss_mb'] / prev['phases'][p]['peak_rss_mb']:.1f}x memory"
            for p in PHASES
        )
        scale = cur["parameters"] / prev["parameters"]
        print(f"  {prev['model']} -> {cur['model']}: x{scale:.1f} parameters: {growth}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--variants", default="onnx,openvino,openvino-qint8")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-texts", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--work", type=Path, help="keep models and artifacts here (default: a temp folder, removed)")
    args = ap.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := [m for m in names if m not in MODELS]:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    os.environ.pop("HF_HUB_CACHE", None)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    rows = []
    try:
        for name in names:
            rows.append(measure_model(name, args, work, env))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_report(rows, args)
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
