"""Gemm and MatMul with constant weights: they consume the feature axis, make new features."""

from __future__ import annotations

from onnxmorph.graph.handlers.base import Coupling, Fresh, NodeContext, register, single_axis


@register("Gemm")
def gemm(ctx: NodeContext) -> Coupling:
    weight = ctx.const(1)
    if weight is None or int(ctx.attr("transA", 0)):
        return ctx.boundary(f"Gemm '{ctx.name}' multiplies two run-time tensors")
    if not single_axis(ctx.in_layouts[0], 1):
        return ctx.boundary(f"Gemm '{ctx.name}' input features are not on axis 1")
    if ctx.has_input(2) and ctx.const(2) is None:
        return ctx.boundary(f"Gemm '{ctx.name}' has a bias computed at run time")
    out_features = weight.shape[0] if int(ctx.attr("transB", 0)) else weight.shape[1]
    return Coupling(outputs=[Fresh(axis=1, count=out_features)])


@register("MatMul")
def matmul(ctx: NodeContext) -> Coupling:
    weight = ctx.const(1)
    shape = ctx.in_shapes[0]
    if weight is None or weight.ndim != 2 or shape is None:
        return ctx.boundary(f"MatMul '{ctx.name}' multiplies two run-time tensors")
    last = len(shape) - 1
    if not single_axis(ctx.in_layouts[0], last):
        return ctx.boundary(f"MatMul '{ctx.name}' contracts an axis that is not the channel axis")
    return Coupling(outputs=[Fresh(axis=last, count=weight.shape[1])])
