"""The places NNCF puts int8 in an encoder IR that are not weight MatMuls, and how to keep each in float.

``nncf.quantize(model_type=transformer)`` quantises more than the weight MatMuls
(``export_openvino_fidelity.weight_matmuls``):

- ``attention_scores``: the query and key inputs of each layer's attention (a ``ScaledDotProductAttention``, or
  a MatMul of two activations in an eager export) pass through a FakeQuantize after their bias Add, so the
  scores ``q·kᵀ`` are computed from int8 values. Kept in float: those FakeQuantize ops are bypassed.
- ``embeddings``: the word, position and token-type tables of the embedding Gathers are stored int8 (an int8
  Constant, a Convert and a scale Multiply). Kept in float: the Gather reads the fp32 IR's table.

With every weight MatMul, the attention scores and the tables in float the quantised model computes what the
fp32 IR computes (1.0000000 on all-MiniLM-L6-v2). Judged as the search judges (its calibration strata, nn@10 at
the lower bound; benchmarks/results/int8_sites-*.txt), every weight MatMul in float does not count on MiniLM
(``tok_random`` 0.941); with the tables in float too it counts (0.967); with the attention scores instead of the
tables it does not (0.949). A table in float costs no compute (a Gather reads fp32 rows instead of int8 rows
and a scale), only file size. Both kinds can be search candidates (``OvFidelityOptions.candidate_kinds``, a
catalogue option that no CLI flag or recipe key sets yet); the default searches the weight MatMuls only, see
there for why.

Each site is named by its op's friendly name (the attention op, or the Gather), which the fp32 IR shares.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SITE_KINDS = ("attention_scores", "embeddings")
_ATTENTION_OPS = ("ScaledDotProductAttention", "MatMul")
_LAYOUT = ("Transpose", "Reshape")  # between an attention input's FakeQuantize and the attention op


def _attention_quantizers(op) -> list[Any]:
    """The FakeQuantize ops feeding the attention op ``op``'s activation inputs (past reshapes / transposes)."""
    if op.get_type_name() not in _ATTENTION_OPS:
        return []
    found = []
    for i in range(min(op.get_input_size(), 3)):
        node = op.input_value(i).get_node()
        while node.get_type_name() in _LAYOUT and node.get_input_size():
            node = node.input_value(0).get_node()
        if node.get_type_name() == "FakeQuantize":
            found.append(node)
    if op.get_type_name() == "MatMul" and len(found) < 2:
        return []  # a weight MatMul (one activation input): export_openvino_fidelity.weight_matmuls covers it
    return found


def _int8_table(op) -> bool:
    """A Gather whose table is stored int8 (a Convert of an int8 Constant, times a scale)."""
    if op.get_type_name() != "Gather" or op.input_value(0).get_node().get_type_name() != "Multiply":
        return False
    scale_mul = op.input_value(0).get_node()
    for i in range(2):
        node = scale_mul.input_value(i).get_node()
        while node.get_type_name() in ("Convert", "Subtract") and node.get_input_size():
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant" and node.get_output_element_type(0).get_type_name() in ("i8", "u8"):
            return True
    return False


def site_kinds(quantized) -> dict[str, str]:
    """Every non-MatMul int8 site of the quantised IR by kind (``SITE_KINDS``), in graph order."""
    kinds: dict[str, str] = {}
    for op in quantized.get_ordered_ops():
        if _attention_quantizers(op):
            kinds[op.get_friendly_name()] = "attention_scores"
        elif _int8_table(op):
            kinds[op.get_friendly_name()] = "embeddings"
    return kinds


def _fp32_table(base_ops: dict, name: str):
    import openvino as ov

    table = base_ops[name].input_value(0).get_node()
    while table.get_type_name() == "Convert" and table.get_input_size():
        table = table.input_value(0).get_node()
    return ov.op.Constant(np.asarray(table.get_data(), dtype=np.float32)).output(0)


def keep_in_float(quantized, base, names: list[str]):
    """A copy of the quantised model with the named sites in float: the attention ops' FakeQuantize inputs
    bypassed, the tables read from the fp32 IR."""
    model = quantized.clone()
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    base_ops = {op.get_friendly_name(): op for op in base.get_ordered_ops()}
    for name in names:
        op = ops[name]
        if _int8_table(op):
            op.input(0).replace_source_output(_fp32_table(base_ops, name))
            continue
        for fq in _attention_quantizers(op):
            for target in list(fq.output(0).get_target_inputs()):
                target.replace_source_output(fq.input_value(0))
    model.validate_nodes_and_infer_types()
    return model


def blend(op, base_ops: dict, s_i) -> None:
    """In the screening model: the site ``op`` kept in float by ``s_i`` (1: float, 0: int8), as
    ``int8 + s_i · (float - int8)`` at each int8 value it reads (``export_openvino_fidelity.switch_model``)."""
    from openvino import opset13 as ops

    if _int8_table(op):  # blended after the Gather: rows, not the whole table
        targets = list(op.output(0).get_target_inputs())
        batch_dims = int(op.get_attributes().get("batch_dims", 0))
        table = _fp32_table(base_ops, op.get_friendly_name())
        kept = ops.gather(table, op.input_value(1), op.input_value(2), batch_dims)
        mixed = ops.add(op.output(0), ops.multiply(s_i, ops.subtract(kept, op.output(0))))
        for target in targets:
            target.replace_source_output(mixed.output(0))
        return
    for fq in _attention_quantizers(op):
        targets = list(fq.output(0).get_target_inputs())
        mixed = ops.add(fq.output(0), ops.multiply(s_i, ops.subtract(fq.input_value(0), fq.output(0))))
        for target in targets:
            target.replace_source_output(mixed.output(0))
