"""Ops that work per channel (pooling, normalisation, padding, resizing) and the ones that
mix channels (LRN, Softmax, LayerNormalization or a reduction over the channel axis)."""

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

POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
         "GlobalLpPool")
PER_CHANNEL_NORMS = ("BatchNormalization", "InstanceNormalization")
REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@register(*POOLS, *PER_CHANNEL_NORMS)
def per_channel(ctx: NodeContext) -> Coupling:
    if not single_axis(ctx.in_layouts[0], 1):
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' expects channels on axis 1")
    return ctx.passthrough()


@register("Pad", "Resize", "Upsample")
def same_channels(ctx: NodeContext) -> Coupling:
    """Padding and resizing keep channels as long as they leave the channel axis alone."""
    layout = ctx.in_layouts[0]
    in_shape, out_shape = ctx.in_shapes[0], ctx.out_shapes[0]
    if layout is None or in_shape is None or out_shape is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has an unknown shape")
    if any(in_shape[a] != out_shape[a] for a in layout.axes):
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' changes the channel axis")
    return ctx.passthrough()


@register("LRN")
def lrn(ctx: NodeContext) -> Coupling:
    return ctx.boundary(f"LRN '{ctx.name}' normalises each channel by its neighbours")


@register("LayerNormalization")
def layer_normalization(ctx: NodeContext) -> Coupling:
    """Normalising over the channel axis ties every channel to the mean and variance of all of
    them, so those channels stay; but they stay where they are (channels-last stays last), so
    a following Linear on that axis still makes prunable hidden units."""
    layout, shape = ctx.in_layouts[0], ctx.in_shapes[0]
    if layout is None or shape is None:
        return ctx.boundary(f"LayerNormalization '{ctx.name}' has an unknown shape")
    axis = int(ctx.attr("axis", -1))
    axis = axis + len(shape) if axis < 0 else axis
    if not any(a >= axis for a in layout.axes):
        return ctx.passthrough()  # normalises within each channel (over the axes after it)
    if ctx.prune_embedding and single_axis(layout, len(shape) - 1) and axis == len(shape) - 1:
        # The embedding dimension: a pruned model normalises over the kept channels, which
        # `verify` compares with the seed normalised over those channels only
        # (rewrite/zero_channels.py); scale and bias are sliced with the channels.
        return ctx.passthrough()
    reason = f"LayerNormalization '{ctx.name}' mixes values across channels"
    if not ctx.prune_embedding and single_axis(layout, len(shape) - 1):
        reason += " (--prune-embedding prunes the embedding dimension)"
    if not single_axis(layout):
        return ctx.boundary(reason)
    outputs: list = [Fresh(axis=layout.axis, count=layout.size, pinned=reason)]
    return Coupling(outputs=outputs + [None] * (len(ctx.out_shapes) - 1),
                    pins=[(layout.ids, reason)])


@register("Softmax", "LogSoftmax", "Hardmax", "CumSum", "ArgMax", "ArgMin", "TopK")
def along_axis(ctx: NodeContext) -> Coupling:
    layout, shape = ctx.in_layouts[0], ctx.in_shapes[0]
    if layout is None or shape is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has an unknown shape")
    # Before opset 13, Softmax/LogSoftmax/Hardmax flatten the input to 2-D at `axis`
    # (default 1) and work over every axis from `axis` on, like LayerNormalization does.
    flattening = ctx.opset < 13 and ctx.node.op_type in ("Softmax", "LogSoftmax", "Hardmax")
    axis = ctx.attr("axis", 1 if flattening else -1)
    axis = int(axis) + len(shape) if int(axis) < 0 else int(axis)
    covered = range(axis, len(shape)) if flattening else [axis]
    if ctx.node.op_type in ("ArgMax", "ArgMin", "TopK") or any(a in covered for a in layout.axes):
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' mixes values across channels")
    return ctx.passthrough()


@register(*REDUCTIONS)
def reduction(ctx: NodeContext) -> Coupling:
    layout, shape = ctx.in_layouts[0], ctx.in_shapes[0]
    if layout is None or shape is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has an unknown shape")
    axes = ctx.attr("axes")
    if axes is None and ctx.has_input(1):
        axes = ctx.const(1)
        if axes is None:
            return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has axes computed at run time")
    if axes is None or len(axes) == 0:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return ctx.passthrough()
        axes = list(range(len(shape)))
    axes = sorted(int(a) + len(shape) if int(a) < 0 else int(a) for a in np.ravel(axes))
    if any(a in axes for a in layout.axes):
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' reduces over the channel axis")
    if int(ctx.attr("keepdims", 1)):
        return ctx.passthrough()
    shifted = tuple(a - sum(1 for r in axes if r < a) for a in layout.axes)
    return ctx.passthrough(Layout(shifted, layout.ids))
