"""Outlier split of a static-int8 MatMul (LLM.int8()-style decomposition) by graph surgery on the NNCF model.

For a weight MatMul ``Y = X·Wᵀ + b`` whose int8 error comes from a few input channels of ``X`` with outliers
(post-GELU FFN inputs: SmoothQuant moves them into the weights but cannot flatten them),

    Y = X[..., S]·W[:, S]ᵀ            (float: a Gather of the k outlier channels and a k-deep MatMul)
      + FQ(X'·s)·Q(W'/s)ᵀ + b         (the int8 path, the channels S zeroed in its weight)

- the float branch reads the activation before NNCF's SmoothQuant Multiply and FakeQuantize, with the fp32
  IR's weight columns: it computes exactly what the fp32 IR computes for those channels;
- the int8 weight is re-quantised from the fp32 weight (SmoothQuant scale kept, per output row, symmetric,
  [-127, 127] as NNCF does) without the columns S: their SmoothQuant-inflated magnitudes no longer set the
  row scales;
- the activation FakeQuantize keeps NNCF's range (set with the outliers in): it clips nothing the int8
  path needs. Re-fitting it without the channels S was measured worse on all-MiniLM-L6-v2 (FFN outputs of
  layers 0-2 split, attention output of layer 4 in float; min cosine on calibration / probe texts): NNCF's
  range 0.9945 / 0.9901, global min-max refit 0.9934 / 0.9798, NNCF's MEAN_MINMAX refit 0.9901 / 0.9635 -
  a narrower range clips the other channels on unseen texts. The gain is the weight: SmoothQuant put the
  outliers' magnitude into W's columns S, which set every row's int8 scale;
- the bias Add stays the quantised model's (NNCF's fast bias correction, tuned for its own int8 weight); on
  all-MiniLM-L6-v2 it equals the fp32 bias for every split op, so the split changes nothing there. Where it
  does not, the search measures the split with that bias, and the build falls back to whole ops in float
  when splits cannot reach the goal (``export_openvino_fidelity``).

``S`` is the channels whose score ``max|x_c| · max_o|W[o, c]|`` (the largest contribution a channel makes to
any output, invariant under SmoothQuant's per-channel rescaling) is at least ``ratio`` times the median
score, measured on the fp32 IR with the calibration samples NNCF used (:func:`activation_absmax`). On
all-MiniLM-L6-v2 the FFN output projections of layers 0-3 have one or two such channels (165x-795x the
median); no attention output projection has one (at most 23x).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SMOOTH_QUANT_TAG = "nncf_smooth_quant"


def activation_absmax(base, samples: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """Per input channel, ``max |x|`` over the calibration samples of each named MatMul's activation (fp32 IR)."""
    import openvino as ov

    model = base.clone()
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    sources: dict[tuple[str, int], list[str]] = {}  # one tap per activation: query, key and value share one
    outputs = {}
    for name in names:
        act = ops[name].input_value(0)
        key = (act.get_node().get_friendly_name(), act.get_index())
        sources.setdefault(key, []).append(name)
        outputs[key] = act
    taps = model.add_outputs([outputs[key] for key in sources])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ports = compiled.outputs[len(compiled.outputs) - len(taps) :]
    by_key: dict[tuple[str, int], np.ndarray] = {}
    request = compiled.create_infer_request()
    for sample in samples:
        result = request.infer(sample)
        for key, port in zip(sources, ports, strict=True):
            x = np.abs(np.asarray(result[port]))
            by_key[key] = np.maximum(by_key.get(key, 0.0), x.reshape(-1, x.shape[-1]).max(axis=0))
    return {name: by_key[key] for key, group in sources.items() for name in group}


@dataclass
class _Site:
    """Where one quantised MatMul reads and what the fp32 IR holds for it."""

    mm: Any  # the MatMul (an openvino Node) in the quantised model
    act: object  # the activation before SmoothQuant and FakeQuantize (an ov Output)
    smooth: np.ndarray  # SmoothQuant's per-channel activation multiplier (ones without SmoothQuant)
    weight: np.ndarray  # fp32 weight as [out, in]


def const_source(output):
    """The Constant behind a weight input (through Convert / Reshape / Transpose), or None."""
    node = output.get_node()
    while node.get_type_name() in ("Convert", "Reshape", "Transpose") and node.get_input_size():
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def float_activation(mm):
    """What the quantised MatMul ``mm`` reads before NNCF's FakeQuantize and SmoothQuant scale (an ov Output),
    and that scale's Multiply (None without SmoothQuant)."""
    act = mm.input_value(0)
    if act.get_node().get_type_name() == "FakeQuantize":
        act = act.get_node().input_value(0)
    node = act.get_node()
    if node.get_type_name() == "Multiply" and SMOOTH_QUANT_TAG in node.get_friendly_name():
        return node.input_value(0), node
    return act, None


def matmul_site(mm, ref) -> _Site | None:
    """Where the quantised MatMul ``mm`` reads (None: not an int8 MatMul NNCF quantised, or a computed weight)."""
    if (
        mm.input_value(0).get_node().get_type_name() != "FakeQuantize"
        or mm.input_value(1).get_node().get_type_name() != "Multiply"
    ):
        return None  # not an int8 MatMul NNCF quantised
    act, scale = float_activation(mm)
    smooth = np.ones(act.get_partial_shape()[-1].get_length(), dtype=np.float32)
    if scale is not None:
        smooth = np.asarray(const_source(scale.input_value(1)).get_data(), dtype=np.float32).reshape(-1)
    source = ref.input_value(1).get_node()
    while source.get_type_name() == "Convert":  # only a cast: a Reshape or Transpose would change the layout
        source = source.input_value(0).get_node()
    if source.get_type_name() != "Constant":
        return None  # a weight computed in the graph: the search floats this op whole instead
    weight = np.asarray(source.get_data(), dtype=np.float32)
    if not mm.get_attributes().get("transpose_b", False):
        weight = weight.T
    return _Site(mm, act, smooth, weight)


def channel_scores(absmax: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each input channel's ``max|x_c| · max_o|W[o, c]|`` over the median of that score."""
    score = absmax * np.abs(weight).max(axis=0)
    return score / max(float(np.median(score)), 1e-12)


def outlier_channels(scores: np.ndarray, ratio: float, max_k: int) -> np.ndarray:
    """The channels scoring ``>= ratio`` (:func:`channel_scores`), at most ``max_k`` of the highest, sorted."""
    top = np.argsort(-scores, kind="stable")[: max(0, int(max_k))]
    return np.sort(top[scores[top] >= ratio]).astype(np.int64)


def _requantised_weight(site: _Site, channels: np.ndarray):
    """The int8 weight (``W/s``, columns S zeroed) as NNCF lays it out: int8 Constant, Convert, scale Multiply."""
    import openvino as ov
    from openvino import opset13 as ops

    w = site.weight / site.smooth[None, :]
    w[:, channels] = 0.0
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    if not site.mm.get_attributes().get("transpose_b", False):
        q, scale = q.T, scale.T
    return ops.multiply(ops.convert(ov.op.Constant(q), ov.Type.f32), ov.op.Constant(scale.astype(np.float32)))


def split_matmul(site: _Site, channels: np.ndarray) -> None:
    """Rewire one MatMul into the float outlier branch + the int8 rest, in place."""

    site.mm.input(1).replace_source_output(_requantised_weight(site, channels).output(0))
    tail = bias_tail(site.mm)  # after the bias Add, so the int8 MatMul keeps its bias fusion
    consumers = list(tail.get_target_inputs())
    total = add_outlier_branch(site, channels, tail)
    for target in consumers:
        target.replace_source_output(total.output(0))


def bias_tail(mm):
    """The MatMul's output after its bias Add (the Add right after it), or its own output without one."""
    for target in mm.output(0).get_target_inputs():
        if target.get_node().get_type_name() == "Add":
            return target.get_node().output(0)
    return mm.output(0)


def add_outlier_branch(site: _Site, channels: np.ndarray, tail):
    """``tail + X[..., S]·W[:, S]ᵀ``: the float outlier branch added to the int8 path's output ``tail``."""
    import openvino as ov
    from openvino import opset13 as ops

    gathered = ops.gather(site.act, ov.op.Constant(channels), ov.op.Constant(np.array(-1, dtype=np.int64)))
    outlier = ops.matmul(gathered, ov.op.Constant(np.ascontiguousarray(site.weight[:, channels])), False, True)
    total = ops.add(tail, outlier.output(0))
    tag = f"{site.mm.get_friendly_name()}/outlier_split"
    for node, part in ((gathered, "gather"), (outlier, "matmul"), (total, "add")):
        node.set_friendly_name(f"{tag}/{part}")
    return total


def split_output(site: _Site, channels: np.ndarray):
    """What :func:`split_matmul` makes the MatMul (and its bias Add) output, built beside it, the MatMul left
    as it is: a second int8 MatMul on the same quantised activation with the re-quantised weight, the
    quantised model's bias, plus the float outlier branch (the screening model, ``export_openvino_fidelity``)."""
    from openvino import opset13 as ops

    attrs = site.mm.get_attributes()
    int8 = ops.matmul(
        site.mm.input_value(0),
        _requantised_weight(site, channels).output(0),
        attrs.get("transpose_a", False),
        attrs.get("transpose_b", False),
    ).output(0)
    tail = bias_tail(site.mm)
    if tail.get_node() is not site.mm:
        add = tail.get_node()
        port = 0 if add.input_value(0).get_node() is site.mm else 1
        int8 = ops.add(int8, add.input_value(1 - port)).output(0)
    return add_outlier_branch(site, channels, int8).output(0)


def plan(quantized, base, samples: list[dict], names: list[str], ratio: float, max_k: int) -> dict[str, dict]:
    """For each named int8 MatMul with outlier channels: ``{"channels", "scores"}`` (measured on
    the fp32 IR over ``samples``); ops without any are left out. ``ratio <= 0`` splits nothing."""
    if ratio <= 0 or not names:
        return {}
    absmax = activation_absmax(base, samples, names)
    q_ops = {op.get_friendly_name(): op for op in quantized.get_ordered_ops()}
    base_ops = {op.get_friendly_name(): op for op in base.get_ordered_ops()}
    found = {}
    for name in names:
        site = matmul_site(q_ops[name], base_ops[name]) if name in q_ops else None
        if site is None:
            continue
        scores = channel_scores(absmax[name], site.weight)
        channels = outlier_channels(scores, ratio, max_k)
        if channels.size:
            found[name] = {"channels": channels, "scores": scores[channels]}
    return found


def split_matmuls(quantized, base, splits: dict[str, dict]):
    """A copy of the quantised model with each MatMul in ``splits`` (:func:`plan`) split on its channels."""
    model = quantized.clone()
    ops_ = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    base_ops = {op.get_friendly_name(): op for op in base.get_ordered_ops()}
    for name, split in splits.items():
        site = matmul_site(ops_[name], base_ops[name])
        if site is not None:
            split_matmul(site, split["channels"])
    model.validate_nodes_and_infer_types()
    return model
