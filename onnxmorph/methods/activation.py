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

from onnxmorph.graph.onnx_utils import get_attribute
from onnxmorph.methods.calibration import calibration_batches, summed_over_batches
from onnxmorph.methods.l1 import _output_channel_l1, unit_scores_by_layer
from onnxmorph.methods.registry import MethodInput, UnitScores, register_criterion


@register_criterion("activation", summary="Wanda: |weight| × input activation norm on "
                                          "--data, per output channel", needs_data=True)
def activation_scores(request: MethodInput) -> UnitScores:
    analysis = request.analysis
    loaded = analysis.loaded
    layers = {  # input tensor → its feature axis, for every layer with a weight
        node.input[0]: feature_axis(node) for node in loaded.model.graph.node
        if feature_axis(node) is not None and len(node.input) > 1
        and node.input[1] in loaded.initializers and node.input[0] not in loaded.initializers
    }

    def squares(name: str, value: np.ndarray) -> np.ndarray:
        axis = layers[name] % value.ndim
        return (value * value).sum(axis=tuple(a for a in range(value.ndim) if a != axis))

    batches = calibration_batches(request)
    norms = {name: np.sqrt(total) for name, total in summed_over_batches(
        analysis.loaded.model, list(layers), batches, squares).items()}

    def wanda(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray | None:
        if node.input[0] not in norms:
            return None
        scaled = input_scaled(node, weight, norms[node.input[0]])
        return None if scaled is None else _output_channel_l1(node, scaled)

    return UnitScores(unit_scores_by_layer(analysis, wanda),
                      {"calibration_batches": len(batches)})


def feature_axis(node: onnx.NodeProto) -> int | None:
    """The axis of the layer's input that its weight's input side runs along."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return 1
    if node.op_type == "Gemm":
        return 0 if int(get_attribute(node, "transA", 0)) else 1
    if node.op_type == "MatMul":
        return -1
    return None


def input_scaled(node: onnx.NodeProto, weight: np.ndarray,
                 norms: np.ndarray) -> np.ndarray | None:
    """`weight` with every input feature's weights multiplied by that feature's norm."""
    if node.op_type == "Conv":  # [Cout, Cin/group, k...]: output o reads group o // per_group
        groups = int(get_attribute(node, "group", 1))
        per_group = weight.shape[0] // groups
        by_group = norms.reshape(groups, weight.shape[1])[np.arange(weight.shape[0]) // per_group]
        return weight * by_group.reshape(by_group.shape + (1,) * (weight.ndim - 2))
    if node.op_type == "ConvTranspose":  # [Cin, Cout/group, k...]
        return weight * norms.reshape((-1,) + (1,) * (weight.ndim - 1))
    if node.op_type == "Gemm" and int(get_attribute(node, "transB", 0)):
        return weight * norms[None, :]
    if node.op_type in ("Gemm", "MatMul") and weight.ndim == 2:
        return weight * norms[:, None]
    return None
