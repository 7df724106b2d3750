"""Absorb per-input-channel factors (GDP gate values) into the weights of the layers that read them.

A layer that mixes its input channels linearly (a Conv that is not depthwise, ConvTranspose,
Gemm, MatMul with a constant weight) computes W·(g ⊙ x) = (W·diag(g))·x, so a gate in front of
it can be folded into its weight exactly, zero gates included. `absorb_sites` says which
layers can take a gate this way; a channel group that reaches any other weight layer (a
weight computed at run time, a quantized weight, channels spread over several axes) gets no
gate, so that the gated model, the absorbed model and the sliced one compute the same thing.
Depthwise convolutions are no site and block nothing: they mix no channels, and the gate sits
at the next layer that does (GDP places its gates "before regular convolutions only").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.layers import WeightLayout, layer_kind


@dataclass(frozen=True)
class AbsorbSite:
    """A weight layer whose input `tensor` may be gated: `ids[i]` is the unit of input channel
    i (along the weight's input axis)."""

    node: str
    tensor: str
    weight: str
    layout: WeightLayout
    ids: np.ndarray

    @property
    def key(self) -> tuple[str, str]:
        return self.tensor, self.weight


@dataclass(frozen=True)
class AbsorbPlan:
    sites: list[AbsorbSite]
    blocked_units: np.ndarray  # bool per unit: read by a weight layer no gate can fold into


def absorb_sites(analysis: Analysis) -> AbsorbPlan:
    """Every weight layer a per-input-channel gate can be folded into, and the units that
    reach a weight layer where it cannot."""
    loaded, layouts = analysis.loaded, analysis.channels.layouts
    blocked = np.zeros(analysis.channels.num_units, dtype=bool)
    sites: list[AbsorbSite] = []
    for node in loaded.model.graph.node:
        kind = layer_kind(node)
        if kind is None or kind.weight is None or not node.input or node.input[0] not in layouts:
            continue
        layout = layouts[node.input[0]]
        weight_name = node.input[kind.weight] if len(node.input) > kind.weight else ""
        weight = loaded.initializers.get(weight_name)
        weight_layout = (kind.weight_layout(node, weight.shape) if weight is not None
                         else None)
        if weight_layout is not None and weight_layout.depthwise:
            continue
        rank = len(loaded.shapes.get(node.input[0], ()))
        if (weight_layout is None or weight.dtype != np.float32 or rank == 0
                or layout.axes != (kind.activation_axis(rank),)
                or layout.size != weight_layout.in_channels):
            blocked[layout.ids.ravel()] = True
            continue
        sites.append(AbsorbSite(node.name or node.output[0], node.input[0], weight_name,
                                weight_layout, layout.ids.ravel().copy()))
    # A weight two layers share can take one factor only: both must read the same channels.
    by_weight: dict[str, list[AbsorbSite]] = {}
    for site in sites:
        by_weight.setdefault(site.weight, []).append(site)
    for shared in by_weight.values():
        if any(not np.array_equal(s.ids, shared[0].ids) for s in shared[1:]):
            for site in shared:
                blocked[site.ids] = True
    return AbsorbPlan(sites, blocked)


def input_factor(layout: WeightLayout, per_input: np.ndarray) -> np.ndarray:
    """`per_input` ([in_channels]) shaped to multiply the weight along its input axis."""
    shape = [1] * len(layout.shape)
    if layout.groups > 1 and layout.in_axis == layout.grouped_axis:
        # Conv groups: output o reads input block o // (outputs per group) of size in/groups.
        blocks = per_input.reshape(layout.groups, -1)
        factor = np.repeat(blocks, layout.shape[layout.out_axis] // layout.groups, axis=0)
        shape[layout.out_axis] = factor.shape[0]
        shape[layout.in_axis] = factor.shape[1]
        if layout.out_axis > layout.in_axis:
            factor = factor.T
        return factor.reshape(shape)
    shape[layout.in_axis] = per_input.size
    return per_input.reshape(shape)


def absorb_input_factors(model: onnx.ModelProto, sites: list[AbsorbSite],
                         unit_factors: np.ndarray) -> onnx.ModelProto:
    """A copy of `model` whose site weights are multiplied by each input channel's factor
    (`unit_factors` per unit; sites whose factors are all 1 are left as they are)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {init.name: init for init in out.graph.initializer}
    done: set[str] = set()
    for site in sites:
        per_input = np.asarray(unit_factors, dtype=np.float64)[site.ids]
        if site.weight in done or np.all(per_input == 1.0):
            continue
        init = inits.get(site.weight)
        if init is None:
            raise PruningError(f"weight '{site.weight}' of layer '{site.node}' is not an "
                               "initializer of the model; gates cannot be absorbed into it")
        value = numpy_helper.to_array(init).astype(np.float64)
        scaled = (value * input_factor(site.layout, per_input)).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(scaled, site.weight))
        done.add(site.weight)
    return out
