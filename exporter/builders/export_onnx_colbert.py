"""ColBERT (PyLate) as one graph: Transformer -> Dense projection(s) -> per-token L2 normalisation.

    input_ids, attention_mask [, token_type_ids]   int64 [batch, sequence]
    token_embeddings                                float [batch, sequence, dim], each token L2-normalised
    attention_mask_out                              int64 [batch, sequence] (the mask the runtime keeps by)

The graph is traced from the PyLate reference itself (``torch.onnx.export`` of its module chain, so every
Dense PyLate loads is inside). Tokenisation, the [Q]/[D] prefix token, query expansion with mask tokens and
the document skiplist are the runtime's (``exporter.runtime.colbert``), read from the model's own
``config_sentence_transformers.json``. PyLate has no ONNX backend, so variants are checked, gated and
served through that runtime (``ColbertModel``: PyLate's ``encode(texts, is_query=...)``). OpenVINO converts
the same traced graph (``openvino.convert_model``), the route the repo takes for traced graphs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.builders import kit
from exporter.errors import ExportFailed
from exporter.runtime import colbert as rt

if TYPE_CHECKING:
    import torch

OPSET = 17
CHECK_MIN_COSINE = 0.9999
CHECK_QUERIES = ("Hello world", "what is the quick brown fox")
CHECK_DOCUMENTS = ("The quick brown fox jumps over the lazy dog.", "Hello, world! A cat sat; on the mat.")


def _wrapper(model):
    import torch

    class TokenVectors(torch.nn.Module):
        def __init__(self, chain):
            super().__init__()
            self.chain = chain

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            for module in self.chain:
                features = module(features)
            vectors = torch.nn.functional.normalize(features["token_embeddings"], p=2, dim=-1)
            return vectors, attention_mask * 1

    return TokenVectors(list(model._modules.values())).eval()


def export_graph(model, dest: Path) -> Path:
    """Trace the PyLate ColBERT ``model`` to ONNX at ``dest`` (token vectors + mask)."""
    import torch

    wrapper = _wrapper(model)
    for i, module in enumerate(wrapper.chain):
        wrapper.add_module(f"m{i}", module)
    names = ["input_ids", "attention_mask"]
    ids = torch.tensor([[101, 7, 8, 9, 102], [101, 7, 8, 102, 0]], dtype=torch.long) % model.tokenizer.vocab_size
    att = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.long)
    args: tuple = (ids, att)
    if "token_type_ids" in model.tokenizer.model_input_names:
        names.append("token_type_ids")
        args = (ids, att, torch.zeros_like(ids))
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes[rt.TOKENS_OUTPUT] = {0: "batch_size", 1: "sequence_length"}
    axes[rt.MASK_OUTPUT] = {0: "batch_size", 1: "sequence_length"}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            args,
            str(dest),
            input_names=names,
            output_names=[rt.TOKENS_OUTPUT, rt.MASK_OUTPUT],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return dest


def check(reference, artifact: Path, file_name: str, backend: str = "onnx") -> dict[str, float]:
    """The runtime's token vectors against PyLate's ``encode`` (its own tokenisation, expansion, skiplist) on
    a few queries and documents: the same number of vectors per text, and each token's cosine."""
    import numpy as np

    served = rt.load(artifact, backend=backend, file_name=file_name)
    low = 1.0
    for texts, is_query in ((CHECK_QUERIES, True), (CHECK_DOCUMENTS, False)):
        ref = reference.encode(list(texts), is_query=is_query, convert_to_numpy=True, show_progress_bar=False)
        got = served.encode(list(texts), is_query=is_query)
        for r, g in zip(ref, got, strict=True):
            r = np.asarray(r, dtype=np.float64)
            if r.shape != g.shape:
                raise ExportFailed(
                    f"the ColBERT runtime served {g.shape[0]} token vectors for a text, PyLate {r.shape[0]}.",
                    "A bug in the exporter's ColBERT tokenisation; report the model.",
                )
            low = min(low, float(kit.row_cosines(r, g).min()))
    if not low >= CHECK_MIN_COSINE:
        raise ExportFailed(
            f"the ColBERT graph disagrees with PyLate (min token cosine {low:.6f}).",
            "Report the model: its traced graph does not compute what its PyLate modules do.",
        )
    return {"runtime_min_cosine": low}


def _build_info(ctx, start: float, backend: str) -> dict:
    return {
        "exporter": "exporter.builders.export_onnx_colbert (torch.onnx.export of PyLate's module chain)",
        "graph": "Transformer -> Dense -> per-token L2 normalisation; tokenisation, prefixes, query expansion "
        "and the document skiplist in exporter.runtime.colbert",
        "opset": OPSET,
        "outputs": [rt.TOKENS_OUTPUT, rt.MASK_OUTPUT],
        "colbert": rt.read_facts(ctx.source_dir).to_dict(),
        "served_by": f"exporter.runtime.colbert, backend {backend} (PyLate has no ONNX backend)",
        "build_seconds": round(time.perf_counter() - start, 2),
    }


def build_colbert_graph(ctx, spec):
    """Variant builder (``onnx`` for a ColBERT model): the traced graph at ``onnx/model.onnx``."""
    from exporter.builders.context import BuildResult

    start = time.perf_counter()
    reference = ctx.reference_model()
    files = kit.traced_onnx(ctx, spec, lambda dest: export_graph(reference, dest), "ColBERT")
    checks = check(reference, ctx.stage_dir, spec.file_name)
    return BuildResult(files=files, build={**_build_info(ctx, start, "onnx"), **checks})


def build_colbert_openvino(ctx, spec):
    """Variant builder (``openvino`` for a ColBERT model): the same traced graph as an fp32 OpenVINO IR."""
    from exporter.builders.context import BuildResult

    start = time.perf_counter()
    reference = ctx.reference_model()
    files, ir_facts = kit.traced_openvino(ctx, spec, lambda dest: export_graph(reference, dest), "ColBERT")
    checks = check(reference, ctx.stage_dir, spec.file_name, backend="openvino")
    return BuildResult(files=files, build={**_build_info(ctx, start, "openvino"), **ir_facts, **checks})


class ColbertModel(kit.RuntimeVariant):
    """A built ColBERT variant served by ``exporter.runtime.colbert`` with PyLate's ``encode`` signature
    (what the gate, verify and bench call)."""

    def __init__(self, artifact: Path, backend: str, file_name: str | None, threads: int | None = None):
        super().__init__(rt.load(Path(artifact), backend=backend, file_name=file_name, threads=threads))
        self.query_length = self.encoder.facts.query_length
        self.document_length = self.encoder.facts.document_length

    def encode(self, sentences, batch_size: int = 32, is_query: bool = True, **_ignored):
        return self.encoder.encode(list(sentences), is_query=is_query, batch_size=batch_size)


def load_variant(artifact: Path, variant: dict, kind, threads: int | None = None) -> ColbertModel:
    """``runners.variant`` loader of the ColBERT kind (``KindSpec.variant_loader``)."""
    load = variant["load"]
    return ColbertModel(Path(artifact), load["backend"], load.get("file_name"), threads)


_DENSE_TYPES = ("pylate.models.Dense.Dense", "sentence_transformers.models.Dense")


def load_reference(path, device: str = "cpu", trust_remote_code: bool = False, local_files_only: bool = True, **_kw):
    """The PyLate ``ColBERT`` of a saved folder, built from its own modules (``KindSpec.model_class``).

    PyLate 1.6.0's loader does not run on sentence-transformers 5.7 (it is pinned to 5.3: ST 5.7 appends a
    Pooling module to a folder PyLate loads, which PyLate's Dense conversion then fails on). So the modules
    are loaded here: the Transformer by sentence-transformers, each Dense as ``pylate.models.Dense`` with
    its saved weights, and ``ColBERT(modules=..., **settings)`` with the folder's settings: PyLate's own
    ``tokenize`` / ``encode`` (prefixes, expansion, skiplist) is what runs.
    """
    import json

    from safetensors.torch import load_model
    from sentence_transformers.models import Transformer

    from exporter.errors import UsageError
    from exporter.user_files import read_user_file

    try:
        from pylate import models
    except ImportError as exc:
        raise UsageError(
            f"exporting a ColBERT model needs PyLate, its reference ({exc}).",
            'Install it as the Makefile does: pip install -e ".[export,colbert]" and then '
            "pip install --no-deps pylate==1.6.0 datasets==4.8.5",
        ) from None

    root = Path(path)
    chain = json.loads(
        read_user_file(root / "modules.json", what="modules.json", max_bytes=rt.MAX_CONFIG_BYTES).decode("utf-8")
    )
    modules: list[torch.nn.Module] = []
    for entry in chain:
        folder = root / str(entry.get("path") or "")
        kind = str(entry.get("type"))
        if kind.endswith("Transformer") and not modules:
            modules.append(Transformer(str(folder)))
        elif kind in _DENSE_TYPES or kind.endswith(".Dense"):
            cfg = rt.read_json(folder / "config.json") or {}
            if not {"in_features", "out_features"} <= set(cfg):
                raise UsageError(f"{folder / 'config.json'} has no in_features / out_features.", "Re-save the model.")
            act = cfg.get("activation_function") or "torch.nn.modules.linear.Identity"
            if not act.startswith("torch."):
                raise UsageError(
                    f"the ColBERT Dense in {folder} has activation {act!r}.", "Only torch activations load."
                )
            from sentence_transformers.util import import_from_string

            dense = models.Dense(
                cfg["in_features"],
                cfg["out_features"],
                bias=cfg.get("bias", True),
                activation_function=import_from_string(act)(),
                use_residual=cfg.get("use_residual", False),
            )
            load_model(dense, str(folder / "model.safetensors"))
            modules.append(dense)
        else:
            raise UsageError(
                f"the ColBERT model's module {kind!r} ({entry.get('path')}) is not Transformer or Dense.",
                "Only PyLate ColBERT chains (Transformer -> Dense) export.",
            )
    settings = rt.read_facts(root).to_dict()
    model = models.ColBERT(modules=modules, device=device, **settings).eval()
    _adapt_to_st57(model)
    return model


def _adapt_to_st57(model) -> None:
    """Two renames between sentence-transformers 5.3 (PyLate 1.6.0's pin) and 5.7 that PyLate's own
    ``encode`` / ``tokenize`` trip on, bridged so that PyLate's code runs unchanged:

    - ``_text_length`` became ``_input_length``;
    - ``Transformer.tokenize(texts, padding="max_length")`` became ``preprocess(texts, processing_kwargs=...)``,
      and the deprecated ``tokenize`` drops ``padding``: PyLate's query expansion (queries padded with mask
      tokens to ``query_length``) would silently pad only to the batch's longest query.
    """
    if not hasattr(model, "_text_length"):
        model._text_length = model._input_length
    first = model._first_module()

    def tokenize(texts, padding=None, **_kw):
        return first.preprocess(list(texts), processing_kwargs={"text": {"padding": padding}} if padding else None)

    first.tokenize = tokenize
