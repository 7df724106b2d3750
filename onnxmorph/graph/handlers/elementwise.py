"""Elementwise ops: unary ops pass channels through; n-ary ops broadcast and couple them."""

from __future__ import annotations

from onnxmorph.graph.handlers.base import Coupling, Layout, NodeContext, register, single_axis
from onnxmorph.graph.layers import BROADCAST_OPS

UNARY_OPS = (
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Softplus", "Softsign", "Mish", "Identity",
    "Dropout", "Cast", "Clip", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil",
    "Round", "Sign", "Sin", "Cos", "Not", "IsNaN", "IsInf", "Shrink",
)
# PRelu's slope and Clip's bounds may be per-channel constants: the broadcast rule handles them.
# Which operands are broadcast operands (sliced with the channels) is declared in graph/layers.


@register(*[op for op in UNARY_OPS if op not in BROADCAST_OPS])
def unary(ctx: NodeContext) -> Coupling:
    if ctx.in_layouts[0] is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has an input of unknown shape")
    return ctx.passthrough()


@register(*BROADCAST_OPS)
def broadcast(ctx: NodeContext) -> Coupling:
    """Numpy broadcasting aligns trailing axes; inputs that are full-size on the output's
    channel axis share its channels, size-1 inputs are broadcast, constants are sliced along."""
    out_shape = ctx.out_shapes[0]
    activations = ctx.activation_indices()
    if out_shape is None or not activations:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has an input of unknown shape")
    rank = len(out_shape)
    if _scaled_heads(ctx, activations):
        return ctx.passthrough(ctx.in_layouts[activations[0]])
    reference = _reference_input(ctx, activations, rank)
    if reference is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' mixes channels across axes")
    layout = ctx.in_layouts[reference]
    axis = layout.axis + rank - len(ctx.in_shapes[reference])
    channels = out_shape[axis]
    unify, pins = [], []
    for index in activations:
        other = ctx.in_layouts[index]
        aligned = axis - (rank - len(ctx.in_shapes[index]))
        dim = ctx.in_shapes[index][aligned] if aligned >= 0 else 1
        if dim == channels and single_axis(other, aligned):
            unify.append((layout.ids, other.ids))
        elif dim == 1:
            # One value broadcast over every channel: removing it would change all of them.
            pins.append((other.ids, f"broadcast over all channels by '{ctx.name}'"))
        else:
            return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' mixes channels across axes")
    return Coupling(outputs=[Layout((axis,), layout.ids)], unify=unify, pins=pins)


def _reference_input(ctx: NodeContext, activations: list[int], rank: int) -> int | None:
    """The activation input whose channels become the output's channels."""
    for index in sorted(activations, key=lambda i: -len(ctx.in_shapes[i] or ())):
        layout = ctx.in_layouts[index]
        if not single_axis(layout):
            continue
        axis = layout.axis + rank - len(ctx.in_shapes[index])
        if ctx.in_shapes[index][layout.axis] == ctx.out_shapes[0][axis]:
            return index
    return None



def _scaled_heads(ctx: NodeContext, activations: list[int]) -> bool:
    """One tensor with several channel axes (attention heads) times a scalar constant."""
    if len(activations) != 1 or len(ctx.in_layouts[activations[0]].axes) < 2:
        return False
    shape = ctx.in_shapes[activations[0]]
    constants = [ctx.const(i) for i in range(len(ctx.node.input)) if i not in activations]
    return shape == ctx.out_shapes[0] and all(c is not None and c.size == 1 for c in constants)
