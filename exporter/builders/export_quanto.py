"""optimum-quanto variant: the torch model with int8 weights, saved so that it reloads.

The builder copies the reference model's transformer (the loaded torch ``PreTrainedModel`` inside the
sentence-transformers ``Transformer`` module), quantises its ``Linear`` weights to ``qint8`` with
optimum-quanto (per output channel, symmetric; activations stay float), freezes it, and writes quanto's
own serialisation under ``quanto/``:

```
quanto/model.safetensors     the quantised state dict (int8 data + scales; embeddings, LayerNorm in fp32)
quanto/quanto_qmap.json      quanto's quantisation map (which submodule has which qtype)
quanto/quanto_config.json    what load_quanto needs: transformers class, module path, qtypes
```

Loading is quanto's ``requantize``: build the transformers model from ``config.json`` (no weights read),
re-create the quantised modules from the map, load the state dict. sentence-transformers cannot do this
by itself, so a user loads the variant with ``load_quanto(artifact_dir)``, which returns an ordinary
``SentenceTransformer`` (tokenizer, pooling, normalisation and prompts from the artifact as usual).
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from exporter.builders import kit
from exporter.builders.context import BuildContext, BuildResult
from exporter.builders.options import QuantoOptions
from exporter.environment import package_versions
from exporter.errors import ExportFailed
from exporter.variants import VariantSpec

QUANTO_DIR = "quanto"
WEIGHTS_FILE = f"{QUANTO_DIR}/model.safetensors"
QMAP_FILE = f"{QUANTO_DIR}/quanto_qmap.json"
CONFIG_FILE = f"{QUANTO_DIR}/quanto_config.json"
FORMAT = "exporter-quanto/1"

_LOAD_LOCK = threading.Lock()


def _transformer_module(st_model) -> tuple[int, Any]:
    for index, module in enumerate(st_model):
        if hasattr(module, "auto_model"):
            return index, module
    raise ExportFailed(
        "the model has no Transformer module; quanto quantises a transformers model.",
        "Only transformer-based sentence-transformers models get a quanto variant.",
    )


def _module_path(source_dir: Path, index: int) -> str:
    modules_file = source_dir / "modules.json"
    if modules_file.is_file():
        for entry in json.loads(modules_file.read_text(encoding="utf-8")):
            if entry.get("idx") == index:
                return entry.get("path", "")
    return ""


def build_int8(ctx: BuildContext, spec: VariantSpec) -> BuildResult:
    """Quantise the reference transformer's weights to int8 with quanto and save it under ``quanto/``."""
    opts = kit.options_of(spec, QuantoOptions)
    start = time.perf_counter()
    reference = ctx.reference_model()
    index, module = _transformer_module(reference)
    with kit.backend_errors("quanto int8 quantisation"):
        from optimum.quanto import freeze, quantization_map, quantize
        from safetensors.torch import save_file

        hf_model = copy.deepcopy(module.auto_model).to("cpu").eval()  # never quantise the shared reference
        quantize(hf_model, weights=opts.weights, activations=opts.activations, exclude=list(opts.exclude) or None)
        freeze(hf_model)
        qmap = quantization_map(hf_model)
        if not qmap:
            raise ExportFailed("quanto found no layer to quantise in this model.")
        # Plain, contiguous, unshared tensors: what safetensors accepts.
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in hf_model.state_dict().items()}
        float_dtype = str(next(p.dtype for p in module.auto_model.parameters() if p.is_floating_point()))
        config = {
            "format": FORMAT,
            "transformers_class": type(hf_model).__name__,
            "module_index": index,
            "module_path": _module_path(ctx.source_dir, index),
            "weights": opts.weights,
            "activations": opts.activations,
            "exclude": list(opts.exclude),
            "float_dtype": float_dtype,
        }
        with kit.scratch(ctx.stage_dir / QUANTO_DIR, prefix=".quanto-") as tmp:
            save_file(state, tmp / Path(WEIGHTS_FILE).name, metadata={"format": "pt", "quanto": FORMAT})
            (tmp / Path(QMAP_FILE).name).write_text(json.dumps(qmap, indent=2, sort_keys=True) + "\n")
            (tmp / Path(CONFIG_FILE).name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            for rel in (WEIGHTS_FILE, QMAP_FILE, CONFIG_FILE):  # renamed in: hard-linked clones stay intact
                kit.place(tmp / Path(rel).name, ctx.stage_dir / rel)
    quantized_layers = len(qmap)
    return BuildResult(
        files=[ctx.stage_dir / rel for rel in (WEIGHTS_FILE, QMAP_FILE, CONFIG_FILE)],
        build={
            "export_source": "torch (reference model, in memory)",
            "precision": "int8",
            "method": "optimum.quanto quantize + freeze (weight-only)",
            "weights": opts.weights,
            "weights_scheme": "symmetric, per output channel",
            "activations": opts.activations or "float",
            "quantized_layers": quantized_layers,
            "kept_float": "embeddings, LayerNorm" + (f", {', '.join(opts.exclude)}" if opts.exclude else ""),
            "exclude": list(opts.exclude),
            "calibration": None,
            "serialisation": "safetensors state dict + quanto_qmap.json (quanto requantize)",
            "loader": "exporter.builders.export_quanto:load_quanto",
            "build_seconds": round(time.perf_counter() - start, 2),
            "versions": package_versions(("optimum-quanto", "torch", "transformers", "safetensors")),
        },
    )


@contextmanager
def _requantizing_loader(artifact: Path, config: dict, qmap: dict, state: dict) -> Iterator[list[str]]:
    """While active, sentence-transformers' Transformer module builds its model with quanto's requantize.

    sentence-transformers reads the weights through ``Transformer._load_model``; the artifact has no
    float weights, so for the duration of one load that step builds the transformers class named in
    ``quanto_config.json`` from ``config.json`` (no weight initialisation) and requantizes it.
    """
    import transformers
    from optimum.quanto import requantize

    try:
        from sentence_transformers.base.modules.transformer import Transformer
    except ImportError:  # sentence-transformers < 5.7
        from sentence_transformers.models import Transformer  # type: ignore[no-redef]  # the same class, moved
    from transformers.modeling_utils import no_init_weights

    class_name = config["transformers_class"]
    model_cls = getattr(transformers, class_name, None)
    if model_cls is None or not isinstance(model_cls, type):
        raise ExportFailed(f"unknown transformers class {class_name!r} in {CONFIG_FILE}.")
    loaded: list[str] = []
    original = Transformer._load_model

    def _load_model(self, model_name_or_path, transformer_task, hf_config, backend, is_peft_model, **model_kwargs):
        if backend != "torch":
            raise ExportFailed(f"the quanto variant runs on torch, not {backend!r}.")
        import torch

        dtype = getattr(torch, config.get("float_dtype", "torch.float32").removeprefix("torch."))
        with no_init_weights():
            model = model_cls._from_config(hf_config, dtype=dtype)
        requantize(model, state_dict=state, quantization_map=qmap, device=torch.device("cpu"))
        expected = set(model.state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ExportFailed(
                f"quanto weights do not match the model: {len(missing)} missing, {len(unexpected)} unexpected "
                f"(e.g. {sorted(missing or unexpected)[0]})."
            )
        loaded.append(str(model_name_or_path))
        return model.eval()

    with _LOAD_LOCK:
        Transformer._load_model = _load_model
        try:
            yield loaded
        finally:
            Transformer._load_model = original


def load_quanto(artifact_dir: str | os.PathLike, device: str = "cpu", **st_kwargs):
    """Load the quanto int8 variant of an artifact as a ``SentenceTransformer`` (torch backend).

    ``artifact_dir`` is the artifact root (the folder with ``modules.json`` and ``quanto/``). Extra
    keyword arguments go to ``SentenceTransformer`` (e.g. ``local_files_only=True``). Needs torch and
    optimum-quanto; runs on CPU (quanto's int8 kernels for CUDA are used if you move it there).
    """
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    root = Path(artifact_dir)
    for rel in (WEIGHTS_FILE, QMAP_FILE, CONFIG_FILE):
        if not (root / rel).is_file():
            raise ExportFailed(f"{rel} is missing from {root}.", "Build the quanto-int8 variant into this artifact.")
    config = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ExportFailed(f"{CONFIG_FILE} has format {config.get('format')!r}; this tool reads {FORMAT!r}.")
    qmap = json.loads((root / QMAP_FILE).read_text(encoding="utf-8"))
    state = load_file(root / WEIGHTS_FILE)
    st_kwargs.setdefault("local_files_only", True)
    with _requantizing_loader(root, config, qmap, state) as loaded:
        model = SentenceTransformer(str(root), device="cpu", backend="torch", **st_kwargs)
    if len(loaded) != 1:
        raise ExportFailed(f"expected one Transformer module to requantize, loaded {len(loaded)}.")
    return model.to(device) if device != "cpu" else model
