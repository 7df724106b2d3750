"""Conv and ConvTranspose: new output channels, with grouped and depthwise coupling.

The weight layout (which axis holds the output and input channels, groups) comes from the
layer-kind registry (graph/layers.py).
"""

from __future__ import annotations

import numpy as np

from onnxmorph.graph.handlers.base import (
    Coupling,
    Fresh,
    Layout,
    NodeContext,
    register,
    single_axis,
)
from onnxmorph.graph.layers import LAYER_KINDS


@register("Conv", "ConvTranspose")
def conv(ctx: NodeContext) -> Coupling:
    kind = LAYER_KINDS[ctx.node.op_type]
    weight = ctx.const(kind.weight)
    if weight is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has weights computed at run time")
    layout = kind.weight_layout(ctx.node, weight.shape)
    if layout is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has a weight of unexpected rank")
    return _grouped(ctx, layout.groups, layout.in_per_group, layout.out_channels)



def _grouped(ctx: NodeContext, groups: int, in_per_group: int, out_channels: int) -> Coupling:
    layout = ctx.in_layouts[0]
    if not single_axis(layout, 1) or layout.size != groups * in_per_group:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' input channels are not on axis 1")
    if groups == 1:
        return Coupling(outputs=[Fresh(axis=1, count=out_channels)])
    if in_per_group == 1:
        # Depthwise: output channel o reads input channel o // multiplier only, so an input
        # channel and its outputs live and die together and the group count shrinks with them.
        multiplier = out_channels // groups
        return Coupling(outputs=[Layout((1,), np.repeat(layout.ids, multiplier))])
    # Grouped: every group must keep the same number of channels, so index j inside one group
    # is tied to index j inside every other group, on both sides of the conv.
    per_group = layout.ids.reshape(groups, in_per_group)
    unify = [(per_group[0], per_group[g]) for g in range(1, groups)]
    return Coupling(
        outputs=[Fresh(axis=1, count=out_channels // groups, tile=groups)], unify=unify
    )
