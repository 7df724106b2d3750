"""The layer-kind registry: every op that carries per-channel parameters, described once.

A `LayerKind` says which input is the activation, on which axis its channels lie, which input
is the weight and how that weight is laid out (`WeightLayout`: output- and input-channel axes,
groups), and which inputs are per-channel constants *by role* (a [C] vector, or a broadcast
operand that numpy broadcasting aligns with the output's channel axis). Elementwise broadcast
ops declare every operand a broadcast operand, on either side. Every other op has no
per-channel inputs: a Reshape shape or Slice axes are never cut, whatever their length.

The channel handlers, the cost model, the slicer, the grower, L1 scores, gating, dead-branch
removal and the structure report all read this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxmorph.graph.onnx_utils import get_attribute, is_default_domain

if TYPE_CHECKING:  # handlers import this module
    from onnxmorph.graph.handlers.base import Layout


class Role(Enum):
    VECTOR = "vector"  # a [C] vector indexed by the output channel
    BROADCAST = "broadcast"  # numpy-broadcast against the output; per channel if aligned
    ALONG_AXIS = "along_axis"  # a [C] vector along the node's `axis` attribute (Q/DQ scales)


@dataclass(frozen=True)
class WeightLayout:
    """Where a weight's channels are. `grouped_axis` indexes channels *within* one group
    (Conv's input axis, ConvTranspose's output axis); the other channel axis is full-size."""

    shape: tuple[int, ...]
    out_axis: int
    in_axis: int
    groups: int = 1
    grouped_axis: int | None = None

    def _total(self, axis: int) -> int:
        return self.shape[axis] * (self.groups if axis == self.grouped_axis else 1)

    @property
    def out_channels(self) -> int:
        return self._total(self.out_axis)

    @property
    def in_channels(self) -> int:
        return self._total(self.in_axis)

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def depthwise(self) -> bool:
        """One input channel per group: inputs and outputs live and die together."""
        return self.groups > 1 and self.in_per_group == 1

    @property
    def kernel(self) -> int:
        """Weights per (input, output) channel pair: the spatial kernel size."""
        return math.prod(self.shape) // (self.shape[self.out_axis] * self.shape[self.in_axis])

    def selection(self, in_mask: np.ndarray | None, out_mask: np.ndarray | None
                  ) -> dict[int, np.ndarray]:
        """Keep mask per weight axis for the kept input and output channels. The same
        selection applies to a quantized weight and to its per-axis scale and zero point."""
        selected: dict[int, np.ndarray] = {}
        for axis, mask in ((self.out_axis, out_mask), (self.in_axis, in_mask)):
            if mask is None or mask.all():
                continue
            if axis == self.grouped_axis:
                if self.depthwise:
                    continue  # one channel (or the multiplier) per group: nothing to select
                mask = mask.reshape(self.groups, -1)[0]  # tied across groups by the handler
            selected[axis] = np.asarray(mask, dtype=bool)
        return selected

    def groups_after(self, in_mask: np.ndarray | None) -> int:
        """The `group` attribute once inputs are removed: depthwise groups follow the channels."""
        if self.depthwise and in_mask is not None:
            return int(in_mask.sum())
        return self.groups

    def output_channel_l1(self, weight: np.ndarray) -> np.ndarray:
        """The L1 norm of the weights that produce each output channel."""
        magnitude = np.moveaxis(np.abs(weight.astype(np.float64)),
                                (self.out_axis, self.in_axis), (0, 1))
        matrix = magnitude.reshape(magnitude.shape[0], magnitude.shape[1], -1).sum(axis=2)
        if self.out_axis != self.grouped_axis:
            return matrix.sum(axis=1)
        # Output j of group g reads the input block of group g: [n, groups, in/g] → [groups, n].
        blocks = matrix.reshape(matrix.shape[0], self.groups, -1).sum(axis=2)
        return blocks.T.reshape(-1)


@dataclass(frozen=True)
class LayerKind:
    """One op type with per-channel parameters. `weight` is None for ops without a weight
    (normalisations, PRelu); `positions` says whether MACs are counted per output or per input
    position (a transposed conv multiplies per input pixel)."""

    op_type: str
    activation: int
    channel_axis: str  # "first" (axis 1, NCHW / [N, features]) or "last" (channels-last Linear)
    weight: int | None
    bias: int | None
    per_channel: dict[int, Role]
    positions: str | None  # "output" | "input" | None (no MACs of its own)

    def activation_axis(self, rank: int) -> int:
        return rank - 1 if self.channel_axis == "last" else min(1, rank - 1)

    def weight_layout(self, node: onnx.NodeProto, shape: tuple[int, ...]) -> WeightLayout | None:
        """The weight's layout, or None when this node's weight is not one onnxmorph can slice."""
        shape = tuple(int(d) for d in shape)
        groups = int(get_attribute(node, "group", 1))
        if self.op_type == "Conv" and len(shape) >= 3:  # [Cout, Cin/g, k...]
            return WeightLayout(shape, 0, 1, groups, grouped_axis=1)
        if self.op_type == "ConvTranspose" and len(shape) >= 3:  # [Cin, Cout/g, k...]
            return WeightLayout(shape, 1, 0, groups, grouped_axis=1)
        if self.op_type == "Gemm" and len(shape) == 2 and not int(get_attribute(node, "transA", 0)):
            trans_b = int(get_attribute(node, "transB", 0))  # [K, N], or [N, K] with transB
            return WeightLayout(shape, 0 if trans_b else 1, 1 if trans_b else 0)
        if self.op_type == "MatMul" and len(shape) == 2:  # [K, N] on the last axis
            return WeightLayout(shape, 1, 0)
        return None


def _kind(op_type, channel_axis="first", weight=None, bias=None, per_channel=None,
          positions=None) -> LayerKind:
    roles = dict(per_channel or {})
    if bias is not None:
        roles.setdefault(bias, Role.VECTOR)
    return LayerKind(op_type, 0, channel_axis, weight, bias, roles, positions)


LAYER_KINDS: dict[str, LayerKind] = {k.op_type: k for k in (
    _kind("Conv", weight=1, bias=2, positions="output"),
    _kind("ConvTranspose", weight=1, bias=2, positions="input"),
    # Gemm's C broadcasts against [M, N]: [N], [1, N] and [M, N] biases all follow N.
    _kind("Gemm", weight=1, bias=2, per_channel={2: Role.BROADCAST}, positions="output"),
    _kind("MatMul", channel_axis="last", weight=1, positions="output"),
    _kind("BatchNormalization", per_channel={i: Role.VECTOR for i in (1, 2, 3, 4)}),
    _kind("InstanceNormalization", per_channel={1: Role.VECTOR, 2: Role.VECTOR}),
    # Scale and B have the normalised axes' shape; over channels-last they follow C.
    _kind("LayerNormalization", channel_axis="last",
          per_channel={1: Role.BROADCAST, 2: Role.BROADCAST}),
    _kind("PRelu", per_channel={1: Role.BROADCAST}),
)}

# Ops whose operands broadcast against each other: a constant on *either* side is per channel
# when broadcasting aligns one of its axes with the output's channel axis at full size.
BROADCAST_OPS = (
    "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Pow", "Where", "PRelu", "Clip",
    "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod",
    "BitShift",
)
# Concat along another axis than the channels (a class token joined on the sequence axis):
# its constant parts carry the channel axis like a same-rank broadcast operand.
_SAME_RANK_OPS = ("Concat",)
# Activation Q/DQ: a per-channel scale and zero point lie along the `axis` attribute.
QUANTIZE_OPS = ("QuantizeLinear", "DequantizeLinear")


def layer_kind(node: onnx.NodeProto) -> LayerKind | None:
    return LAYER_KINDS.get(node.op_type) if is_default_domain(node) else None


def weight_layer_ops() -> tuple[str, ...]:
    """Op types that make new channels from a weight (the "layers" of a report or a gate)."""
    return tuple(k.op_type for k in LAYER_KINDS.values() if k.weight is not None)


def weight_layout(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> WeightLayout | None:
    """The layout of `node`'s constant weight (None: not a weight layer, or no constant)."""
    kind = layer_kind(node)
    if kind is None or kind.weight is None or len(node.input) <= kind.weight:
        return None
    weight = values.get(node.input[kind.weight])
    return None if weight is None else kind.weight_layout(node, weight.shape)


def per_channel_roles(node: onnx.NodeProto) -> dict[int, Role]:
    """Input index → role, for the inputs of `node` that may be per-channel constants."""
    if not is_default_domain(node):
        return {}
    kind = LAYER_KINDS.get(node.op_type)
    if kind is not None:
        return kind.per_channel
    if node.op_type in BROADCAST_OPS or node.op_type in _SAME_RANK_OPS:
        return {i: Role.BROADCAST for i in range(len(node.input))}
    if node.op_type in ("Expand", "Gather"):
        # A class token expanded to the batch, an embedding table's columns (--prune-embedding)
        return {0: Role.BROADCAST}
    if node.op_type in QUANTIZE_OPS:
        return {1: Role.ALONG_AXIS, 2: Role.ALONG_AXIS}
    return {}


def constant_channel_axis(
    node: onnx.NodeProto,
    index: int,
    value: np.ndarray,
    out_layout: Layout | None,
    out_shape: tuple[int, ...] | None,
) -> int | None:
    """Axis of constant input `index` that follows the channels of the node's output 0, by the
    input's declared role (None: the input is not a per-channel constant of this node)."""
    role = per_channel_roles(node).get(index)
    if role is None or out_layout is None or out_shape is None or len(out_layout.axes) != 1:
        return None
    channels = out_shape[out_layout.axis]
    if node.op_type == "Gather" and (value.ndim != 2 or out_layout.axis != len(out_shape) - 1):
        return None  # only an embedding table [V, E] looked up into [..., E]
    if role is Role.VECTOR:
        return 0 if value.ndim == 1 and value.shape[0] == channels else None
    if role is Role.ALONG_AXIS:
        axis = int(get_attribute(node, "axis", 1)) % len(out_shape)
        per_axis = value.ndim == 1 and value.shape[0] == channels and channels > 1
        return 0 if per_axis and axis == out_layout.axis else None
    # Numpy broadcasting aligns trailing axes.
    aligned = out_layout.axis - (len(out_shape) - value.ndim)
    if aligned >= 0 and value.shape[aligned] == channels and channels > 1:
        return aligned
    return None
