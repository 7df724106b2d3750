"""Conv and ConvTranspose: new output channels, with grouped and depthwise coupling."""

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


@register("Conv")
def conv(ctx: NodeContext) -> Coupling:
    weight = ctx.const(1)
    if weight is None:
        return ctx.boundary(f"Conv '{ctx.name}' has weights computed at run time")
    groups = int(ctx.attr("group", 1))
    out_channels = weight.shape[0]
    return _grouped(ctx, groups, in_per_group=weight.shape[1], out_channels=out_channels)


@register("ConvTranspose")
def conv_transpose(ctx: NodeContext) -> Coupling:
    weight = ctx.const(1)  # [Cin, Cout/group, k...]
    if weight is None:
        return ctx.boundary(f"ConvTranspose '{ctx.name}' has weights computed at run time")
    groups = int(ctx.attr("group", 1))
    in_per_group = weight.shape[0] // groups
    return _grouped(ctx, groups, in_per_group=in_per_group, out_channels=weight.shape[1] * groups)


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
