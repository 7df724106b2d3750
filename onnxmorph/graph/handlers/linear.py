"""Gemm and MatMul with constant weights: they consume the feature axis, make new features.

MatMul is a Linear on the last axis (channels-last, as in ConvNeXt and transformer MLPs); the
weight layout comes from the layer-kind registry (graph/layers.py).
"""

from __future__ import annotations

from onnxmorph.graph.handlers.base import Coupling, Fresh, NodeContext, register, single_axis
from onnxmorph.graph.layers import LAYER_KINDS


@register("Gemm", "MatMul")
def linear(ctx: NodeContext) -> Coupling:
    kind = LAYER_KINDS[ctx.node.op_type]
    weight, shape = ctx.const(kind.weight), ctx.in_shapes[kind.activation]
    layout = kind.weight_layout(ctx.node, weight.shape) if weight is not None else None
    if layout is None or shape is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' multiplies two run-time tensors")
    axis = kind.activation_axis(len(shape))
    if not single_axis(ctx.in_layouts[kind.activation], axis):
        return ctx.boundary(
            f"{ctx.node.op_type} '{ctx.name}' contracts an axis that is not the channel axis")
    if kind.bias is not None and ctx.has_input(kind.bias) and ctx.const(kind.bias) is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has a bias computed at run time")
    return Coupling(outputs=[Fresh(axis=axis, count=layout.out_channels)])

