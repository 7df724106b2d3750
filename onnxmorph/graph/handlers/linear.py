"""Gemm and MatMul with constant weights: they consume the feature axis, make new features.

MatMul is a Linear on the last axis (channels-last, as in ConvNeXt and transformer MLPs); the
weight layout comes from the layer-kind registry (graph/layers.py).
"""

from __future__ import annotations

from onnxmorph.graph.handlers.attention import activation_matmul
from onnxmorph.graph.handlers.base import Coupling, Fresh, NodeContext, register, single_axis
from onnxmorph.graph.layers import LAYER_KINDS


@register("Gemm", "MatMul")
def linear(ctx: NodeContext) -> Coupling:
    kind = LAYER_KINDS[ctx.node.op_type]
    weight, shape = ctx.const(kind.weight), ctx.in_shapes[kind.activation]
    layout = kind.weight_layout(ctx.node, weight.shape) if weight is not None else None
    if weight is None and ctx.node.op_type == "MatMul" and ctx.const(0) is None:
        return activation_matmul(ctx)  # attention's QKᵀ and AV
    if layout is None or shape is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' multiplies two run-time tensors")
    axis = kind.activation_axis(len(shape))
    if not single_axis(ctx.in_layouts[kind.activation], axis):
        boundary = ctx.boundary(
            f"{ctx.node.op_type} '{ctx.name}' contracts an axis that is not the channel axis")
        if ctx.node.op_type != "MatMul" or ctx.in_layouts[kind.activation] is None:
            return boundary
        # Tokens [B, T, F] seen with channels on T: those stay, but the features this Linear
        # makes on the last axis are new channels like any layer's outputs.
        return Coupling(outputs=[Fresh(axis=axis, count=layout.out_channels)],
                        pins=boundary.pins)
    if kind.bias is not None and ctx.has_input(kind.bias) and ctx.const(kind.bias) is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has a bias computed at run time")
    return Coupling(outputs=[Fresh(axis=axis, count=layout.out_channels)])

