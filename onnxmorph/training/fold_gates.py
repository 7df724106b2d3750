"""Fold the learned gate values into the weights of the layers that consume gated channels.

At evaluation a gate is deterministic: z = σ(logit / τ) for a living channel and 0 for a dead
one. Multiplying each consumer's input-channel weights by z makes the plain seed graph compute
exactly what the gated graph computes, so slicing the dead channels afterwards changes nothing.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxmorph.graph.handlers.base import Layout


def fold_gate_values(
    model: onnx.ModelProto, layouts: dict[str, Layout], unit_scale: np.ndarray
) -> onnx.ModelProto:
    """A copy of `model` whose layer weights absorb `unit_scale` (one factor per unit)."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    inits = {init.name: init for init in folded.graph.initializer}
    users: dict[str, int] = {}
    for node in folded.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    for node in folded.graph.node:
        layout = layouts.get(node.input[0]) if node.input else None
        if layout is None or len(layout.axes) != 1 or len(node.input) < 2:
            continue
        init = inits.get(node.input[1])
        scale = unit_scale[layout.ids].astype(np.float64)
        if init is None or np.allclose(scale, 1.0) or users[init.name] > 1:
            continue  # a shared weight would be scaled for the other user too
        weight = numpy_helper.to_array(init)
        scaled = _scale_inputs(node, weight, scale)
        if scaled is not None:
            init.CopyFrom(numpy_helper.from_array(scaled.astype(weight.dtype), init.name))
    return folded


def _scale_inputs(node: onnx.NodeProto, weight: np.ndarray, scale: np.ndarray):
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        groups = int(attrs.get("group", 1))
        cout, cin_g = weight.shape[0], weight.shape[1]
        view = weight.reshape(groups, cout // groups, cin_g, -1)
        factors = scale.reshape(groups, 1, cin_g, 1)
        return (view * factors).reshape(weight.shape)
    if node.op_type == "ConvTranspose":
        return weight * scale.reshape(-1, *[1] * (weight.ndim - 1))
    if node.op_type == "Gemm" and not int(attrs.get("transA", 0)):
        if int(attrs.get("transB", 0)):
            return weight * scale.reshape(1, -1)
        return weight * scale.reshape(-1, 1)
    if node.op_type == "MatMul" and weight.ndim == 2:
        return weight * scale.reshape(-1, 1)
    return None
