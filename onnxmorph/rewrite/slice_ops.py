"""Per-op slicing rules, registered by op type: how a node's constants and attributes change
when channels of its input and output tensors are removed.

Weights and per-channel constants are sliced by a *selection* (a keep mask per axis) derived
from the layer-kind registry (graph/layers.py); the writer applies it to the stored tensor, so
the same selection slices an int8 weight and its per-axis scale and zero point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxmorph.errors import PruningError
from onnxmorph.graph.handlers.base import Layout
from onnxmorph.graph.layers import constant_channel_axis, layer_kind, weight_layer_ops
from onnxmorph.graph.onnx_utils import get_attribute, remove_attribute, set_attribute

Selection = dict[int, np.ndarray]  # axis → keep mask along it


@dataclass
class SliceContext:
    node: onnx.NodeProto
    keep: dict[str, np.ndarray]  # tensor → keep mask over its channel ids (shape of ids)
    layouts: dict[str, Layout]
    shapes: dict[str, tuple[int, ...]]
    new_shapes: dict[str, tuple[int, ...]]
    constants: dict[str, np.ndarray]
    set_constant: Callable[[onnx.NodeProto, int, np.ndarray], None]
    select_constant: Callable[[onnx.NodeProto, int, Selection], None]
    producers: dict[str, onnx.NodeProto] = field(default_factory=dict)  # tensor → its node

    def mask(self, tensor: str) -> np.ndarray | None:
        return self.keep.get(tensor)

    def const(self, index: int) -> np.ndarray | None:
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        return self.constants.get(self.node.input[index])

    def select(self, index: int, selection: Selection) -> None:
        if selection:
            self.select_constant(self.node, index, selection)

    def set_attr(self, name: str, value) -> None:
        set_attribute(self.node, name, value)

    def attr(self, name: str, default=None):
        return get_attribute(self.node, name, default)


SliceRule = Callable[[SliceContext], None]
_RULES: dict[str, SliceRule] = {}


def rule(*op_types: str) -> Callable[[SliceRule], SliceRule]:
    def decorate(fn: SliceRule) -> SliceRule:
        for op_type in op_types:
            _RULES[op_type] = fn
        return fn

    return decorate


def apply_rule(ctx: SliceContext) -> None:
    _per_channel_constants(ctx)
    specific = _RULES.get(ctx.node.op_type)
    if specific is not None:
        specific(ctx)


def _per_channel_constants(ctx: SliceContext) -> None:
    """Biases, batch-norm statistics, per-channel scales on either operand: every input whose
    declared role makes it per channel is sliced along the output channels."""
    out = ctx.node.output[0]
    out_mask = ctx.mask(out)
    if out_mask is None or out_mask.all():
        return
    for index, name in enumerate(ctx.node.input):
        value = ctx.constants.get(name)
        if value is None:
            continue
        axis = constant_channel_axis(
            ctx.node, index, value, ctx.layouts.get(out), ctx.shapes.get(out)
        )
        if axis is not None:
            ctx.select(index, {axis: out_mask.ravel()})


@rule(*weight_layer_ops())
def weight_layer(ctx: SliceContext) -> None:
    """Conv, ConvTranspose, Gemm, MatMul: keep the weight entries of kept inputs and outputs."""
    kind = layer_kind(ctx.node)
    weight = ctx.const(kind.weight)
    if weight is None:
        return
    layout = kind.weight_layout(ctx.node, weight.shape)
    in_mask = ctx.mask(ctx.node.input[kind.activation])
    out_mask = ctx.mask(ctx.node.output[0])
    ctx.select(kind.weight, layout.selection(
        None if in_mask is None else in_mask.ravel(),
        None if out_mask is None else out_mask.ravel()))
    groups = layout.groups_after(None if in_mask is None else in_mask.ravel())
    if groups != layout.groups:
        ctx.set_attr("group", groups)


@rule("Split")
def split(ctx: SliceContext) -> None:
    source = ctx.node.input[0]
    if source not in ctx.keep:
        return
    axis = int(ctx.attr("axis", 0)) % len(ctx.shapes[source])
    sizes = np.array([ctx.new_shapes[o][axis] for o in ctx.node.output], dtype=np.int64)
    if ctx.attr("split") is not None:
        ctx.set_attr("split", sizes.tolist())
    elif len(ctx.node.input) > 1 and ctx.node.input[1]:
        ctx.set_constant(ctx.node, 1, sizes)
    else:
        # Equal parts may no longer be equal: name the sizes explicitly (opset >= 13 input).
        remove_attribute(ctx.node, "num_outputs")
        ctx.set_constant(ctx.node, 1, sizes)


@rule("Slice")
def slice_(ctx: SliceContext) -> None:
    source = ctx.node.input[0]
    in_mask = ctx.mask(source)
    if in_mask is None or in_mask.all():
        return
    layout = ctx.layouts[source]
    rank = len(ctx.shapes[source])
    starts, ends, axes = ctx.const(1).copy(), ctx.const(2).copy(), ctx.const(3)
    axes = np.arange(len(starts)) if axes is None else axes
    before = np.concatenate([[0], np.cumsum(in_mask)])  # kept channels before each index
    size = in_mask.size
    for i, axis in enumerate(axes):
        if int(axis) % rank != layout.axis:
            continue
        lo, hi, _ = slice(int(starts[i]), _end(int(ends[i])), 1).indices(size)
        starts[i], ends[i] = before[lo], before[max(hi, lo)]
    ctx.set_constant(ctx.node, 1, starts)
    ctx.set_constant(ctx.node, 2, ends)


def _end(end: int) -> int | None:
    return None if abs(end) >= 2**62 else end


@rule("Gather")
def gather(ctx: SliceContext) -> None:
    source = ctx.node.input[0]
    in_mask = ctx.mask(source)
    layout = ctx.layouts.get(source)
    axis = int(ctx.attr("axis", 0)) % len(ctx.shapes[source])
    if in_mask is not None and layout is not None and len(layout.axes) > 1 \
            and axis in layout.axes:
        others = tuple(i for i, a in enumerate(layout.axes) if a != axis)
        if not in_mask.any(axis=others).all():  # a picked entry of the outer axis is gone
            raise PruningError(f"Gather '{ctx.node.name}' reads an entry that pruning removes")
        return
    if in_mask is None or layout is None or layout.axes != (axis,):
        return
    indices = ctx.const(1)
    indices = np.where(indices < 0, indices + in_mask.size, indices)
    position = np.cumsum(in_mask) - 1  # old index → index among the kept channels
    kept = indices[in_mask[indices]]
    ctx.set_constant(ctx.node, 1, position[kept].astype(indices.dtype))


@rule("Reshape")
def reshape(ctx: SliceContext) -> None:
    out = ctx.node.output[0]
    target = ctx.const(1)
    if out in ctx.keep and target is None:
        concat_target_constants(ctx)
    if out not in ctx.keep or target is None:
        return
    new_shape, old_shape = ctx.new_shapes[out], ctx.shapes[out]
    updated = target.copy()
    for axis, (old, new) in enumerate(zip(old_shape, new_shape)):
        # 0 (copy) and -1 (infer) already follow the new sizes.
        if old != new and updated[axis] not in (0, -1):
            updated[axis] = new
    ctx.set_constant(ctx.node, 1, updated)


@rule("Expand")
def expand(ctx: SliceContext) -> None:
    """A class token expanded to [B, 1, E] (--prune-embedding): E in the target follows the
    kept channels (a constant target, or constants of a Concat-built one; a 1 or a value read
    at run time from the token itself already does)."""
    out = ctx.node.output[0]
    mask = ctx.mask(out)
    if mask is None or mask.all():
        return
    target = ctx.const(1)
    if target is None:
        concat_target_constants(ctx)
        return
    new_shape, old_shape = ctx.new_shapes[out], ctx.shapes[out]
    shift = len(old_shape) - target.size
    updated = target.copy()
    for axis in range(max(0, -shift), target.size):
        old, new = old_shape[axis + shift], new_shape[axis + shift]
        if old != new and updated[axis] == old:
            updated[axis] = new
    ctx.set_constant(ctx.node, 1, updated)


def unshare_concat_targets(graph: onnx.GraphProto, keep: dict[str, np.ndarray]) -> None:
    """Give every Reshape that pruning reshapes its own copy of a Concat-built target: the
    dynamo exporter computes one [B, H, T, D] for all layers, whose head counts now differ."""
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    producers = {out: node for node in graph.node for out in node.output}
    for node in list(graph.node):
        if node.op_type != "Reshape" or node.output[0] not in keep or len(node.input) < 2:
            continue
        concat = producers.get(node.input[1])
        if concat is None or concat.op_type != "Concat" or users.get(node.input[1], 0) < 2:
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(concat)
        copy.name = f"{concat.name or concat.output[0]}__{node.name or node.output[0]}"
        copy.output[0] = f"{concat.output[0]}__{node.name or node.output[0]}"
        users[node.input[1]] -= 1
        node.input[1] = copy.output[0]
        position = next(i for i, n in enumerate(graph.node)
                        if n.output and n.output[0] == concat.output[0])
        graph.node.insert(position + 1, copy)


def concat_target_constants(ctx: SliceContext) -> None:
    """A target computed at run time as Concat(Shape entries, constants) — the dynamo
    exporter's [B, H, T, D] with B and T read from the input: rewrite the constant entries
    whose axis pruning shrinks (a head count). Anything else stays, and verify judges it."""
    out = ctx.node.output[0]
    concat = ctx.producers.get(ctx.node.input[1])
    if concat is None or concat.op_type != "Concat":
        return
    new_shape, old_shape = ctx.new_shapes[out], ctx.shapes[out]
    position = 0
    for index, name in enumerate(concat.input):
        length = ctx.shapes.get(name, (0,))[0] if len(ctx.shapes.get(name, ())) == 1 else None
        if length is None:
            return  # a part of unknown length: positions after it are unknown
        value = ctx.constants.get(name)
        if value is not None:
            axes = range(position, position + length)
            updated = np.array([new_shape[a] if value.ravel()[i] == old_shape[a] != new_shape[a]
                                else value.ravel()[i] for i, a in enumerate(axes)],
                               dtype=value.dtype).reshape(value.shape)
            ctx.set_constant(concat, index, updated)
        position += length


@rule("Attention")
def contrib_attention(ctx: SliceContext) -> None:
    """com.microsoft Attention: a removed head's D columns go from each of the q, k and v
    parts of the packed weight and bias, and num_heads counts the heads left."""
    mask = ctx.mask(ctx.node.output[0])
    if ctx.node.domain != "com.microsoft" or mask is None or mask.all():
        return
    packed = np.tile(mask.ravel(), 3)
    ctx.select(1, {1: packed})
    if ctx.const(2) is not None:
        ctx.select(2, {0: packed})
    head_dim = mask.size // int(ctx.attr("num_heads"))
    ctx.set_attr("num_heads", int(mask.sum()) // head_dim)


@rule("MultiHeadAttention")
def contrib_multi_head_attention(ctx: SliceContext) -> None:
    """com.microsoft MultiHeadAttention: its packed bias [3·H·D] and num_heads (Q, K and V
    are sliced by the projections that make them)."""
    mask = ctx.mask(ctx.node.output[0])
    if ctx.node.domain != "com.microsoft" or mask is None or mask.all():
        return
    if ctx.const(3) is not None:
        ctx.select(3, {0: np.tile(mask.ravel(), 3)})
    head_dim = mask.size // int(ctx.attr("num_heads"))
    ctx.set_attr("num_heads", int(mask.sum()) // head_dim)


@rule("BiasGelu", "FastGelu")
def contrib_bias_gelu(ctx: SliceContext) -> None:
    mask = ctx.mask(ctx.node.output[0])
    if ctx.node.domain == "com.microsoft" and mask is not None and ctx.const(1) is not None:
        ctx.select(1, {0: mask.ravel()})


@rule("Resize")
def resize(ctx: SliceContext) -> None:
    sizes = ctx.const(3)
    out = ctx.node.output[0]
    if sizes is not None and out in ctx.keep:
        ctx.set_constant(ctx.node, 3, np.array(ctx.new_shapes[out], dtype=sizes.dtype))
