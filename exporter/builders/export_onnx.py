"""The base fp32 ONNX export: one graph that serves both sentence-transformers and a torch-free runtime.

The graph is exported with optimum-onnx's own sentence-transformers exporter (``onnx_export_from_model``
on the loaded ``SentenceTransformer``, task ``feature-extraction``), which traces the *whole* module
chain (Transformer -> Pooling -> Normalize/Dense ...). Two adjustments to optimum's stock config:

- the token-level output is named ``last_hidden_state`` instead of optimum's ``token_embeddings``:
  sentence-transformers' ``backend="onnx"`` runs the graph through ``ORTModelForFeatureExtraction``,
  which reads exactly ``last_hidden_state`` and ignores any other output;
- ``sentence_embedding`` gets a static width (the embedding dimension) when tracing left it symbolic;
- the id at each row's last attended position is set to the tokenizer's final special token
  (``exporter.builders.final_token``): a no-op for every tokenizer that truncates before adding it, and
  transformers.js, which cuts after it, then feeds what sentence-transformers feeds.

Graph (the contract every consumer in ``exporter.quality.consumers`` loads): inputs ``input_ids``,
``attention_mask`` and, when the model's tokenizer emits them (BERT-like models), ``token_type_ids``
(int64, [batch, sequence]): fastembed, transformers.js, TEI and OVMS feed what the tokenizer produces
and some refuse a graph that lacks an input their tokenizer made. Outputs, in this order:
``last_hidden_state`` ([batch, sequence, hidden]) FIRST, because fastembed takes ``outputs[0]`` and
OVMS pools the first rank-3 output, then ``sentence_embedding`` ([batch, dim], pooled and, if the model
has a Normalize module, L2-normalised; with ``truncate_dim`` its first N dimensions, as
``SentenceTransformer(truncate_dim=N).encode`` returns), which TEI and the torch-free runtime use as is.
A model whose Pooling excludes prompt tokens (``include_prompt: false``) gets an optional last input,
``prompt_length`` (``exporter.builders.prompt_graph``).

After export the graph is checked against the torch model (cosine on a few padded and over-long texts,
bare and with the model's first prompts) and the artifact's tokenizer.json, as the runtime configures it,
against the torch model's tokenizer.

Cross-encoders and sparse encoders (``exporter.kinds``) get the transformer alone, exported with
optimum's task for the head sentence-transformers' backend loads it with (``build_task_graph``):
``text-classification`` for ``ORTModelForSequenceClassification`` and ``fill-mask`` for
``ORTModelForMaskedLM``; both graphs output ``logits`` and take ``token_type_ids`` (a pair's segment B
matters to a reranker). The activation (CrossEncoder) and ``SpladePooling`` (SparseEncoder) run in
sentence-transformers on top, as they do for the torch model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from exporter.builders import final_token, kit, prompt_graph
from exporter.builders.export_onnx_config import (
    SENTENCE_OUTPUT,
    TOKEN_OUTPUT,
    export_config_class,
    input_names_for,
)
from exporter.builders.kit import CHECK_TEXTS
from exporter.errors import ExporterError, ExportFailed
from exporter.source import st_modules

ONNX_FILE = "onnx/model.onnx"
# Files the staging folder must hold before export (relative to the Transformer module's folder).
REQUIRED_STAGED = ("config.json", "tokenizer.json")
CHECK_MIN_COSINE = 0.9999
EXPORT_HINT = "Run with --verbose for the traceback, and report the model if it persists."
CHECK_PROMPTS = 2  # the model's first prompts are checked too (prompt tokens left out of pooling or not)


def _check_staged(facts: st_modules.ModelFacts) -> None:
    missing = [name for name in REQUIRED_STAGED if not (facts.transformer_dir / name).is_file()]
    if missing:
        raise ExportFailed(
            f"the artifact folder {facts.transformer_dir} lacks {', '.join(missing)}.",
            "Copy the source's config, tokenizer and module files into the artifact before the ONNX export "
            "(the torch-free runtime needs tokenizer.json).",
        )


def _fix_output_shapes(path: Path, dim: int) -> dict[str, Any]:
    """Give ``sentence_embedding`` a static width if tracing left it symbolic (external data untouched; the
    file is rewritten only then). Returns the graph's facts for the manifest (``_graph_facts``)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    changed = False
    for output in model.graph.output:
        if output.name == SENTENCE_OUTPUT:
            dims = output.type.tensor_type.shape.dim
            if len(dims) == 2 and not dims[1].dim_value:
                dims[1].ClearField("dim_param")
                dims[1].dim_value = dim
                changed = True
    if changed:
        onnx.save(model, str(path))
    return _graph_facts(model)


def _graph_facts(model) -> dict[str, Any]:
    """Opset, input and output names of a loaded ONNX graph, as the manifest's build entry records them."""
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
    }


def _real_tokens(feeds) -> list[list[int]]:
    """Token ids without padding, row by row."""
    pairs = zip(feeds["input_ids"], feeds["attention_mask"], strict=True)
    return [row[mask.astype(bool)].tolist() for row, mask in pairs]


def torch_encoder(model):
    """``encode(texts, prompt)``: the torch model's embeddings of ``texts`` in one batch, as ``verify`` compares."""
    return lambda texts, prompt: model.encode(texts, prompt=prompt, convert_to_numpy=True, batch_size=len(texts))


def verify(model, artifact_dir: Path, file_name: str, reference=None) -> dict[str, float]:
    """Check the exported graph, and the runtime's tokenisation, against the loaded torch model.

    ``reference(texts, prompt)``: the torch model's embeddings (default ``torch_encoder(model)``; the pipeline
    passes one that reads them from ``exporter.quality.refcache``). The texts run longest first, the order the
    runtime batches them in, so its bare run gets exactly the graph check's feeds and reuses that run."""
    import numpy as np

    from exporter import runtime
    from exporter.quality import parity_replay

    reference = reference or torch_encoder(model)
    texts = sorted(CHECK_TEXTS, key=len, reverse=True)  # stable, as the runtime's own order
    encoder = runtime.load(artifact_dir, file_name=file_name)
    names = list(encoder.session.output_names)
    if names[:2] != [TOKEN_OUTPUT, SENTENCE_OUTPUT]:
        raise ExportFailed(f"the exported graph has outputs {names}.", "This is a bug in the exporter.")
    features = model.preprocess(texts)  # no prompt here, nor below (prompt=""): the graph is checked bare
    feeds = {n: features[n].numpy().astype(np.int64) for n in encoder.session.input_names if n in features}
    (graph_emb,) = encoder.session.run([SENTENCE_OUTPUT], feeds)
    bare = reference(texts, "")
    graph_min = float(kit.row_cosines(bare, graph_emb).min())
    if not graph_min >= CHECK_MIN_COSINE:
        raise ExportFailed(
            f"the exported ONNX graph disagrees with torch (min cosine {graph_min:.6f} < {CHECK_MIN_COSINE}).",
            "Report the model: its traced graph does not compute what its torch modules do.",
        )
    runtime_feeds, _ = encoder.tokenize(texts)
    if _real_tokens(runtime_feeds) != _real_tokens(feeds):
        raise ExportFailed(
            "the artifact's tokenizer.json tokenises differently from the model's tokenizer "
            "(transformers applies settings from tokenizer_config.json that the fast tokenizer file lacks).",
            "Re-save the tokenizer with transformers (save_pretrained) so tokenizer.json carries them.",
        )
    tape = parity_replay.Tape().add(feeds, {SENTENCE_OUTPUT: graph_emb})  # the bare run below: these feeds
    encoder.session = parity_replay.ReplayingSession(encoder.session, tape, same_session=True)
    runtime_min = float(kit.row_cosines(bare, encoder.encode(texts, prompt="")).min())
    for prompt in list(dict.fromkeys(p for p in model.prompts.values() if p))[:CHECK_PROMPTS]:
        with_prompt = reference(texts, prompt)
        runtime_min = min(runtime_min, float(kit.row_cosines(with_prompt, encoder.encode(texts, prompt=prompt)).min()))
    if not runtime_min >= CHECK_MIN_COSINE:
        raise ExportFailed(
            f"the torch-free runtime disagrees with torch (min cosine {runtime_min:.6f}).",
            "This is a bug in the exporter's runtime.",
        )
    return {"graph_min_cosine": graph_min, "runtime_min_cosine": runtime_min}


def _trace_to(model, dest: Path, *, task: str, config=None, prepare=None) -> list[Path]:
    """Trace ``model`` with optimum's ``onnx_export_from_model`` in a temp folder beside ``dest``, let
    ``prepare(graph_path)`` adjust the graph there, then move the graph and any external-data file to
    ``dest`` (``exporter.builders.kit.place``). Returns the files written."""
    from optimum.exporters.onnx import onnx_export_from_model

    from exporter import upstream_noise

    upstream_noise.quiet()
    with kit.scratch(dest.parent, prefix=".onnx-export-") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_export_from_model(
                model,
                output=tmp,
                task=task,
                custom_onnx_configs={"model": config} if config is not None else None,
                device="cpu",
                do_validation=False,  # the callers check more (padding, truncation, tokenizer, outputs)
            )
        if prepare is not None:
            prepare(tmp / "model.onnx")
        return kit.place(tmp / "model.onnx", dest)  # with any external-data file, under its own name


def export_base(
    model_dir: Path,
    out_dir: Path,
    *,
    trust_remote_code: bool = False,
    info: dict[str, Any] | None = None,
    truncate_dim: int | None = None,
    model=None,
    reference=None,
) -> list[Path]:
    """Export ``model_dir`` (a sentence-transformers folder) to ``out_dir/onnx/model.onnx`` (fp32).

    ``out_dir`` must already hold the source's config, tokenizer and module files. The graph lands in the
    Transformer module's folder (the artifact root for every usual layout; ``0_Transformer/`` for the
    oldest ST layout) because that is where ``model_kwargs={"file_name": ...}`` is resolved.
    Returns the files written. ``info``, if given, is filled with build facts for the manifest.
    ``model``: the loaded torch model of ``model_dir`` with ``truncate_dim`` applied (the pipeline's shared
    reference; loaded here when None); ``reference``: what :func:`verify` compares with.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    try:
        facts = st_modules.read(model_dir)
        staged_facts = st_modules.read(out_dir)
    except ExporterError as exc:
        raise ExportFailed(f"cannot read the model modules: {exc.message}", exc.hint) from exc
    _check_staged(staged_facts)
    dest = staged_facts.transformer_dir / ONNX_FILE
    file_name = dest.relative_to(staged_facts.transformer_dir).as_posix()

    graph: dict[str, Any] = {}
    with kit.backend_errors(f"ONNX export of {model_dir.name}", EXPORT_HINT):
        if model is None:
            from exporter.runners.reference import load_reference

            model = load_reference(None, model_dir, trust_remote_code=trust_remote_code)
            model.truncate_dim = truncate_dim  # the reference verify() compares with truncates too
        model.eval()
        prompt_input = prompt_graph.excludes_prompt(model)
        config_class = export_config_class(
            prompt_input=prompt_input, truncate_dim=truncate_dim, input_names=input_names_for(model)
        )
        config = config_class(model[0].auto_model.config, task="feature-extraction")

        final_id = final_token.applies(staged_facts.transformer_dir, staged_facts.tokenizer.padding_side)
        if final_id is not None and model.tokenizer("a b")["input_ids"][-1] != final_id:
            final_id = None  # the tokenizer as loaded (tokenizer_config can drop it) does not end with it

        def prepare(path: Path) -> None:
            if final_id is not None and final_token.end_sequences_with(path, final_id):
                graph["final_special_token"] = final_id  # transformers.js cuts after it: the graph restores it
            graph.update(_fix_output_shapes(path, model.get_embedding_dimension()))
            if prompt_input:
                prompt_graph.make_input_optional(path)  # an initializer: inputs and outputs unchanged

        written = _trace_to(model, dest, task="feature-extraction", config=config, prepare=prepare)

    checks = verify(model, out_dir, file_name, reference)
    if info is not None:
        info.update(
            exporter="optimum-onnx onnx_export_from_model (library sentence_transformers, task feature-extraction)",
            **graph,
            model=facts.to_dict(),
            embedding_dim=model.get_embedding_dimension(),
            truncate_dim=truncate_dim,
            prompt_length_input=prompt_input,
            **checks,
        )
    return written


def export_token_graph(model, dest: Path) -> Path:
    """Export the loaded SentenceTransformer's transformer alone (inputs ``input_ids``/``attention_mask``,
    output ``last_hidden_state``) to ``dest`` by tracing it as :func:`export_base` does. OpenVINO converts
    this graph for architectures whose optimum-intel export is wrong (``exporter.support``)."""

    config = export_config_class(token_only=True)(model[0].auto_model.config, task="feature-extraction")
    _trace_to(model, dest, task="feature-extraction", config=config)
    return dest


def build_base(ctx, spec):
    """Variant builder for the catalogue (``exporter.variants``): the fp32 base graph by the model's support
    rule's ONNX route (``exporter.support``: the kind's graph, or a chain's own such as StaticEmbedding's)."""
    return ctx.support_rule().onnx_build_fn()(ctx, spec)


def build_embedder_graph(ctx, spec):
    """The fp32 base graph of a sentence-transformer: the whole module chain (see the module docstring)."""
    from exporter.builders.context import BuildResult

    info: dict[str, Any] = {}
    model = ctx.reference_model()  # traced and checked against: no second load of the same weights
    files = export_base(
        ctx.source_dir,
        ctx.stage_dir,
        trust_remote_code=ctx.settings.trust_remote_code,
        info=info,
        truncate_dim=ctx.settings.truncate_dim,
        model=model,
        reference=_cached_reference(torch_encoder(model), ctx.reference_key),
    )
    return BuildResult(files=files, build=info)


def _cached_reference(encode, reference_key: str | None):
    """``encode(texts, prompt)`` with its arrays kept in ``exporter.quality.refcache`` under the export's
    reference key (source, probe, settings, packages, CPU), as the probe set's reference is."""
    from exporter.quality import refcache

    def cached(texts: list[str], prompt: str):
        make = lambda: encode(texts, prompt)  # noqa: E731
        return refcache.under_reference(reference_key, make, check_texts=texts, prompt=prompt, batch=len(texts))

    return cached


def build_task_graph(ctx, spec):
    """The fp32 base graph of a cross-encoder or sparse encoder: the transformer with its head, exported by
    optimum with the kind's task; written where ``model_kwargs={"file_name": "onnx/model.onnx"}`` finds it."""
    from exporter import kinds
    from exporter.builders.context import BuildResult

    kspec = kinds.get(ctx.kind)
    dest = kit.transformer_dir(ctx.stage_dir, require=True) / ONNX_FILE
    with kit.backend_errors(f"ONNX export ({kspec.onnx_task}) of the {ctx.kind}", EXPORT_HINT):
        import onnx

        hf_model = ctx.reference_model()[0].auto_model
        hf_model.eval()
        written = _trace_to(hf_model, dest, task=kspec.onnx_task)
        graph = onnx.load(str(dest), load_external_data=False)
    outputs = [o.name for o in graph.graph.output]
    if not set(kspec.onnx_outputs) <= set(outputs):
        raise ExportFailed(
            f"the exported graph has outputs {outputs}; sentence-transformers' ONNX backend reads "
            f"{', '.join(kspec.onnx_outputs)}.",
            "This is a bug in the exporter.",
        )
    info = {
        "exporter": f"optimum-onnx onnx_export_from_model (library transformers, task {kspec.onnx_task})",
        "kind": ctx.kind,
        "task": kspec.onnx_task,
        "graph": "transformer with its head; the activation / SpladePooling run in sentence-transformers",
        "opset": next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None),
        "inputs": [i.name for i in graph.graph.input],
        "outputs": outputs,
    }
    return BuildResult(files=written, build=info)
