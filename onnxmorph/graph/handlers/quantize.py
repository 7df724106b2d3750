"""QuantizeLinear / DequantizeLinear on activations pass channels through; a DequantizeLinear
of constants is a (quantized) weight and carries no channels of its own."""

from __future__ import annotations

from onnxmorph.graph.handlers.base import Coupling, NodeContext, register, single_axis


@register("QuantizeLinear", "DequantizeLinear")
def quantize_linear(ctx: NodeContext) -> Coupling:
    layout = ctx.in_layouts[0]
    if layout is None and ctx.const(0) is not None:
        return Coupling(outputs=[None] * len(ctx.out_shapes))  # a quantized constant
    if layout is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has an input of unknown shape")
    if int(ctx.attr("block_size", 0)):
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' quantizes in blocks")
    scale = ctx.const(1)
    if scale is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has a scale computed at run time")
    # A per-axis scale along the channel axis is sliced with the channels (its role says so);
    # along another axis it does not see the channels at all.
    if scale.size > 1 and not single_axis(layout):
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' quantizes a shuffled channel axis")
    return ctx.passthrough()
