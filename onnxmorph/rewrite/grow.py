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
from onnx import helper, numpy_helper

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.fold_constants import remove_unused_initializers
from onnxmorph.graph.onnx_utils import get_attribute, set_attribute
from onnxmorph.graph.param_axes import constant_channel_axis

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
    for node in analysis.loaded.model.graph.node:
        groups = {int(g) for n in node.input if n in layouts
                  for g in np.unique(unit_group[layouts[n].ids])}
        grouped = node.op_type in ("Conv", "ConvTranspose") and _grouped_not_depthwise(
            node, analysis)
        if node.op_type in _BLOCKING_OPS or grouped:
            for g in groups:
                skipped.setdefault(g, f"{node.op_type} '{node.name}' takes fixed sub-ranges")
        for n in list(node.input) + list(node.output):
            layout = layouts.get(n)
            if layout is not None and len(layout.axes) != 1:
                for g in np.unique(unit_group[layout.ids]):
                    skipped.setdefault(int(g), f"tensor '{n}' has a split channel axis")
    return skipped


def _grouped_not_depthwise(node: onnx.NodeProto, analysis: Analysis) -> bool:
    groups = int(get_attribute(node, "group", 1))
    weight = analysis.loaded.initializers.get(node.input[1])
    if groups == 1 or weight is None:
        return False
    in_per_group = weight.shape[0] // groups if node.op_type == "ConvTranspose" else weight.shape[1]
    return in_per_group != 1


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
    weight = values.get(node.input[1]) if len(node.input) > 1 else None
    if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and weight is not None:
        _grow_weight(node, weight, in_map, out_map, writer, rng)
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


def _grow_weight(node, weight, in_map, out_map, writer, rng) -> None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    std = float(weight.std()) or 1e-2
    # Conv [Cout, Cin/g, k..], ConvTranspose [Cin, Cout, k..], Gemm/MatMul [K, N] ([N, K] transB)
    out_axis, in_axis = {"Conv": (0, 1), "ConvTranspose": (1, 0)}.get(node.op_type, (1, 0))
    if node.op_type == "Gemm" and int(attrs.get("transB", 0)):
        out_axis, in_axis = 0, 1
    depthwise = node.op_type in ("Conv", "ConvTranspose") and int(attrs.get("group", 1)) > 1
    grown = weight
    if out_map is not None:
        fresh_shape = list(weight.shape)
        fresh_shape[out_axis] = int((out_map < 0).sum())
        fresh = (rng.standard_normal(fresh_shape) * std).astype(weight.dtype)
        grown = _take(grown, out_map, out_axis, fresh)
    if in_map is not None and not depthwise:
        grown = _take(grown, in_map, in_axis, 0.0)  # new inputs start unused: same function
    if depthwise and in_map is not None:
        set_attribute(node, "group", int(in_map.size))
    writer.set(node, 1, grown)


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
