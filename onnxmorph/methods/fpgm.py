"""FPGM: filters near their layer's geometric median are redundant ("Filter Pruning via
Geometric Median", He et al. 2019).

The geometric median of a layer's filters minimises the sum of distances to all of them; the
filters whose own sum of distances to the others is smallest lie nearest to it, and the rest
of the layer can stand in for them. A filter's score is that sum (higher = keep); a unit
produced by several layers (a residual stream) adds its filters' sums. No data needed.
"""

from __future__ import annotations

import numpy as np

from onnxmorph.methods.l1 import output_channel_rows, unit_scores_by_layer
from onnxmorph.methods.registry import MethodInput, UnitScores, register_criterion


@register_criterion("fpgm", summary="distance of each filter to its layer's geometric "
                                    "median (redundant filters go first); no data")
def fpgm_scores(request: MethodInput) -> UnitScores:
    return UnitScores(unit_scores_by_layer(request.analysis, _distance_sums))


def distance_sums(rows: np.ndarray) -> np.ndarray:
    """Σ_j ‖row_i − row_j‖₂ for every row i."""
    rows = rows.astype(np.float64)
    squared = (rows * rows).sum(axis=1)
    gram = rows @ rows.T
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0.0))
    return distances.sum(axis=1)


def _distance_sums(node, layout, weight: np.ndarray) -> np.ndarray:
    return distance_sums(output_channel_rows(layout, weight))
