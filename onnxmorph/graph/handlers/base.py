"""What a handler sees (NodeContext) and what it returns (Coupling); handlers never mutate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxmorph.graph.onnx_utils import get_attribute, is_default_domain


@dataclass(frozen=True)
class Layout:
    """Which axes of a tensor are its channel axes, and the unit id of every channel.

    `ids` has one entry per channel index (its shape is the tensor's dims along `axes`). Two
    channels with the same id are one unit: they are kept or removed together.
    """

    axes: tuple[int, ...]
    ids: np.ndarray

    @property
    def axis(self) -> int:
        if len(self.axes) != 1:
            raise ValueError(f"layout has {len(self.axes)} channel axes, not one")
        return self.axes[0]

    @property
    def size(self) -> int:
        return int(self.ids.size)


@dataclass(frozen=True)
class Fresh:
    """Request for new channels (a layer's outputs): `count` new units laid out `tile` times."""

    axis: int
    count: int
    tile: int = 1
    pinned: str | None = None
    repeat: int = 1  # channels per unit, side by side (a head's D channels)


OutputLayout = Layout | Fresh | None


@dataclass
class Coupling:
    """How one node ties channels: layouts of its outputs, ids to merge, ids to keep."""

    outputs: list[OutputLayout]
    unify: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    pins: list[tuple[np.ndarray, str]] = field(default_factory=list)
    # Ids [..., D] of a feature axis split into heads or into q/k/v rows: each innermost row
    # becomes one unit unless later ties already make the keep mask rectangular.
    head_splits: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class NodeContext:
    node: onnx.NodeProto
    in_layouts: list[Layout | None]
    in_shapes: list[tuple[int, ...] | None]
    out_shapes: list[tuple[int, ...] | None]
    constants: list[np.ndarray | None]
    opset: int = 13  # the model's default-domain opset (some ops changed meaning at 13)
    # --prune-embedding: LayerNorms pass the residual stream's channels through (one group).
    prune_embedding: bool = False
    # A Shape node: the input axes its consumers read (Gather/Slice of constant positions),
    # None when unknown (then every axis counts as read).
    dims_read: frozenset[int] | None = None

    @property
    def name(self) -> str:
        return self.node.name or self.node.output[0]

    def attr(self, name: str, default=None):
        return get_attribute(self.node, name, default)

    def const(self, index: int) -> np.ndarray | None:
        return self.constants[index] if index < len(self.constants) else None

    def has_input(self, index: int) -> bool:
        return index < len(self.node.input) and bool(self.node.input[index])

    def activation_indices(self) -> list[int]:
        return [i for i, layout in enumerate(self.in_layouts) if layout is not None]

    def boundary(self, reason: str) -> Coupling:
        """Keep every channel this node touches: the safe answer for what we cannot prove."""
        pins = [(layout.ids, reason) for layout in self.in_layouts if layout is not None]
        outputs: list[OutputLayout] = []
        for shape in self.out_shapes:
            if shape is None or len(shape) == 0:
                outputs.append(None)
            else:
                axis = 1 if len(shape) >= 2 else 0
                outputs.append(Fresh(axis=axis, count=shape[axis], pinned=reason))
        return Coupling(outputs=outputs, pins=pins)

    def passthrough(self, layout: Layout | None = None) -> Coupling:
        """Output 0 carries the channels of input 0 unchanged; other outputs are boundaries."""
        layout = layout if layout is not None else self.in_layouts[0]
        # Side outputs (a Dropout mask, say) carry no channels anyone may slice.
        return Coupling(outputs=[layout] + [None] * (len(self.out_shapes) - 1))


Handler = Callable[[NodeContext], Coupling]

_REGISTRY: dict[str, Handler] = {}
_CONTRIB_REGISTRY: dict[str, Handler] = {}  # onnxruntime's com.microsoft ops


def register(*op_types: str, domain: str = "") -> Callable[[Handler], Handler]:
    """Register a handler for ONNX op types of the default domain (or of `domain`
    "com.microsoft")."""
    if domain not in ("", "com.microsoft"):
        raise ValueError(f"no handler registry for domain '{domain}'")
    registry = _CONTRIB_REGISTRY if domain == "com.microsoft" else _REGISTRY

    def decorate(handler: Handler) -> Handler:
        for op_type in op_types:
            registry[op_type] = handler
        return handler

    return decorate


def handler_for(node: onnx.NodeProto) -> Handler | None:
    if node.domain == "com.microsoft":
        return _CONTRIB_REGISTRY.get(node.op_type)
    if not is_default_domain(node):
        return None
    return _REGISTRY.get(node.op_type)


def registered_op_types() -> list[str]:
    return sorted(_REGISTRY)


def single_axis(layout: Layout | None, axis: int | None = None) -> bool:
    """True when `layout` has one channel axis (equal to `axis`, if given)."""
    if layout is None or len(layout.axes) != 1:
        return False
    return axis is None or layout.axes[0] == axis
