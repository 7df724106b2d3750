"""Activation-aware magnitude (Wanda: "A Simple and Effective Pruning Approach for LLMs", Sun
et al. 2023), applied to channels.

Wanda scores a weight by |W_ij| · ‖X_j‖₂, the input feature's norm over the calibration
samples and positions: a small weight on a loud input matters as much as a large weight on a
quiet one. A layer's output channel scores the sum of its weights' scores, and a unit
produced by several layers (a residual stream) adds them up.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxmorph.graph.layers import WeightLayout, layer_kind, weight_layout
from onnxmorph.graph.quantized import constant_values
from onnxmorph.methods.calibration import calibration_batches, summed_over_batches
from onnxmorph.methods.l1 import unit_scores_by_layer
from onnxmorph.methods.registry import MethodInput, UnitScores, register_criterion


@register_criterion("activation", summary="Wanda: |weight| × input activation norm on "
                                          "--data, per output channel", needs_data=True)
def activation_scores(request: MethodInput) -> UnitScores:
    analysis = request.analysis
    loaded = analysis.loaded
    values = constant_values(loaded)
    layers = {  # input tensor → its feature axis, for every layer with a constant weight
        node.input[layer_kind(node).activation]: layer_kind(node).activation_axis(
            len(loaded.shapes[node.input[0]]))
        for node in loaded.model.graph.node
        if weight_layout(node, values) is not None and node.input[0] in loaded.shapes
        and node.input[0] not in values
    }

    def squares(name: str, value: np.ndarray) -> np.ndarray:
        axis = layers[name]
        return (value * value).sum(axis=tuple(a for a in range(value.ndim) if a != axis))

    batches = calibration_batches(request)
    norms = {name: np.sqrt(total) for name, total in summed_over_batches(
        loaded.model, list(layers), batches, squares).items()}

    def wanda(node: onnx.NodeProto, layout: WeightLayout, weight: np.ndarray):
        name = node.input[layer_kind(node).activation]
        if name not in norms:
            return None
        return layout.output_channel_l1(input_scaled(layout, weight, norms[name]))

    return UnitScores(unit_scores_by_layer(analysis, wanda),
                      {"calibration_batches": len(batches)})


def input_scaled(layout: WeightLayout, weight: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """`weight` with every input feature's weights multiplied by that feature's norm."""
    moved = np.moveaxis(weight, (layout.out_axis, layout.in_axis), (0, 1))
    if layout.in_axis == layout.grouped_axis:  # Conv: output o reads group o // per_group
        per_group = moved.shape[0] // layout.groups
        scale = norms.reshape(layout.groups, moved.shape[1])[np.arange(moved.shape[0])
                                                             // per_group]
    else:
        scale = np.broadcast_to(norms[None, :], moved.shape[:2])
    scaled = moved * scale.reshape(scale.shape + (1,) * (moved.ndim - 2))
    return np.moveaxis(scaled, (0, 1), (layout.out_axis, layout.in_axis))
