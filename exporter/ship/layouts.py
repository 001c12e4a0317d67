"""Serving layouts: the folder each server or library loads, written from one verified variant.

``exporter package ARTIFACT --variant V --layout NAME --out DIR`` checks the variant's files against the
manifest (``package.require_publishable``), builds the folder in a staging directory, runs it through its
consumer on the probe set (``gate``: real for the runtime, sentence-transformers, fastembed and
transformers.js; the documented contract, labelled "emulated", for TEI, OVMS and Triton), and only then
renames it to DIR, with a manifest that lists exactly the layout's files, the digest of the artifact's
manifest it came from and the gate's rows (``layout``). A difference is a FidelityError (exit 3) and
nothing is written. Layouts are a table (``LAYOUTS``): which variant backends each takes, a function that
maps the artifact's files to the layout's paths (plus generated files, ``Made``) and the start line:

- ``st``: the artifact's own tree, for ``SentenceTransformer(DIR, backend=..., model_kwargs=...)`` and the
  torch-free runtime; an OpenVINO variant gets ``openvino/ov_config.json`` (its compile options, the f32
  pin), which the start line passes as ``ov_config`` (sentence-transformers reads a path there; without it
  OpenVINO computes bf16 on a CPU with bf16 units);
- ``tei``: the variant graph as ``onnx/model.onnx`` beside config.json, tokenizer.json and 1_Pooling/
  (text-embeddings-inference's ONNX Runtime backend; it uses the ``sentence_embedding`` output);
- ``fastembed`` / ``transformers.js``: the graph as ``onnx/model.onnx``; both truncate at
  tokenizer_config.json's ``model_max_length``, which the export aligned with ``max_seq_length``
  (``exporter.source.tokenizer_files``; an older artifact's copy is aligned here);
- ``ovms``: OpenVINO Model Server's embeddings folder: ``openvino_model.xml/.bin`` (the variant's IR; OVMS
  pools its first rank-3 output), ``openvino_tokenizer.xml/.bin`` (converted by openvino_tokenizers,
  truncating at ``max_seq_length``, and refused when it does not tokenize the probe set as tokenizer.json
  does) and ``graph.pbtxt`` (EmbeddingsCalculatorOV with the model's pooling and normalisation); a model
  OVMS cannot pool like (max pooling, a Dense layer) is refused;
- ``triton``: ``<name>/config.pbtxt`` (text written here from the graph's real inputs and outputs, no
  protobuf library: batched, dynamic batching, one CPU instance) and ``<name>/1/model.onnx`` (onnxruntime
  backend) or ``<name>/1/model.xml/.bin`` (openvino backend), with the tokenizer files beside it: the
  client tokenizes (the contract is written at the top of config.pbtxt);
- ``infinity``: refused with the reason (``Layout.refusal``).

Every server layout serves sentence embedders only (``Layout.kinds``): a reranker, sparse encoder, ColBERT or
bge-m3 artifact is refused there with the reason, and its ``st`` layout's start line loads it the way its kind
is served (``start_lines.ST_SERVE_LINES``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from exporter.errors import UsageError
from exporter.manifest_types import FileEntry
from exporter.ship.layout_files import (
    FileMap,
    Layout,
    Made,
    _content,
    _graph_as_model_onnx,
    _st_with_ov_config,
    _truncating_at_max_seq_length,
)
from exporter.ship.layout_gate import gate_layout
from exporter.ship.ovms_layout import _ovms
from exporter.ship.start_lines import ST_SERVE_LINES, start_line
from exporter.ship.triton_config import _triton

INFINITY_REFUSAL = (
    "the infinity layout is not written: infinity-emb's optimum engine picks its ONNX file and pools by its own "
    "flags, and it cannot be installed here to gate a folder against it (infinity-emb 0.0.78 pulls a 7 GB CUDA torch)."
)

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "st",
            frozenset({"onnx", "openvino", "torch"}),
            _st_with_ov_config,
            "",
            ("runtime", "sentence-transformers"),
            kinds=frozenset(ST_SERVE_LINES),
        ),
        Layout(
            "tei",
            frozenset({"onnx"}),
            _graph_as_model_onnx,
            "docker run -p 8080:80 -v {abs}:/data ghcr.io/huggingface/text-embeddings-inference:cpu-1.8 "
            "--model-id /data --auto-truncate  # pooling and normalisation inside the graph (sentence_embedding); "
            "truncates at max_seq_length {max_len}",
            ("tei",),
        ),
        Layout(
            "fastembed",
            frozenset({"onnx"}),
            _truncating_at_max_seq_length,
            "python -c 'from fastembed import TextEmbedding as T; from fastembed.common.model_description import "
            'ModelSource, PoolingType; T.add_custom_model(model="local/{name}", pooling=PoolingType.{pooling}, '
            'normalization={normalize}, sources=ModelSource(hf="local/{name}"), dim={dim}, '
            'model_file="onnx/model.onnx"); print(len(list(T("local/{name}", specific_model_path="{abs}")'
            ".embed([\"hi\"]))[0]))'  # truncates at tokenizer_config.json's model_max_length {max_len}",
            ("fastembed",),
        ),
        Layout(
            "transformers.js",
            frozenset({"onnx"}),
            _truncating_at_max_seq_length,
            "node --input-type=module -e \"import {{env, pipeline}} from '@huggingface/transformers'; "
            "env.allowRemoteModels = false; env.localModelPath = '{parent}/'; const f = await pipeline("
            "'feature-extraction', '{name}', {{dtype: 'fp32', device: 'cpu'}}); console.log((await f(['hi'], "
            "{{pooling: '{pooling_js}', normalize: {normalize_js}}})).dims)\"  "
            "# truncates at model_max_length {max_len}",
            ("transformers.js",),
        ),
        Layout(
            "ovms",
            frozenset({"openvino"}),
            _ovms,
            "docker run -p 8000:8000 -v {abs}:/model openvino/model_server:2025.4 --rest_port 8000 "
            "--model_path /model --model_name embedder  # graph.pbtxt: {pooling} pooling, normalize {normalize_js}, "
            "f32 plugin_config; the tokenizer IR truncates at {max_len}",
            ("ovms",),
        ),
        Layout(
            "triton",
            frozenset({"onnx", "openvino"}),
            _triton,
            "docker run -p 8000:8000 -v {abs}:/models nvcr.io/nvidia/tritonserver:25.01-py3 "
            "tritonserver --model-repository=/models  # clients tokenize: see the contract atop {model}/config.pbtxt",
            ("triton",),
        ),
        Layout("infinity", frozenset({"onnx"}), _graph_as_model_onnx, "", (), INFINITY_REFUSAL),
    )
}


def layout_manifest(
    artifact: Path, manifest: dict, vid: str, files: FileMap, folder: Path, layout: str, gate: list
) -> dict:
    """The layout's own manifest: exactly its files (as written in ``folder``), the variant's files at their
    layout paths (``load.file_name`` re-pointed), generated files marked ``adjusted_from`` the artifact
    file they came from, and ``layout``: its name, the sha256 of the artifact's manifest.json and the gate."""
    from exporter import manifest as mf
    from exporter.fsutil import FileRecord, sha256_file

    narrowed = mf.narrow(manifest, vid)
    entry = narrowed["variants"][0]
    listed = mf.listed_files(manifest, [vid])
    own = {f["path"] for f in entry["files"]}
    origin = {
        rel: (src.source if isinstance(src, Made) else Path(src).relative_to(artifact).as_posix()
              if isinstance(src, Path) and Path(src).is_relative_to(artifact) else None)
        for rel, src in files.items()
    }  # fmt: skip
    shared: list[FileEntry] = []
    variant_files: list[FileEntry] = []
    for rel in sorted(files):
        rec = FileRecord.of(folder, folder / rel).to_dict()
        src = origin[rel]
        if src is not None and src in listed and listed[src]["sha256"] != rec["sha256"]:
            made = files[rel]
            reason = made.reason if isinstance(made, Made) else "rewritten"
            rec["adjusted_from"] = {"sha256": listed[src]["sha256"], "source": src, "reason": reason}
        (variant_files if src in own else shared).append(rec)
    main = next((rel for rel, src in origin.items() if src == entry["load"]["file_name"]), None)
    entry["files"] = variant_files
    if main is not None:
        entry["load"] = {**entry["load"], "file_name": main}
    narrowed["shared_files"] = shared
    narrowed["layout"] = {
        "name": layout,
        "artifact_manifest_sha256": sha256_file(artifact / mf.MANIFEST_NAME),
        "variant": vid,
        "gate": gate,
    }
    return narrowed


def write_layout(artifact: Path, variant: str | None, layout: str, out: Path, *, allow_failed: bool = False) -> dict:
    """Write ``layout`` for one verified variant into ``out`` (atomically), after running it through its
    consumer (``gate_layout``); return what was written. A consumer that differs: FidelityError, nothing written."""
    from exporter import manifest as mf
    from exporter import outdir
    from exporter.ship import package
    from exporter.staging import staged_dir

    spec = LAYOUTS.get(layout)
    if spec is None:
        raise UsageError(f"unknown layout {layout!r}.", f"Known: {', '.join(LAYOUTS)}.")
    if spec.refusal:
        raise UsageError(spec.refusal, "Serve the variant with the tei or st layout.")
    artifact = Path(artifact)
    manifest = mf.load(artifact)
    kind = manifest["model"]["kind"]
    if kind not in spec.kinds:
        raise UsageError(
            f"the {layout} layout serves {', '.join(sorted(spec.kinds))} models; {artifact} holds a {kind} model, "
            "whose outputs that server's contract does not serve.",
            "Use --layout st: its start line serves every kind.",
        )
    (vid,) = package.select_variants(manifest, variant)
    entry = mf.get_variant(manifest, vid)
    if entry["load"]["backend"] not in spec.backends:
        raise UsageError(
            f"the {layout} layout takes {'/'.join(sorted(spec.backends))} variants; "
            f"{vid} is {entry['load']['backend']}.",
            "Pick another variant with --variant.",
        )
    package.require_publishable(artifact, manifest, vid, allow_failed=allow_failed)
    outdir.check_out(out)  # writable, not a file or link, nothing there the tool did not write
    empty = out.is_dir() and not any(out.iterdir())  # replaced; anything else there is refused, never merged
    exists = "Pass a new --out folder, or move that one away."
    with (
        outdir.claim(out),
        tempfile.TemporaryDirectory(prefix=".layout-") as scratch,
        staged_dir(out, replace=empty, exists_hint=exists) as tmp,
    ):
        files = spec.build(artifact, manifest, entry, Path(scratch))
        for rel, src in sorted(files.items()):
            dest = tmp / package.safe_relpath(rel, "layout")
            dest.parent.mkdir(parents=True, exist_ok=True)
            content = _content(src)
            if isinstance(content, bytes):
                dest.write_bytes(content)
            else:
                shutil.copyfile(content, dest)
        draft = layout_manifest(artifact, manifest, vid, files, tmp, layout, [])
        rows = gate_layout(tmp, spec, draft, artifact, manifest)
        final = layout_manifest(artifact, manifest, vid, files, tmp, layout, rows)
        (tmp / mf.MANIFEST_NAME).write_bytes(package.manifest_bytes(final))
    return {
        "layout": layout,
        "variant": vid,
        "out": str(out),
        "files": sorted(files),
        "gate": rows,
        "start": start_line(spec, out, final),
    }
