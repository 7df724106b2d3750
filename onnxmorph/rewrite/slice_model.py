"""`slice_channels`: remove dead units from a seed model and emit a valid, smaller ONNX model."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.fold_constants import remove_unused_initializers
from onnxmorph.graph.handlers.base import Layout
from onnxmorph.graph.quantized import QuantizedConstant, constant_values, quantized_constants
from onnxmorph.rewrite.dead_branches import DeadBranch, plan_dead_branches, remove_unused_nodes
from onnxmorph.rewrite.slice_ops import SliceContext, apply_rule, unshare_concat_targets

# Metadata key under which the pruned model records what was removed, so `verify` can zero
# exactly those channels in the seed.
REMOVED_KEY = "onnxmorph.removed_channels"
# Set when the embedding was a group (--prune-embedding): `verify` analyses the seed alike.
EMBEDDING_KEY = "onnxmorph.prune_embedding"


@dataclass
class SliceResult:
    model: onnx.ModelProto
    alive: np.ndarray  # bool per unit
    kept: dict[str, np.ndarray]  # tensor → indices of kept channels (flattened channel ids)


def slice_channels(
    analysis: Analysis, alive: np.ndarray, scores: np.ndarray | None = None
) -> SliceResult:
    """A copy of the seed without the channels of dead units (`alive` is bool per unit).

    A group with no channel left loses the branch that only feeds it where that is exact;
    otherwise its best channel (highest `scores`) stays, and `SliceResult.alive` says so.
    """
    alive = np.asarray(alive, dtype=bool)
    _check_alive(analysis, alive)
    branches, alive = plan_dead_branches(analysis, alive, scores)
    loaded, layouts = analysis.loaded, analysis.channels.layouts
    keep = {name: alive[layout.ids] for name, layout in layouts.items()
            if name not in loaded.initializers and not alive[layout.ids].all()}
    new_shapes = dict(loaded.shapes)
    for name, mask in keep.items():
        new_shapes[name] = _new_shape(loaded.shapes[name], layouts[name], mask)
    model = onnx.ModelProto()
    model.CopyFrom(loaded.model)
    unshare_concat_targets(model.graph, keep)  # before the writer counts constant users
    writer = _ConstantWriter(model.graph, loaded.initializers,
                             quantized_constants(loaded.model, loaded.initializers))
    constants = constant_values(loaded)
    producers = {name: node for node in model.graph.node for name in node.output}
    for node in model.graph.node:
        apply_rule(SliceContext(
            node=node, keep=keep, layouts=layouts, shapes=loaded.shapes, new_shapes=new_shapes,
            constants=constants, set_constant=writer.set, select_constant=writer.select,
            producers=producers,
        ))
    writer.finish()
    _replace_dead_branches(model.graph, branches, keep, layouts, loaded.shapes)
    del model.graph.value_info[:]  # stale shapes; inference writes new ones
    kept = {name: np.flatnonzero(mask.ravel()) for name, mask in keep.items()}
    _record_removed(model, keep, analysis.channels.prune_embedding)
    return SliceResult(model=model, alive=alive, kept=kept)


def _check_alive(analysis: Analysis, alive: np.ndarray) -> None:
    if alive.shape != (analysis.channels.num_units,):
        raise PruningError(
            f"alive mask has {alive.size} entries, the model has "
            f"{analysis.channels.num_units} channel units"
        )
    dead_pinned = [u for u in analysis.channels.pinned if not alive[u]]
    if dead_pinned:
        reason = analysis.channels.pinned[dead_pinned[0]]
        raise PruningError(f"cannot remove a channel that must stay: it {reason}")


def _replace_dead_branches(graph: onnx.GraphProto, branches: list[DeadBranch],
                           keep: dict[str, np.ndarray], layouts: dict[str, Layout],
                           shapes: dict[str, tuple[int, ...]]) -> None:
    if not branches:
        return
    for index, branch in enumerate(branches):
        mask = keep.get(branch.branch_output)
        constant = branch.constant
        if mask is not None:  # the merged channels that survive, on the channel axis
            rank = len(shapes[branch.branch_output])
            axis = layouts[branch.branch_output].axis - (rank - constant.ndim)  # broadcasting
            constant = np.compress(mask.ravel(), constant, axis=axis)
        name = f"{branch.branch_output}__dead_branch_{index}"
        graph.initializer.append(numpy_helper.from_array(constant.astype(np.float32), name))
        for node in graph.node:
            if node.output[0] == branch.merge.output[0]:
                node.input[list(node.input).index(branch.branch_output)] = name
    remove_unused_nodes(graph)


def _new_shape(shape: tuple[int, ...], layout: Layout, mask: np.ndarray) -> tuple[int, ...]:
    dims = list(shape)
    if len(layout.axes) == 1:
        dims[layout.axis] = int(mask.sum())
        return tuple(dims)
    for position, axis in enumerate(layout.axes):
        others = tuple(a for a in range(mask.ndim) if a != position)
        dims[axis] = int(mask.any(axis=others).sum())
    return tuple(dims)


class _ConstantWriter:
    """Replaces node inputs with sliced constants without touching other users of the same
    initializer: a shared tensor gets a new name per node that slices it differently.
    A quantized constant is sliced in its int8 form, never written back dequantized."""

    def __init__(self, graph: onnx.GraphProto, values: dict[str, np.ndarray],
                 quantized: dict[str, QuantizedConstant]) -> None:
        self.graph, self.values, self.quantized = graph, values, quantized
        self.producers = {out: node for node in graph.node for out in node.output}
        self.users: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                if name in values or name in quantized:
                    self.users[name] = self.users.get(name, 0) + 1
        self.replaced: dict[str, np.ndarray] = {}
        self.added: dict[str, np.ndarray] = {}
        self.same_slice: dict[tuple, str] = {}
        self.quantized_selections: dict[str, tuple[dict[int, np.ndarray], int]] = {}

    def select(self, node: onnx.NodeProto, index: int, selection: dict[int, np.ndarray]
               ) -> None:
        """Keep `selection` (axis → keep mask) of constant input `index` of `node`."""
        name = node.input[index]
        quantized = self.quantized.get(name)
        if quantized is None:
            self.set(node, index, _select(self.values[name], selection))
            return
        previous = self.quantized_selections.get(name)
        if previous is not None:  # a shared DequantizeLinear: every user must agree
            same = previous[0].keys() == selection.keys() and all(
                np.array_equal(previous[0][a], selection[a]) for a in selection)
            if not same:
                raise _shared_quantized(name)
            self.quantized_selections[name] = (previous[0], previous[1] + 1)
            return
        self.quantized_selections[name] = (selection, 1)
        dequantize = self.producers[name]
        self.set(dequantize, 0, _select(self.values[quantized.quantized], selection))
        if quantized.axis in selection:  # per-axis scale and zero point follow that axis
            along = {0: selection[quantized.axis]}
            for i in quantized.per_axis_inputs:
                self.set(dequantize, i, _select(self.values[dequantize.input[i]], along))

    def set(self, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
        name = node.input[index] if index < len(node.input) else ""  # absent optional input
        if name in self.quantized:
            raise PruningError(
                f"cannot rewrite quantized constant '{name}' of '{node.name or node.output[0]}' "
                "without dequantizing it; this quantized pattern is not supported")
        original = self.values.get(name)
        value = np.ascontiguousarray(value, dtype=original.dtype if original is not None else None)
        if original is not None and original.shape == value.shape and np.array_equal(
            original, value
        ):
            return
        if self.users.get(name, 0) <= 1 and original is not None:
            self.replaced[name] = value
            return
        # Users that slice a shared tensor the same way (a Q/DQ pair's scale) share the result.
        key = (name, value.shape, value.tobytes())
        new_name = self.same_slice.get(key) or (
            f"{name or 'input' + str(index)}__{node.name or node.output[0]}")
        self.same_slice[key] = new_name
        self.added[new_name] = value
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = new_name

    def finish(self) -> None:
        for name, (_, count) in self.quantized_selections.items():
            if count != self.users.get(name, 0):
                raise _shared_quantized(name)
        for tensor in self.graph.initializer:
            if tensor.name in self.replaced:
                tensor.CopyFrom(numpy_helper.from_array(self.replaced[tensor.name], tensor.name))
        for name, value in self.added.items():
            self.graph.initializer.append(numpy_helper.from_array(value, name))
        remove_unused_initializers(self.graph)


def _shared_quantized(name: str) -> PruningError:
    return PruningError(
        f"quantized constant '{name}' feeds several layers that keep different channels; "
        "onnxmorph cannot slice a shared DequantizeLinear that way (give each layer its own)")


def _select(value: np.ndarray, selection: dict[int, np.ndarray]) -> np.ndarray:
    for axis, mask in selection.items():
        value = np.compress(mask, value, axis=axis)
    return value


def _record_removed(model: onnx.ModelProto, keep: dict[str, np.ndarray],
                    prune_embedding: bool = False) -> None:
    removed = {name: np.flatnonzero(~mask.ravel()).tolist() for name, mask in keep.items()}
    for index in reversed(range(len(model.metadata_props))):
        if model.metadata_props[index].key in (REMOVED_KEY, EMBEDDING_KEY):
            del model.metadata_props[index]
    entry = model.metadata_props.add()
    entry.key, entry.value = REMOVED_KEY, json.dumps(removed, separators=(",", ":"))
    if prune_embedding:
        flag = model.metadata_props.add()
        flag.key, flag.value = EMBEDDING_KEY, "1"


def pruned_embedding(model: onnx.ModelProto) -> bool:
    """Whether `model` was sliced with the embedding as a group (--prune-embedding)."""
    return any(e.key == EMBEDDING_KEY and e.value == "1" for e in model.metadata_props)


def removed_channels(model: onnx.ModelProto) -> dict[str, list[int]]:
    for entry in model.metadata_props:
        if entry.key == REMOVED_KEY:
            return json.loads(entry.value)
    return {}
