"""The ovms layout: OpenVINO Model Server's embeddings folder (the IR, a tokenizer IR refused unless it tokenizes the
probe set as tokenizer.json does, and graph.pbtxt)."""

from __future__ import annotations

import json
from pathlib import Path

from exporter.errors import UsageError
from exporter.ship.layout_files import (
    FileMap,
    Made,
    _main_file,
    _ov_config,
    _shared,
)
from exporter.ship.layout_gate import probe_texts

OVMS_POOLING = {"cls": "CLS", "mean": "MEAN", "lasttoken": "LAST"}  # EmbeddingsCalculatorOVOptions.Pooling


OVMS_GRAPH = """input_stream: "REQUEST_PAYLOAD:input"
output_stream: "RESPONSE_PAYLOAD:output"
node {{
  name: "EmbeddingsExecutor"
  input_side_packet: "EMBEDDINGS_NODE_RESOURCES:embeddings_servable"
  calculator: "EmbeddingsCalculatorOV"
  input_stream: "REQUEST_PAYLOAD:input"
  output_stream: "RESPONSE_PAYLOAD:output"
  node_options: {{
    [type.googleapis.com / mediapipe.EmbeddingsCalculatorOVOptions]: {{
      models_path: "./"
      normalize_embeddings: {normalize}
      pooling: {pooling}
      target_device: "CPU"
      plugin_config: {plugin_config}
    }}
  }}
}}
"""


def _ovms(artifact: Path, manifest: dict, variant: dict, scratch: Path) -> FileMap:
    from exporter.source import st_modules

    facts = st_modules.read(artifact)
    modes = facts.pooling.modes if facts.pooling else ()
    if not facts.plain_pooling_chain or len(modes) != 1 or modes[0] not in OVMS_POOLING:
        chain = " -> ".join(m.kind.value for m in facts.modules)
        raise UsageError(
            f"OVMS pools the first rank-3 output with {'/'.join(OVMS_POOLING.values())} only; this model "
            f"({chain}, pooling {'+'.join(modes) or 'none'}) would serve different vectors there.",
            "Serve it with the st or triton layout (the runtime pools it as the model says).",
        )
    try:
        import openvino as ov
        from openvino_tokenizers import convert_tokenizer
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise UsageError(
            "the ovms layout converts the tokenizer with openvino_tokenizers.", "Install .[export]."
        ) from exc
    main = _main_file(variant)
    if not main.endswith(".xml") or len(variant["files"]) != 2:
        raise UsageError(
            f"the ovms layout takes one IR (.xml + .bin), not {[f['path'] for f in variant['files']]}.", ""
        )
    tokenizer = convert_tokenizer(
        AutoTokenizer.from_pretrained(facts.transformer_dir), truncation=True, max_length=facts.max_seq_length
    )
    ov.save_model(tokenizer, str(scratch / "openvino_tokenizer.xml"))
    _require_same_tokens(scratch / "openvino_tokenizer.xml", facts, probe_texts(manifest))
    files = _shared(artifact, manifest)
    for rec in variant["files"]:
        files["openvino_model" + Path(rec["path"]).suffix] = artifact / rec["path"]
    files["openvino_tokenizer.xml"] = Made(scratch / "openvino_tokenizer.xml", "tokenizer.json", "openvino_tokenizers")
    files["openvino_tokenizer.bin"] = Made(scratch / "openvino_tokenizer.bin", "tokenizer.json", "openvino_tokenizers")
    graph = OVMS_GRAPH.format(
        normalize=str(facts.normalize).lower(),
        pooling=OVMS_POOLING[modes[0]],
        plugin_config=json.dumps(json.dumps(_ov_config(variant))),  # a JSON object, as a quoted proto string
    )
    files["graph.pbtxt"] = graph.encode()
    return files


def ovms_tokens(tokenizer_xml: Path, texts: list[str]) -> list[list[int]]:
    """The token ids OVMS's tokenizer IR gives each text (padding dropped)."""
    import openvino as ov
    import openvino_tokenizers  # noqa: F401 - registers the tokenizer ops

    compiled = ov.Core().compile_model(str(tokenizer_xml), "CPU")
    out = {k.get_any_name(): v for k, v in compiled(texts).items()}
    return [
        [int(i) for i, m in zip(ids, mask, strict=True) if m]
        for ids, mask in zip(out["input_ids"], out["attention_mask"], strict=True)
    ]


def _require_same_tokens(tokenizer_xml: Path, facts, texts: list[str]) -> None:
    """Refuse the ovms layout when its tokenizer IR does not tokenize the probe set as tokenizer.json does
    (e.g. openvino_tokenizers case-folds Greek final sigma ς to σ where the Rust tokenizer keeps it)."""
    from exporter import runtime

    tokenizer = runtime.load_tokenizer(facts)
    want = [[i for i, m in zip(e.ids, e.attention_mask, strict=True) if m] for e in tokenizer.encode_batch(texts)]
    got = ovms_tokens(tokenizer_xml, texts)
    bad = [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
    if bad:
        first = bad[0]
        at = next((k for k, (a, b) in enumerate(zip(got[first], want[first], strict=False)) if a != b), None)
        raise UsageError(
            f"OVMS's tokenizer IR (openvino_tokenizers) tokenizes {len(bad)} of {len(texts)} probe texts "
            f"differently from tokenizer.json (first: text {first}, token {at}: {texts[first][:40]!r}), so OVMS "
            "would serve other vectors for them.",
            "Serve this model with the st, tei or triton layout.",
        )
