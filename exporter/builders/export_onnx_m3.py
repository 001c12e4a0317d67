"""bge-m3 (FlagEmbedding's three heads) as one graph with three outputs, for ONNX and OpenVINO.

A bge-m3 folder is a sentence-transformers model (XLM-RoBERTa -> Pooling[cls] -> Normalize: the dense head)
with FlagEmbedding's two extra heads saved beside it as torch pickles of a ``torch.nn.Linear`` state dict:

- ``sparse_linear.pt``: Linear(hidden, 1); ``relu`` of it over the token states is each token's weight;
- ``colbert_linear.pt``: Linear(hidden, d) over the token states but the first (CLS), masked, normalised.

The heads are loaded with ``torch.load(weights_only=True)`` from a size-capped regular file and must be a
plain ``{"weight", "bias"}`` state dict of those shapes (else one line, exit 2); the source resolver records
their hashes like every source file (``exporter.source.vetting``). The formulas are FlagEmbedding's
(``EncoderOnlyEmbedderM3Model._dense_embedding`` / ``_sparse_embedding`` / ``_colbert_embedding``, normalised
as ``EncoderOnlyEmbedderM3ModelForInference`` does); FlagEmbedding itself is not a dependency: ``M3Reference``
is a small torch implementation of them and is the gate's reference. The graph (``M3Graph``, traced with
``torch.onnx.export``) emits the per-token outputs; the per-token-id aggregation of the lexical weights and the
dropping of padding are the runtime's (``exporter.runtime.bge_m3``), which serves every variant.
"""

from __future__ import annotations

import time
from pathlib import Path

from exporter.builders import kit
from exporter.errors import ExportFailed, UsageError
from exporter.runtime import bge_m3 as rt

OPSET = 17
SPARSE_HEAD = "sparse_linear.pt"
COLBERT_HEAD = "colbert_linear.pt"
HEAD_FILES = (SPARSE_HEAD, COLBERT_HEAD)  # exporter.kinds names them as the kind's marker files
HEAD_MAX_BYTES = 256 << 20  # bge-m3's colbert_linear.pt is 4 MB (1024 x 1024 fp32)
CHECK_MIN_COSINE = 0.9999
CHECK_TEXTS = ("Hello world", "what is the quick brown fox", "The quick brown fox jumps over the lazy dog.", "")


# ------------------------------------------------------------------------------------------- heads
def load_head(path: Path, hidden: int, out_features: int | None = None):
    """A ``torch.nn.Linear(hidden, out)`` with the state dict saved at ``path`` (``out_features``: required
    width, None for any). UsageError (exit 2) for a file that is not a plain state dict of that shape."""
    import io

    import torch

    from exporter.user_files import read_user_file

    name = Path(path).name
    fix = f"Re-save it as FlagEmbedding does: torch.save(linear.state_dict(), '{name}')."
    data = read_user_file(Path(path), what=f"bge-m3 head {name}", max_bytes=HEAD_MAX_BYTES)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only refuses every global but tensors and plain containers
        raise UsageError(
            f"{name} is not a state dict of tensors that torch.load(weights_only=True) accepts (a pickled module "
            f"or other objects, or not a torch file: {type(exc).__name__}); it is not loaded any other way.",
            fix,
        ) from None
    keys = sorted(state) if isinstance(state, dict) else None
    if keys != ["bias", "weight"] or not all(isinstance(state[k], torch.Tensor) for k in keys):
        what = f"keys {keys}" if keys is not None else type(state).__name__
        raise UsageError(f"{name} is not a plain Linear state dict (weight, bias): it holds {what}.", fix)
    weight, bias = state["weight"], state["bias"]
    out = weight.shape[0] if weight.ndim == 2 else -1
    if (
        weight.ndim != 2
        or weight.shape[1] != hidden
        or tuple(bias.shape) != (out,)
        or (out_features is not None and out != out_features)
        or not weight.is_floating_point()
    ):
        want = f"[{out_features if out_features is not None else 'd'}, {hidden}]"
        raise UsageError(
            f"{name} has weight {list(weight.shape)} / bias {list(bias.shape)}; this model needs weight {want} "
            f"and bias [{out_features if out_features is not None else 'd'}] (hidden size {hidden}).",
            fix,
        )
    linear = torch.nn.Linear(hidden, out)
    linear.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return linear.eval()


def _graph_module():
    import torch
    import torch.nn.functional as F

    class M3Graph(torch.nn.Module):
        """FlagEmbedding's three heads over the encoder's token states (module doc)."""

        def __init__(self, encoder, sparse_linear, colbert_linear):
            super().__init__()
            self.encoder = encoder
            self.sparse_linear = sparse_linear
            self.colbert_linear = colbert_linear

        def forward(self, input_ids, attention_mask):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            dense = F.normalize(h[:, 0], dim=-1)
            sparse = torch.relu(self.sparse_linear(h)).squeeze(-1)
            colbert = self.colbert_linear(h[:, 1:]) * attention_mask[:, 1:][:, :, None].to(h.dtype)
            return dense, sparse, F.normalize(colbert, dim=-1)

    return M3Graph


class M3Reference:
    """The torch reference of a bge-m3 folder (``KindSpec.model_class``): FlagEmbedding's ``encode`` output
    (``dense_vecs``, ``lexical_weights``, ``colbert_vecs``) from the formulas of ``M3Graph``."""

    def __init__(self, path, device: str = "cpu", trust_remote_code: bool = False, **_kw):
        from transformers import AutoModel, AutoTokenizer

        from exporter.source import st_modules

        root = Path(path)
        facts = st_modules.read(root)
        pooling = facts.pooling.name if facts.pooling else None
        if pooling != "cls" or not facts.normalize:
            raise UsageError(
                f"the bge-m3 model's dense head is Pooling[{pooling}] {'-> Normalize' if facts.normalize else ''}; "
                "FlagEmbedding's is the CLS token, normalised (Pooling[cls] -> Normalize).",
                "Export it as a sentence-transformer without the .pt heads, or fix modules.json.",
            )
        tdir = facts.transformer_dir
        self.tokenizer = AutoTokenizer.from_pretrained(str(tdir), trust_remote_code=trust_remote_code)
        encoder = AutoModel.from_pretrained(str(tdir), trust_remote_code=trust_remote_code).eval()
        hidden = int(encoder.config.hidden_size)
        sparse = load_head(root / SPARSE_HEAD, hidden, 1)
        colbert = load_head(root / COLBERT_HEAD, hidden)
        self.graph = _graph_module()(encoder, sparse, colbert).eval().to(device)
        self.device = device
        self.hidden = hidden
        self.colbert_dim = int(colbert.out_features)
        self.max_seq_length = int(facts.max_seq_length or self.tokenizer.model_max_length)
        specials = self.tokenizer.special_tokens_map  # FlagEmbedding's _process_token_weights reads the same
        self.unused = sorted(
            self.tokenizer.convert_tokens_to_ids(specials[t]) for t in rt.UNUSED_SPECIAL_TOKENS if t in specials
        )

    def features(self, texts: list[str]):
        return self.tokenizer(
            list(texts), truncation=True, max_length=self.max_seq_length, padding=True, return_tensors="pt"
        )

    def encode(self, sentences, batch_size: int = 32, **_ignored) -> dict:
        """FlagEmbedding's ``encode(..., return_dense=True, return_sparse=True, return_colbert_vecs=True)``."""
        import numpy as np
        import torch

        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        dense, lexical, colbert = [], [], []
        unused = frozenset(self.unused)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                f = self.features(texts[start : start + batch_size])
                d, s, c = self.graph(f["input_ids"].to(self.device), f["attention_mask"].to(self.device))
                dense.append(d.float().cpu().numpy())
                ids, att = f["input_ids"].numpy(), f["attention_mask"].numpy()
                s, c = s.float().cpu().numpy(), c.float().cpu().numpy()
                for i in range(len(ids)):
                    keep = att[i].astype(bool)
                    lexical.append(rt.lexical_weights(s[i][keep], ids[i][keep], unused))
                    colbert.append(c[i, : max(int(keep.sum()) - 1, 0)])
        return {
            "dense_vecs": np.concatenate(dense) if dense else np.zeros((0, self.hidden), np.float32),
            "lexical_weights": lexical,
            "colbert_vecs": colbert,
        }


def load_reference(path, device: str = "cpu", trust_remote_code: bool = False, local_files_only: bool = True, **_kw):
    """``KindSpec.model_class`` of the bge-m3 kind."""
    return M3Reference(path, device=device, trust_remote_code=trust_remote_code)


def heads_facts(reference: M3Reference | None = None) -> dict:
    """The manifest's record of the heads: file, what it computes and its shape (hashes: ``source.files``)."""
    d = reference.colbert_dim if reference is not None else None
    h = reference.hidden if reference is not None else None
    return {
        "dense": {"from": "CLS token state (Pooling[cls] -> Normalize)", "dim": h, "output": rt.DENSE_OUTPUT},
        "sparse": {
            "file": SPARSE_HEAD,
            "from": "relu(Linear(hidden, 1)) per token; max per token id, CLS/EOS/PAD/UNK left out (runtime)",
            "output": rt.SPARSE_OUTPUT,
        },
        "colbert": {
            "file": COLBERT_HEAD,
            "from": "normalize(Linear(hidden, d) over the tokens after CLS, masked)",
            "dim": d,
            "output": rt.COLBERT_OUTPUT,
        },
    }


# ------------------------------------------------------------------------------------------- graph
def export_graph(reference: M3Reference, dest: Path) -> Path:
    """Trace the reference's ``M3Graph`` to ONNX at ``dest`` (three outputs, dynamic batch and sequence)."""
    import torch

    f = reference.features(["hello world, a short one", "a longer text with more tokens in it than the first"])
    args = tuple(f[n] for n in ("input_ids", "attention_mask"))
    names = ["input_ids", "attention_mask"]
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes[rt.DENSE_OUTPUT] = {0: "batch_size"}
    axes[rt.SPARSE_OUTPUT] = {0: "batch_size", 1: "sequence_length"}
    axes[rt.COLBERT_OUTPUT] = {0: "batch_size", 1: "tokens_after_cls"}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            reference.graph,
            args,
            str(dest),
            input_names=names,
            output_names=list(rt.OUTPUTS),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return dest


def check(reference: M3Reference, artifact: Path, file_name: str, backend: str = "onnx") -> dict[str, float]:
    """The runtime's three outputs against the reference's on a few texts: the dense and every ColBERT vector
    by cosine, the lexical weights by their ids and largest difference."""
    import numpy as np

    served = rt.load(artifact, backend=backend, file_name=file_name)
    ref, got = reference.encode(list(CHECK_TEXTS)), served.encode(list(CHECK_TEXTS))
    low = float(kit.row_cosines(ref["dense_vecs"], got["dense_vecs"]).min())
    worst_weight = 0.0
    sides = (ref["colbert_vecs"], got["colbert_vecs"], ref["lexical_weights"], got["lexical_weights"])
    for r, g, rl, gl in zip(*sides, strict=True):
        if r.shape != g.shape:
            raise ExportFailed(
                f"the bge-m3 runtime served {g.shape[0]} ColBERT vectors for a text, the reference {r.shape[0]}.",
                "A bug in the exporter's bge-m3 tokenisation; report the model.",
            )
        if len(r):
            low = min(low, float(kit.row_cosines(r, g).min()))
        ids = set(rl) | set(gl)
        worst_weight = max([worst_weight, *(abs(rl.get(i, 0.0) - gl.get(i, 0.0)) for i in ids)])
    scale = max((max(w.values(), default=0.0) for w in ref["lexical_weights"]), default=0.0)
    if not low >= CHECK_MIN_COSINE or worst_weight > 1e-3 * max(scale, 1e-6) + 1e-6:
        raise ExportFailed(
            f"the bge-m3 graph disagrees with the reference (min cosine {low:.6f}, lexical weight error "
            f"{worst_weight:.3g} of {scale:.3g}).",
            "Report the model: its traced graph does not compute what its reference does.",
        )
    return {"runtime_min_cosine": low, "runtime_lexical_err_max": float(np.float64(worst_weight))}


def _build_info(ctx, reference, start: float, backend: str) -> dict:
    return {
        "exporter": "exporter.builders.export_onnx_m3 (torch.onnx.export of XLM-R + FlagEmbedding's heads)",
        "graph": "dense (CLS, normalised), per-token sparse weights (relu(sparse_linear)), ColBERT vectors "
        "(colbert_linear after CLS, masked, normalised); lexical aggregation in exporter.runtime.bge_m3",
        "opset": OPSET,
        "outputs": list(rt.OUTPUTS),
        "heads": heads_facts(reference),
        "served_by": f"exporter.runtime.bge_m3, backend {backend} (FlagEmbedding's encode output)",
        "build_seconds": round(time.perf_counter() - start, 2),
    }


def build_m3_graph(ctx, spec):
    """Variant builder (``onnx`` for a bge-m3 model): the traced graph at ``onnx/model.onnx``."""
    from exporter.builders.context import BuildResult

    start = time.perf_counter()
    reference = ctx.reference_model()
    files = kit.traced_onnx(ctx, spec, lambda dest: export_graph(reference, dest), "bge-m3")
    checks = check(reference, ctx.stage_dir, spec.file_name)
    return BuildResult(files=files, build={**_build_info(ctx, reference, start, "onnx"), **checks})


def build_m3_openvino(ctx, spec):
    """Variant builder (``openvino`` for a bge-m3 model): the same traced graph as an fp32 OpenVINO IR."""
    from exporter.builders.context import BuildResult

    start = time.perf_counter()
    reference = ctx.reference_model()
    files, ir_facts = kit.traced_openvino(ctx, spec, lambda dest: export_graph(reference, dest), "bge-m3")
    checks = check(reference, ctx.stage_dir, spec.file_name, backend="openvino")
    return BuildResult(files=files, build={**_build_info(ctx, reference, start, "openvino"), **ir_facts, **checks})


# ------------------------------------------------------------------------------------------ variants
class M3Model(kit.RuntimeVariant):
    """A built bge-m3 variant served by ``exporter.runtime.bge_m3`` with the reference's ``encode`` (what the
    gate, verify and bench call)."""

    def __init__(self, artifact: Path, backend: str, file_name: str | None, threads: int | None = None):
        super().__init__(rt.load(Path(artifact), backend=backend, file_name=file_name, threads=threads))
        self.max_seq_length = self.encoder.max_seq_length

    def encode(self, sentences, batch_size: int = 32, **_ignored) -> dict:
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        return self.encoder.encode(texts, batch_size=batch_size)


def load_variant(artifact: Path, variant: dict, kind, threads: int | None = None) -> M3Model:
    """``runners.variant`` loader of the bge-m3 kind (``KindSpec.variant_loader``)."""
    load = variant["load"]
    return M3Model(Path(artifact), load["backend"], load.get("file_name"), threads)
