"""L1-magnitude channel scores ("Pruning Filters for Efficient ConvNets", Li et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.onnx_utils import get_attribute


def l1_unit_scores(analysis: Analysis) -> np.ndarray:
    """Per unit: the L1 norm of every weight slice that produces one of its channels."""
    return unit_scores_by_layer(analysis, _output_channel_l1)


def unit_scores_by_layer(
    analysis: Analysis,
    per_channel: Callable[[onnx.NodeProto, np.ndarray], np.ndarray | None],
) -> np.ndarray:
    """Per unit: the sum, over the layers producing its channels, of `per_channel(node,
    weight)` (one value per output channel of the layer, or None to skip the layer)."""
    loaded, layouts = analysis.loaded, analysis.channels.layouts
    scores = np.zeros(analysis.channels.num_units)
    for node in loaded.model.graph.node:
        weight = loaded.initializers.get(node.input[1]) if len(node.input) > 1 else None
        out_layout = layouts.get(node.output[0])
        if weight is None or out_layout is None or len(out_layout.axes) != 1:
            continue
        values = per_channel(node, weight)
        if values is not None and values.size == out_layout.ids.size:
            np.add.at(scores, out_layout.ids, values)
    return scores


def output_channel_rows(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray | None:
    """The weight as a matrix with one row per output channel of the layer (None: not a
    layer whose weight layout is known)."""
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1)
    if node.op_type == "ConvTranspose":  # [Cin, Cout/group, k...]: group g owns a row block
        groups = int(get_attribute(node, "group", 1))
        blocks = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)
        return blocks.transpose(0, 2, 1, 3).reshape(groups * weight.shape[1], -1)
    if node.op_type == "Gemm":
        trans_b = int(get_attribute(node, "transB", 0))
        return weight if trans_b else weight.T
    if node.op_type == "MatMul" and weight.ndim == 2:
        return weight.T
    return None


def _output_channel_l1(node, weight: np.ndarray) -> np.ndarray | None:
    rows = output_channel_rows(node, weight)
    return None if rows is None else np.abs(rows.astype(np.float64)).sum(axis=1)


def normalized_within_groups(analysis: Analysis, scores: np.ndarray) -> np.ndarray:
    """Scores divided by their group's mean, so layers of different scale compare globally."""
    normalized = scores.astype(np.float64).copy()
    for group in analysis.groups:
        mean = normalized[group.units].mean() if group.channels else 0.0
        if mean > 0:
            normalized[group.units] /= mean
    return normalized
