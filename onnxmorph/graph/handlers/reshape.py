"""Reshape, Flatten, Squeeze, Unsqueeze: follow channels through a change of shape.

One rule covers Flatten into Gemm (a channel becomes a block of features), channel-shuffle
splits ([N,C,H,W] → [N,g,C/g,H,W]) and merges, and squeezes: lay the unit ids over the tensor
from the first channel axis on, reshape that array like the tensor, and read back along which
output axes the ids vary.
"""

from __future__ import annotations

import math

import numpy as np

from onnxmorph.graph.handlers.base import Coupling, Layout, NodeContext, register


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx: NodeContext) -> Coupling:
    layout, in_shape, out_shape = ctx.in_layouts[0], ctx.in_shapes[0], ctx.out_shapes[0]
    if layout is None or in_shape is None or out_shape is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' has an unknown shape")
    if math.prod(in_shape) != math.prod(out_shape):
        # Shape inference can hand a damaged model such shapes; the model cannot run, and
        # the unit ids cannot be laid over a tensor of another size.
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' turns {math.prod(in_shape)} "
                            f"elements into {math.prod(out_shape)} (inconsistent shapes)")
    start = min(layout.axes)
    out_start = _matching_prefix(in_shape[:start], out_shape)
    if out_start is None:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' mixes channels with leading axes")
    spread = spread_ids(layout, in_shape, start).reshape(out_shape[out_start:])
    varying = [a for a in range(spread.ndim) if not _constant_along(spread, a)]
    if not varying:
        return ctx.boundary(f"{ctx.node.op_type} '{ctx.name}' leaves no channel axis")
    index = tuple(slice(None) if a in varying else 0 for a in range(spread.ndim))
    ids = spread[index]
    unify = []
    if ids.shape == layout.ids.shape:
        pass  # the same channel axes, only moved (an added or removed unit axis): no new tie
    elif ids.ndim > 1 and _splits_last_axis(layout, in_shape, varying, spread.shape):
        # Heads ([B, T, H, D]) or MultiheadAttention's q/k/v rows ([T, B, 3, E]) look alike
        # here; the attention MatMuls downstream tell them apart (see head_splits).
        return Coupling(outputs=[Layout(tuple(out_start + a for a in varying), ids)],
                        head_splits=[ids])
    elif ids.ndim > 1:
        # A channel axis split in several (channel shuffle): slicing needs a rectangular keep
        # mask, so an index of the innermost axis is tied across every outer position.
        inner = ids.reshape(-1, ids.shape[-1])
        unify = [(inner[0], inner[row]) for row in range(1, inner.shape[0])]
    axes = tuple(out_start + a for a in varying)
    return Coupling(outputs=[Layout(axes, ids)], unify=unify)


def _splits_last_axis(layout: Layout, in_shape: tuple[int, ...], varying: list[int],
                      spread_shape: tuple[int, ...]) -> bool:
    """A channels-last feature axis split into trailing axes ([B, T, H·D] → [B, T, H, D]):
    the attention-head split, where one head (the innermost vector) is one unit."""
    return layout.axes == (len(in_shape) - 1,) and varying[-1] == len(spread_shape) - 1


def head_ties(ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tie every innermost vector of `ids` into one unit (a head: its D channels), so the keep
    mask stays rectangular: whole heads go, every head keeps its full width."""
    rows = ids.reshape(-1, ids.shape[-1])
    return [(np.repeat(row[:1], row.size - 1), row[1:]) for row in rows if row.size > 1]


def spread_ids(layout: Layout, shape: tuple[int, ...], start: int) -> np.ndarray:
    """The unit id of every element of `shape[start:]` (ids repeat along non-channel axes)."""
    view_shape = [1] * (len(shape) - start)
    for position, axis in enumerate(layout.axes):
        view_shape[axis - start] = layout.ids.shape[position]
    return np.broadcast_to(layout.ids.reshape(view_shape), shape[start:])


def _matching_prefix(prefix: tuple[int, ...], out_shape: tuple[int, ...]) -> int | None:
    target = math.prod(prefix)
    for length in range(len(out_shape) + 1):
        if math.prod(out_shape[:length]) == target:
            return length
        if math.prod(out_shape[:length]) > target:
            return None
    return None


def _constant_along(array: np.ndarray, axis: int) -> bool:
    if array.shape[axis] == 1:
        return True
    first = np.take(array, [0], axis=axis)
    return bool(np.all(array == first))
