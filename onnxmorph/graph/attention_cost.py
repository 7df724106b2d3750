"""MACs of a MatMul of two run-time tensors (attention's QKᵀ and AV) as a function of the
alive heads.

Every output element costs K multiply-adds (K: the contracted length). When the output has a
head axis, that cost is linear in the alive heads: QKᵀ [B, H, T, T] costs B·T²·D per head, AV
[B, H, T, D] costs B·T²·D per head too; the contracted D channels of QKᵀ belong to the heads
(the channel analysis ties them), so prod(out)·K per output channel times the alive output
channels is exact for a sliced model and differentiable for a gated one.
"""

from __future__ import annotations

import math

import onnx

from onnxmorph.graph.contrib_ops import contrib_cost


def activation_matmul_cost(builder, node: onnx.NodeProto) -> bool:
    """Add the MACs of a MatMul without a constant operand, or of onnxruntime's fused
    attention ops, to `builder`; False if `node` is neither or its shapes are unknown (then
    the generic rule decides)."""
    if contrib_cost(builder, node):
        return True
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
        return False
    if any(name in builder.values for name in node.input):
        return False
    a_shape = builder.loaded.shapes.get(node.input[0])
    out = node.output[0]
    out_shape = builder.loaded.shapes.get(out)
    if a_shape is None or out_shape is None:
        return False
    total = math.prod(out_shape) * a_shape[-1]
    name = node.name or out
    layout = builder.channels.layouts.get(out)
    if layout is None:
        builder.add("macs", name, total, builder.constant_form())
        return True
    channels = layout.size
    builder.add("macs", name, total / channels, builder.form(out, channels))
    return True
