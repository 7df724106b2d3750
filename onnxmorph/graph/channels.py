"""Find channel groups: the driver that runs the op handlers over a loaded model.

Every channel of every activation tensor gets a *unit id*; handlers say which ids are the same
unit (a residual Add), which channels are new (a Conv's outputs) and which must stay (a graph
output). Units that came into being together (one layer's outputs) or were merged form a
*group*: the thing a width is learned for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxmorph.graph.handlers import Coupling, Fresh, Layout, NodeContext, handler_for
from onnxmorph.graph.handlers.attention import tie_split_heads
from onnxmorph.graph.load import LoadedModel
from onnxmorph.graph.onnx_utils import default_opset, get_attribute
from onnxmorph.graph.quantized import constant_values
from onnxmorph.graph.union_find import UnionFind


@dataclass(frozen=True)
class ChannelGroup:
    """A set of units (independently removable channels) that share one learned width."""

    id: int
    units: np.ndarray = field(repr=False)  # indices into ChannelAnalysis units
    prunable: bool
    reason: str | None
    tensors: tuple[str, ...]
    layers: tuple[str, ...]

    @property
    def channels(self) -> int:
        return int(self.units.size)


@dataclass
class ChannelAnalysis:
    """Unit layout of every activation tensor, and the groups those units form."""

    layouts: dict[str, Layout]  # tensor name → layout whose ids are unit indices
    groups: list[ChannelGroup]
    unit_group: np.ndarray  # unit index → group id
    pinned: dict[int, str]  # unit index → why it must stay
    prune_embedding: bool = False  # analysed with --prune-embedding (re-analyses must be too)

    @property
    def num_units(self) -> int:
        return int(self.unit_group.size)

    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def keep_mask(self, tensor: str, alive_units: np.ndarray) -> np.ndarray:
        """Boolean mask over the tensor's channel ids: which channels survive."""
        return alive_units[self.layouts[tensor].ids]


def mask_shape(layout: Layout, rank: int) -> tuple[int, ...]:
    """Shape that broadcasts a mask over the layout's channel axes (trailing alignment)."""
    start = min(layout.axes)
    dims = [1] * (rank - start)
    for position, axis in enumerate(layout.axes):
        dims[axis - start] = layout.ids.shape[position]
    return tuple(dims)


def find_channel_groups(loaded: LoadedModel, prune_embedding: bool = False) -> ChannelAnalysis:
    """The channel groups of `loaded`; `prune_embedding` makes the embedding dimension (the
    residual stream through every LayerNormalization) one prunable group."""
    return _Driver(loaded, prune_embedding).run()


class _Driver:
    def __init__(self, loaded: LoadedModel, prune_embedding: bool = False) -> None:
        self.loaded = loaded
        self.prune_embedding = prune_embedding
        self.units = UnionFind()
        self.groups = UnionFind()  # over the same ids: merged when units or layers merge
        self.layouts: dict[str, Layout] = {}
        self.pins: list[tuple[np.ndarray, str]] = []
        self.head_splits: list[np.ndarray] = []
        self._opset = default_opset(loaded.model, 13)
        self.constants = constant_values(loaded)  # initializers and quantized weights
        self.dims_read = shape_dims_read(loaded.model.graph, self.constants)

    def run(self) -> ChannelAnalysis:
        graph = self.loaded.model.graph
        for inp in graph.input:
            if inp.name not in self.loaded.initializers:
                self._seed_input(inp.name)
        for node in _toposorted(graph):
            self._apply(node, self._coupling(node))
        for out in graph.output:
            if out.name in self.layouts:
                self.pins.append((self.layouts[out.name].ids, f"reaches graph output '{out.name}'"))
        return self._finish()

    def _seed_input(self, name: str) -> None:
        shape = self.loaded.shapes.get(name)
        if shape:
            axis = 1 if len(shape) >= 2 else 0
            self.layouts[name] = self._allocate(Fresh(axis, shape[axis]))
            self.pins.append((self.layouts[name].ids, f"comes from graph input '{name}'"))

    def _coupling(self, node: onnx.NodeProto) -> Coupling:
        ctx = NodeContext(
            node=node,
            in_layouts=[self.layouts.get(n) if n else None for n in node.input],
            in_shapes=[self.loaded.shapes.get(n) if n else None for n in node.input],
            out_shapes=[self.loaded.shapes.get(n) if n else None for n in node.output],
            constants=[self.constants.get(n) if n else None for n in node.input],
            opset=self._opset,
            prune_embedding=self.prune_embedding,
            dims_read=self.dims_read.get(node.output[0]) if node.op_type == "Shape" else None,
        )
        handler = handler_for(node)
        if handler is None:
            return ctx.boundary(f"unsupported op {node.op_type} '{ctx.name}'")
        return handler(ctx)

    def _apply(self, node: onnx.NodeProto, coupling: Coupling) -> None:
        for a, b in coupling.unify:
            self.units.union_arrays(a, b)
            self.groups.union_arrays(a, b)
        self.pins.extend(coupling.pins)
        self.head_splits.extend(coupling.head_splits)
        for name, out in zip(node.output, coupling.outputs):
            if not name or out is None:
                continue
            layout = self._allocate(out) if isinstance(out, Fresh) else out
            self.layouts[name] = layout

    def _allocate(self, fresh: Fresh) -> Layout:
        ids = self.units.add(fresh.count)
        self.groups.add(fresh.count)
        self.groups.union_arrays(ids[:1].repeat(len(ids)), ids)
        if fresh.pinned:
            self.pins.append((ids, fresh.pinned))
        return Layout((fresh.axis,), np.tile(np.repeat(ids, fresh.repeat), fresh.tile))

    def _finish(self) -> ChannelAnalysis:
        tie_split_heads(self.units, self.groups, self.head_splits)
        unit_roots = self.units.roots()
        roots, unit_of_id = np.unique(unit_roots, return_inverse=True)
        group_roots = self.groups.roots()[roots]
        group_ids, unit_group = np.unique(group_roots, return_inverse=True)
        layouts = {
            name: Layout(layout.axes, unit_of_id[layout.ids])
            for name, layout in self.layouts.items()
        }
        pinned: dict[int, str] = {}
        for ids, reason in self.pins:
            for unit in np.unique(unit_of_id[np.ravel(ids)]).tolist():
                pinned.setdefault(unit, reason)
        groups = _build_groups(self.loaded, layouts, unit_group, len(group_ids), pinned,
                               self.constants)
        return ChannelAnalysis(layouts=layouts, groups=groups, unit_group=unit_group,
                               pinned=pinned, prune_embedding=self.prune_embedding)


def _build_groups(loaded, layouts, unit_group, count, pinned, constants) -> list[ChannelGroup]:
    tensors: list[list[str]] = [[] for _ in range(count)]
    for name, layout in layouts.items():
        if name in loaded.initializers:
            continue
        for group in np.unique(unit_group[layout.ids]).tolist():
            tensors[group].append(name)
    layers: list[list[str]] = [[] for _ in range(count)]
    for node in loaded.model.graph.node:
        if not any(n in constants for n in node.input):
            continue  # only nodes with weights are "layers"
        touched = [layouts[n].ids for n in list(node.input) + list(node.output) if n in layouts]
        if touched:
            for group in np.unique(unit_group[np.concatenate([t.ravel() for t in touched])]):
                layers[int(group)].append(node.name or node.output[0])
    groups = []
    for group in range(count):
        units = np.flatnonzero(unit_group == group)
        reason = next((pinned[u] for u in units.tolist() if u in pinned), None)
        groups.append(ChannelGroup(
            id=group, units=units, prunable=reason is None, reason=reason,
            tensors=tuple(tensors[group]), layers=tuple(layers[group]),
        ))
    return groups


def shape_dims_read(graph: onnx.GraphProto, constants: dict[str, np.ndarray]
                    ) -> dict[str, frozenset[int]]:
    """Shape output → the input axes its consumers read, where every consumer picks constant
    positions (Gather on axis 0, Slice with constant bounds, step 1) and Shape has no
    start/end; a Shape output missing here may be read whole."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    read: dict[str, frozenset[int]] = {}
    for node in graph.node:
        if node.op_type != "Shape" or node.attribute or node.output[0] in outputs:
            continue
        dims: set[int] = set()
        for user in consumers.get(node.output[0], []):
            picked = _positions_read(user, constants)
            if picked is None or user.input[0] != node.output[0]:
                break
            dims.update(picked)
        else:
            read[node.output[0]] = frozenset(dims)
    return read


def _positions_read(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> list[int] | None:
    values = [constants.get(name) if name else None for name in node.input]
    if node.op_type == "Gather" and len(values) == 2 and values[1] is not None \
            and get_attribute(node, "axis", 0) == 0:
        picked = values[1].ravel().tolist()
        return None if any(p < 0 for p in picked) else picked
    if node.op_type == "Slice" and len(values) >= 3 and all(v is not None for v in values[1:]):
        starts, ends = values[1].ravel(), values[2].ravel()
        axes = values[3].ravel() if len(values) > 3 else np.zeros(1)
        steps = values[4].ravel() if len(values) > 4 else np.ones(1)
        if len(starts) != 1 or axes[0] != 0 or steps[0] != 1 or starts[0] < 0 \
                or 0 <= ends[0] < starts[0] or -(2 ** 62) < ends[0] < 0:
            return None
        return list(range(int(starts[0]), int(min(ends[0], 64))))
    return None


def _toposorted(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in an order where producers come first (ONNX requires it, not all exporters do)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            ordered.extend(pending)  # a cycle or outer-scope names: keep the file's order
            break
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for node in ready:
            ordered.append(node)
            available.update(node.output)
    return ordered
