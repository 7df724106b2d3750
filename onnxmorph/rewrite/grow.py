"""`grow_channels`: add fresh channels to groups, keeping the model's function (MorphNet's
expand step). New channels get random incoming weights and zero outgoing weights, so the
grown model computes exactly what the seed computes until fine-tuning uses them.

Only simple layouts grow: a group whose channels sit in one contiguous run of equal blocks in
every tensor (plain and depthwise convs, Concat offsets, Flatten blocks), and whose tensors
meet no op that takes sub-ranges (Split, Slice, Gather) or ties groups (grouped conv).
Other groups keep their width, and the result says which.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.fold_constants import remove_unused_initializers
from onnxmorph.graph.layers import constant_channel_axis, layer_kind, weight_layout
from onnxmorph.graph.onnx_utils import set_attribute
from onnxmorph.graph.quantized import quantized_constants

_BLOCKING_OPS = ("Split", "Slice", "Gather")


@dataclass
class GrowResult:
    model: onnx.ModelProto
    added: dict[int, int]  # group id → channels added
    skipped: dict[int, str]  # group id → why it could not grow


def grow_channels(analysis: Analysis, additions: dict[int, int], seed: int = 0) -> GrowResult:
    """A copy of the seed where group `g` has `additions[g]` more channels."""
    layouts, shapes = analysis.channels.layouts, analysis.loaded.shapes
    unit_group = analysis.channels.unit_group
    skipped = _blocked_groups(analysis, additions)
    tensors = [name for name, layout in layouts.items()
               if name not in analysis.loaded.initializers and len(layout.axes) == 1]
    maps: dict[str, np.ndarray] = {}  # tensor → old channel index per new position (-1: new)
    while True:  # a group found ungrowable in one tensor changes the maps of the others
        maps, newly_skipped = {}, {}
        for name in tensors:
            index_map, why = _grown_map(layouts[name].ids, unit_group, additions, skipped)
            newly_skipped.update(why)
            if index_map is not None:
                maps[name] = index_map
        if not newly_skipped:
            break
        skipped.update(newly_skipped)
    model = onnx.ModelProto()
    model.CopyFrom(analysis.loaded.model)
    values = analysis.loaded.initializers
    writer = _Writer(model.graph, values)
    rng = np.random.default_rng(seed)
    for node in model.graph.node:
        _grow_node(node, maps, layouts, shapes, values, writer, rng)
    writer.finish()
    del model.graph.value_info[:]
    added = {g: n for g, n in additions.items() if g not in skipped and n > 0}
    return GrowResult(model=model, added=added, skipped=skipped)


def _blocked_groups(analysis: Analysis, additions: dict[int, int]) -> dict[int, str]:
    layouts, unit_group = analysis.channels.layouts, analysis.channels.unit_group
    skipped: dict[int, str] = {}
    for group in analysis.groups:
        if additions.get(group.id, 0) > 0 and not group.prunable:
            skipped[group.id] = f"it is not prunable: {group.reason}"
    values = analysis.loaded.initializers
    quantized = quantized_constants(analysis.loaded.model, values)
    for node in analysis.loaded.model.graph.node:
        groups = {int(g) for n in node.input if n in layouts
                  for g in np.unique(unit_group[layouts[n].ids])}
        layout = weight_layout(node, values)
        grouped = layout is not None and layout.groups > 1 and not layout.depthwise
        if node.op_type in _BLOCKING_OPS or grouped:
            for g in groups:
                skipped.setdefault(g, f"{node.op_type} '{node.name}' takes fixed sub-ranges")
        if any(n in quantized for n in node.input):
            touched = groups | {int(g) for n in node.output if n in layouts
                                for g in np.unique(unit_group[layouts[n].ids])}
            for g in touched:
                skipped.setdefault(g, f"{node.op_type} '{node.name}' has quantized constants")
        for n in list(node.input) + list(node.output):
            layout = layouts.get(n)
            if layout is not None and len(layout.axes) != 1:
                for g in np.unique(unit_group[layout.ids]):
                    skipped.setdefault(int(g), f"tensor '{n}' has a split channel axis")
    return skipped


def _grown_map(ids, unit_group, additions, skipped):
    """Old-index map of a tensor whose growing groups get new blocks after their run."""
    pieces: list[np.ndarray] = []
    cursor = 0
    order = np.argsort([np.flatnonzero(unit_group[ids] == g)[0]
                        for g in np.unique(unit_group[ids])])
    present = np.unique(unit_group[ids])[order]
    for group in present.tolist():
        count = additions.get(group, 0)
        if count <= 0 or group in skipped:
            continue
        where = np.flatnonzero(unit_group[ids] == group)
        block = _block_size(ids[where])
        if where[-1] - where[0] + 1 != where.size or block is None:
            return None, {group: "its channels are interleaved with others in a tensor"}
        end = where[-1] + 1
        pieces += [np.arange(cursor, end), np.full(count * block, -1)]
        cursor = end
    if not pieces:
        return None, {}
    pieces.append(np.arange(cursor, ids.size))
    return np.concatenate(pieces), {}


def _block_size(run: np.ndarray) -> int | None:
    """Size b if `run` is units in contiguous blocks of b equal ids each."""
    changes = np.flatnonzero(np.diff(run)) + 1
    bounds = np.concatenate([[0], changes, [run.size]])
    sizes = np.diff(bounds)
    if np.unique(run[bounds[:-1]]).size != sizes.size or np.unique(sizes).size != 1:
        return None
    return int(sizes[0])


def _take(value: np.ndarray, index_map: np.ndarray, axis: int, fill: np.ndarray) -> np.ndarray:
    """`value` re-indexed along `axis`; positions of -1 take `fill` (broadcast)."""
    safe = np.where(index_map < 0, 0, index_map)
    out = np.take(value, safe, axis=axis).astype(value.dtype)
    new = np.flatnonzero(index_map < 0)
    if new.size:
        index = [slice(None)] * value.ndim
        index[axis] = new
        out[tuple(index)] = fill
    return out


def _grow_node(node, maps, layouts, shapes, values, writer, rng) -> None:
    out = node.output[0]
    out_map, in_map = maps.get(out), maps.get(node.input[0]) if node.input else None
    for index, name in enumerate(node.input):
        value = values.get(name)
        if value is None or out_map is None:
            continue
        axis = constant_channel_axis(node, index, value, layouts.get(out), shapes.get(out))
        if axis is not None:  # per-channel constants: new channels take the mean value
            writer.set(node, index, _take(value, out_map, axis, value.mean(axis=axis,
                                                                           keepdims=True)))
    layout = weight_layout(node, values)
    if layout is not None:
        kind = layer_kind(node)
        in_map = maps.get(node.input[kind.activation])
        _grow_weight(node, kind.weight, layout, values[node.input[kind.weight]], in_map,
                     out_map, writer, rng)
    elif node.op_type == "Reshape" and out_map is not None:
        target = values[node.input[1]].copy()
        for axis, (old, new) in enumerate(zip(shapes[out], _new_shape(out, shapes, layouts,
                                                                       maps))):
            if old != new and target[axis] not in (0, -1):
                target[axis] = new
        writer.set(node, 1, target)
    elif node.op_type == "Resize" and out_map is not None and len(node.input) > 3:
        sizes = values.get(node.input[3])
        if sizes is not None:
            writer.set(node, 3, np.array(_new_shape(out, shapes, layouts, maps), sizes.dtype))


def _new_shape(name, shapes, layouts, maps) -> tuple[int, ...]:
    dims = list(shapes[name])
    dims[layouts[name].axis] = maps[name].size
    return tuple(dims)


def _grow_weight(node, index, layout, weight, in_map, out_map, writer, rng) -> None:
    """New outputs get random weights, new inputs zero weights (unused until fine-tuned)."""
    std = float(weight.std()) or 1e-2
    grown = weight
    if out_map is not None and not (layout.depthwise and layout.out_axis == layout.grouped_axis):
        grown = _take(grown, out_map, layout.out_axis,
                      _random_block(weight, layout.out_axis, out_map, std, rng))
    if in_map is not None and not layout.depthwise:
        grown = _take(grown, in_map, layout.in_axis, 0.0)  # same function until trained
    if layout.depthwise and in_map is not None:
        if layout.in_axis != layout.grouped_axis:  # ConvTranspose: one input row per group
            grown = _take(grown, in_map, layout.in_axis,
                          _random_block(weight, layout.in_axis, in_map, std, rng))
        set_attribute(node, "group", int(in_map.size))
    writer.set(node, index, grown)


def _random_block(weight, axis, index_map, std, rng) -> np.ndarray:
    """Random weights for the new positions (-1) of `index_map` along `axis`."""
    shape = list(weight.shape)
    shape[axis] = int((index_map < 0).sum())
    return (rng.standard_normal(shape) * std).astype(weight.dtype)


class _Writer:
    def __init__(self, graph: onnx.GraphProto, values: dict[str, np.ndarray]) -> None:
        self.graph, self.values, self.new = graph, values, {}

    def set(self, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
        name = f"{node.input[index]}__grown_{node.name or node.output[0]}"
        self.new[name] = value
        node.input[index] = name

    def finish(self) -> None:
        for name, value in self.new.items():
            self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value),
                                                                  name))
        remove_unused_initializers(self.graph)
