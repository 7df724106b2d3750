"""APoZ: the Average Percentage of Zeros after a ReLU ("Network Trimming", Hu et al. 2016).

A channel that a ReLU zeroes on most calibration inputs carries little; its score is the
fraction of non-zero values (1 − APoZ) over every ReLU (or ReLU6: Clip with min 0) output
holding it. APoZ is undefined for channels that no ReLU follows (MobileNetV2's linear
bottlenecks, residual streams, HardSwish): such groups are ranked by L1 weight magnitude
instead, and listed in the report under "apoz_l1_fallback_groups".
"""

from __future__ import annotations

import numpy as np

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.onnx_utils import get_attribute
from onnxmorph.methods.calibration import (
    calibration_batches,
    per_channel_rows,
    summed_over_batches,
    touches_prunable,
)
from onnxmorph.methods.registry import MethodInput, UnitScores, register_criterion


@register_criterion("apoz", summary="share of zeros after each ReLU on --data (L1 where no "
                                    "ReLU follows)", needs_data=True)
def apoz_scores(request: MethodInput) -> UnitScores:
    from onnxmorph.methods.l1 import l1_unit_scores

    analysis = request.analysis
    layouts = analysis.channels.layouts
    tensors = [t for t in relu_outputs(analysis) if touches_prunable(analysis, layouts[t])]

    def zeros_and_count(name: str, value: np.ndarray) -> np.ndarray:
        rows = per_channel_rows(value, layouts[name])
        return np.stack([(rows == 0).sum(axis=1), np.full(rows.shape[0], rows.shape[1])])

    batches = calibration_batches(request) if tensors else []
    totals = summed_over_batches(analysis.loaded.model, tensors, batches, zeros_and_count)
    zeros = np.zeros(analysis.channels.num_units)
    counted = np.zeros(analysis.channels.num_units)
    for name, (zero_count, count) in totals.items():
        np.add.at(zeros, layouts[name].ids.ravel(), zero_count)
        np.add.at(counted, layouts[name].ids.ravel(), count)
    scores = 1.0 - zeros / np.maximum(counted, 1)
    l1 = l1_unit_scores(analysis)  # every group is normalised to mean 1 afterwards
    fallback = []
    for group in analysis.channels.prunable_groups():
        if (counted[group.units] == 0).any():
            scores[group.units] = l1[group.units]
            fallback.append(group.id)
    return UnitScores(scores, {"calibration_batches": len(batches),
                               "apoz_l1_fallback_groups": fallback})


def relu_outputs(analysis: Analysis) -> list[str]:
    """Tensors produced by Relu or by a Clip whose lower bound is 0 (ReLU6)."""
    layouts, constants = analysis.channels.layouts, analysis.loaded.initializers
    found = []
    for node in analysis.loaded.model.graph.node:
        if node.output[0] not in layouts:
            continue
        if node.op_type == "Clip":
            low = (constants.get(node.input[1]) if len(node.input) > 1 and node.input[1]
                   else get_attribute(node, "min", None))
            if low is None or float(np.asarray(low)) != 0.0:
                continue
        elif node.op_type != "Relu":
            continue
        found.append(node.output[0])
    return found
