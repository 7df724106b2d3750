"""L1-magnitude channel scores ("Pruning Filters for Efficient ConvNets", Li et al. 2017)."""

from __future__ import annotations

import numpy as np

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.layers import layer_kind, weight_layout
from onnxmorph.graph.quantized import constant_values


def l1_unit_scores(analysis: Analysis) -> np.ndarray:
    """Per unit: the L1 norm of every weight slice that produces one of its channels (a
    quantized weight counts with its dequantized value)."""
    loaded, layouts = analysis.loaded, analysis.channels.layouts
    values = constant_values(loaded)
    scores = np.zeros(analysis.channels.num_units)
    for node in loaded.model.graph.node:
        layout = weight_layout(node, values)
        out_layout = layouts.get(node.output[0])
        if layout is None or out_layout is None or len(out_layout.axes) != 1:
            continue
        per_channel = layout.output_channel_l1(values[node.input[layer_kind(node).weight]])
        if per_channel.size == out_layout.ids.size:
            np.add.at(scores, out_layout.ids, per_channel)
    return scores


def normalized_within_groups(analysis: Analysis, scores: np.ndarray) -> np.ndarray:
    """Scores divided by their group's mean, so layers of different scale compare globally."""
    normalized = scores.astype(np.float64).copy()
    for group in analysis.groups:
        mean = normalized[group.units].mean() if group.channels else 0.0
        if mean > 0:
            normalized[group.units] /= mean
    return normalized
