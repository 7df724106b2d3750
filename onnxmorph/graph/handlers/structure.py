"""Ops that move channels around: Concat (offsets), Split and Slice (sub-ranges), Gather,
Transpose (the channel axis moves)."""

from __future__ import annotations

import numpy as np

from onnxmorph.graph.handlers.attention import reads_head_shape
from onnxmorph.graph.handlers.base import (
    Coupling,
    Fresh,
    Layout,
    NodeContext,
    register,
    single_axis,
)


def _axis(ctx: NodeContext, rank: int, default: int = 0) -> int:
    axis = int(ctx.attr("axis", default))
    return axis + rank if axis < 0 else axis


@register("Concat")
def concat(ctx: NodeContext) -> Coupling:
    out_shape = ctx.out_shapes[0]
    if out_shape is None or any(s is None for s in ctx.in_shapes):
        return ctx.boundary(f"Concat '{ctx.name}' has an input of unknown shape")
    axis = _axis(ctx, len(out_shape))
    activations = ctx.activation_indices()
    if activations and all(single_axis(ctx.in_layouts[i], axis) for i in activations):
        return _concat_on_channels(ctx, axis)
    layouts = [ctx.in_layouts[i] for i in activations]
    first = layouts[0] if layouts else None
    if first is None or not all(
        single_axis(lay, first.axis) and lay.size == first.size for lay in layouts
    ):
        return ctx.boundary(f"Concat '{ctx.name}' joins tensors with different channel axes")
    # Joined along another axis: every input must keep the same channels.
    unify = [(first.ids, lay.ids) for lay in layouts[1:]]
    return Coupling(outputs=[first], unify=unify)


def _concat_on_channels(ctx: NodeContext, axis: int) -> Coupling:
    """Concat's output channels are its inputs' channels at fixed offsets."""
    if any(layout is None for layout in ctx.in_layouts):
        # A constant part would need unit ids of its own; keep it and its neighbours instead.
        return ctx.boundary(f"Concat '{ctx.name}' joins a constant along the channel axis")
    ids = np.concatenate([layout.ids for layout in ctx.in_layouts])
    return Coupling(outputs=[Layout((axis,), ids)])


@register("Split")
def split(ctx: NodeContext) -> Coupling:
    layout, shape = ctx.in_layouts[0], ctx.in_shapes[0]
    if layout is None or shape is None or any(s is None for s in ctx.out_shapes):
        return ctx.boundary(f"Split '{ctx.name}' has an unknown shape")
    axis = _axis(ctx, len(shape))
    if axis not in layout.axes:
        return Coupling(outputs=[layout] * len(ctx.out_shapes))
    if not single_axis(layout):
        return ctx.boundary(f"Split '{ctx.name}' splits a shuffled channel axis")
    bounds = np.cumsum([s[axis] for s in ctx.out_shapes])[:-1]
    return Coupling(
        outputs=[Layout((axis,), part) for part in np.split(layout.ids, bounds)]
    )


@register("Slice")
def slice_(ctx: NodeContext) -> Coupling:
    layout, shape = ctx.in_layouts[0], ctx.in_shapes[0]
    if layout is None or shape is None:
        return ctx.boundary(f"Slice '{ctx.name}' has an unknown shape")
    starts, ends = ctx.const(1), ctx.const(2)
    axes = ctx.const(3) if ctx.has_input(3) else None
    steps = ctx.const(4) if ctx.has_input(4) else None
    if starts is None or ends is None or (ctx.has_input(3) and axes is None) or (
        ctx.has_input(4) and steps is None
    ):
        return ctx.boundary(f"Slice '{ctx.name}' has bounds computed at run time")
    axes = np.arange(len(starts)) if axes is None else axes
    steps = np.ones(len(starts), dtype=np.int64) if steps is None else steps
    ids = layout.ids
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = int(axis) + len(shape) if axis < 0 else int(axis)
        if axis not in layout.axes:
            continue
        if not single_axis(layout) or int(step) != 1:
            # A strided channel slice of a pruned tensor is no longer a Slice.
            return ctx.boundary(f"Slice '{ctx.name}' takes a strided or shuffled channel range")
        ids = ids[_python_slice(int(start), int(end), int(step))]
    return Coupling(outputs=[Layout(layout.axes, ids)])


def _python_slice(start: int, end: int, step: int) -> slice:
    # ONNX writes "to the end" as INT64_MAX / INT64_MIN; Python slices clamp the same way.
    return slice(start, None if abs(end) >= 2**62 else end, step)


@register("Gather")
def gather(ctx: NodeContext) -> Coupling:
    layout, shape, indices = ctx.in_layouts[0], ctx.in_shapes[0], ctx.const(1)
    table, out = ctx.const(0), ctx.out_shapes[0]
    if ctx.prune_embedding and table is not None and indices is None and table.ndim == 2 \
            and _axis(ctx, 2) == 0 and out and out[-1] == table.shape[1] > 1:
        # An embedding lookup (words, positions, segments): the table's columns are the
        # embedding's channels, sliced with them.
        return Coupling(outputs=[Fresh(axis=len(out) - 1, count=table.shape[1])])
    if layout is None or shape is None or indices is None:
        return ctx.boundary(f"Gather '{ctx.name}' has indices computed at run time")
    axis = _axis(ctx, len(shape))
    if axis in layout.axes and single_axis(layout) and indices.ndim == 1:
        return Coupling(outputs=[Layout(layout.axes, layout.ids[indices])])
    if axis not in layout.axes and indices.ndim == 1:
        return ctx.passthrough()
    if axis not in layout.axes and indices.ndim == 0:
        # x[:, 0] (a class token picked from the tokens): that axis goes, the channels stay.
        return ctx.passthrough(Layout(tuple(a - (a > axis) for a in layout.axes), layout.ids))
    if axis in layout.axes and len(layout.axes) > 1 and indices.ndim == 0:
        # q = qkv[0] of a fused [3, B, H, T, D] projection: one entry of the outer axis.
        position = layout.axes.index(axis)
        ids = np.take(layout.ids, int(indices), axis=position)
        axes = tuple(a - (a > axis) for a in layout.axes if a != axis)
        return Coupling(outputs=[Layout(axes, ids)])
    return ctx.boundary(f"Gather '{ctx.name}' changes the rank around the channel axis")


@register("Transpose")
def transpose(ctx: NodeContext) -> Coupling:
    layout, shape = ctx.in_layouts[0], ctx.in_shapes[0]
    if layout is None or shape is None:
        return ctx.boundary(f"Transpose '{ctx.name}' has an unknown shape")
    perm = ctx.attr("perm") or list(reversed(range(len(shape))))
    new_positions = [perm.index(axis) for axis in layout.axes]
    order = np.argsort(new_positions)
    return Coupling(outputs=[Layout(
        tuple(new_positions[i] for i in order), np.transpose(layout.ids, order)
    )])


@register("Shape", "Size")
def shape_reader(ctx: NodeContext) -> Coupling:
    layout = ctx.in_layouts[0]
    reads_other_axes = (ctx.node.op_type == "Shape" and layout is not None
                        and ctx.dims_read is not None
                        and not any(axis in ctx.dims_read for axis in layout.axes))
    if reads_head_shape(ctx) or reads_other_axes:
        # Only other axes are read (the batch, to expand a class token): pruning cannot
        # change what the graph computes from them.
        return Coupling(outputs=[None] * len(ctx.out_shapes))
    # A run-time Shape lets the graph compute with the channel count; pruning would change it.
    coupling = ctx.boundary(f"its shape is read at run time by {ctx.node.op_type} '{ctx.name}'")
    return Coupling(outputs=[None] * len(ctx.out_shapes), pins=coupling.pins)

