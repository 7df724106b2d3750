"""L1-magnitude channel scores ("Pruning Filters for Efficient ConvNets", Li et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.layers import WeightLayout, layer_kind, weight_layout
from onnxmorph.graph.quantized import constant_values


def l1_unit_scores(analysis: Analysis) -> np.ndarray:
    """Per unit: the L1 norm of every weight slice that produces one of its channels (a
    quantized weight counts with its dequantized value)."""
    return unit_scores_by_layer(analysis,
                                lambda node, layout, weight: layout.output_channel_l1(weight))


def unit_scores_by_layer(
    analysis: Analysis,
    per_channel: Callable[[onnx.NodeProto, WeightLayout, np.ndarray], np.ndarray | None],
) -> np.ndarray:
    """Per unit: the sum, over the layers producing its channels, of `per_channel(node,
    layout, weight)` (one value per output channel of the layer, or None to skip it)."""
    loaded, layouts = analysis.loaded, analysis.channels.layouts
    values = constant_values(loaded)
    scores = np.zeros(analysis.channels.num_units)
    for node in loaded.model.graph.node:
        layout = weight_layout(node, values)
        out_layout = layouts.get(node.output[0])
        if layout is None or out_layout is None or len(out_layout.axes) != 1:
            continue
        per = per_channel(node, layout, values[node.input[layer_kind(node).weight]])
        if per is not None and per.size == out_layout.ids.size:
            np.add.at(scores, out_layout.ids, per)
    return scores


def output_channel_rows(layout: WeightLayout, weight: np.ndarray) -> np.ndarray:
    """The weight as a matrix with one row per output channel: the weights producing it."""
    moved = np.moveaxis(weight, (layout.out_axis, layout.in_axis), (0, 1))
    if layout.out_axis != layout.grouped_axis:
        return moved.reshape(moved.shape[0], -1)
    # Output j of group g (ConvTranspose) reads the input block of group g.
    blocks = moved.reshape(moved.shape[0], layout.groups, moved.shape[1] // layout.groups, -1)
    return blocks.transpose(1, 0, 2, 3).reshape(layout.groups * moved.shape[0], -1)


def normalized_within_groups(analysis: Analysis, scores: np.ndarray) -> np.ndarray:
    """Scores divided by their group's mean, so layers of different scale compare globally."""
    normalized = scores.astype(np.float64).copy()
    for group in analysis.groups:
        mean = normalized[group.units].mean() if group.channels else 0.0
        if mean > 0:
            normalized[group.units] /= mean
    return normalized
