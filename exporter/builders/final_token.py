"""Truncated sequences end with the tokenizer's final special token, whoever truncates them.

sentence-transformers, the runtime, fastembed and TEI truncate inside the tokenizer: the text is cut and
``[SEP]`` (the post-processor's last special token) still ends the sequence. transformers.js 4.3.1 has no
tokenizer-side truncation (its ``@huggingface/tokenizers`` ignores tokenizer.json's ``truncation`` block): it
adds the special tokens, then cuts the ids at ``model_max_length``, so a long text ends in a word piece
(issue 22: last id 4026, not 102; cosine 0.9978 on the default's long probe texts).

``end_sequences_with`` prepends to the graph the step that makes both the same: the id at each row's last
attended position becomes the final special token. For a tokenizer that put it there already (every row a
tokenizer truncated or did not need to), it is a no-op; for a row cut after the special tokens it restores
``[CLS] first max-2 tokens [SEP]``, what sentence-transformers feeds. Right-padded tokenizers only (the last
attended position is ``sum(mask) - 1``).
"""

from __future__ import annotations

import json
from pathlib import Path

IDS, MASK = "input_ids", "attention_mask"
FIXED_IDS = "input_ids_final_special_token"
_MIN_OPSET = 13  # ReduceSum / Unsqueeze take their axes as inputs


def final_special_token_id(tokenizer_json: Path) -> int | None:
    """The id of the special token the post-processor puts last on a single sequence, or None."""
    try:
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    post = data.get("post_processor") or {}
    kind = post.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return int(post["sep"][1])
    if kind == "TemplateProcessing":
        last = (post.get("single") or [{}])[-1]
        name = (last.get("SpecialToken") or {}).get("id")
        ids = ((post.get("special_tokens") or {}).get(name) or {}).get("ids") if name else None
        return int(ids[-1]) if ids else None
    return None


def end_sequences_with(path: Path, token_id: int) -> bool:
    """Rewrite the ONNX graph at ``path`` so the id at each row's last attended position is ``token_id``.
    Returns False (graph untouched) when the graph has no ``input_ids`` + ``attention_mask`` or an opset
    below 13."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    names = {i.name for i in graph.input}
    if not {IDS, MASK} <= names or opset < _MIN_OPSET or any(n.output[:1] == [FIXED_IDS] for n in graph.node):
        return False
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == IDS:
                node.input[i] = FIXED_IDS

    def const(name: str, values: list[int], dims: list[int]):
        return helper.make_node(
            "Constant", [], [name], value=helper.make_tensor(name + "_value", TensorProto.INT64, dims, values)
        )

    prefix = "final_token/"
    p = {k: prefix + k for k in ("zero", "one", "axis1", "axis0", "token", "shape", "length", "positions",
                                 "row", "count", "last", "is_last")}  # fmt: skip
    nodes = [
        const(p["zero"], [0], []),
        const(p["one"], [1], []),
        const(p["axis1"], [1], [1]),
        const(p["axis0"], [0], [1]),
        const(p["token"], [token_id], []),
        helper.make_node("Shape", [IDS], [p["shape"]]),
        helper.make_node("Gather", [p["shape"], p["one"]], [p["length"]], axis=0),
        helper.make_node("Range", [p["zero"], p["length"], p["one"]], [p["positions"]]),
        helper.make_node("Unsqueeze", [p["positions"], p["axis0"]], [p["row"]]),
        helper.make_node("ReduceSum", [MASK, p["axis1"]], [p["count"]], keepdims=1),
        helper.make_node("Sub", [p["count"], p["one"]], [p["last"]]),
        helper.make_node("Equal", [p["row"], p["last"]], [p["is_last"]]),
        helper.make_node("Where", [p["is_last"], p["token"], IDS], [FIXED_IDS]),
    ]
    for node in nodes:
        node.name = node.output[0]
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    onnx.save(model, str(path))
    return True


def applies(tokenizer_dir: Path, padding_side: str) -> int | None:
    """The final special token id when the step applies to this tokenizer (right padding), else None."""
    if padding_side != "right":
        return None
    return final_special_token_id(Path(tokenizer_dir) / "tokenizer.json")
