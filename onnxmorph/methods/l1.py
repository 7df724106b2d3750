"""L1-magnitude channel scores ("Pruning Filters for Efficient ConvNets", Li et al. 2017)."""

from __future__ import annotations

import numpy as np

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.onnx_utils import get_attribute


def l1_unit_scores(analysis: Analysis) -> np.ndarray:
    """Per unit: the L1 norm of every weight slice that produces one of its channels."""
    loaded, layouts = analysis.loaded, analysis.channels.layouts
    scores = np.zeros(analysis.channels.num_units)
    for node in loaded.model.graph.node:
        weight = loaded.initializers.get(node.input[1]) if len(node.input) > 1 else None
        out_layout = layouts.get(node.output[0])
        if weight is None or out_layout is None or len(out_layout.axes) != 1:
            continue
        per_channel = _output_channel_l1(node, weight)
        if per_channel is not None and per_channel.size == out_layout.ids.size:
            np.add.at(scores, out_layout.ids, per_channel)
    return scores


def _output_channel_l1(node, weight: np.ndarray) -> np.ndarray | None:
    magnitude = np.abs(weight.astype(np.float64))
    if node.op_type == "Conv":
        return magnitude.reshape(weight.shape[0], -1).sum(axis=1)
    if node.op_type == "ConvTranspose":  # [Cin, Cout/group, k...]: group g owns a row block
        groups = int(get_attribute(node, "group", 1))
        blocks = magnitude.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)
        return blocks.sum(axis=(1, 3)).reshape(-1)
    if node.op_type == "Gemm":
        trans_b = int(get_attribute(node, "transB", 0))
        return magnitude.sum(axis=1) if trans_b else magnitude.sum(axis=0)
    if node.op_type == "MatMul" and weight.ndim == 2:
        return magnitude.sum(axis=0)
    return None


def normalized_within_groups(analysis: Analysis, scores: np.ndarray) -> np.ndarray:
    """Scores divided by their group's mean, so layers of different scale compare globally."""
    normalized = scores.astype(np.float64).copy()
    for group in analysis.groups:
        mean = normalized[group.units].mean() if group.channels else 0.0
        if mean > 0:
            normalized[group.units] /= mean
    return normalized
