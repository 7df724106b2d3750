"""`--method gamma`: morph-net's GammaFlopsRegularizer — L1 on each channel's BatchNorm γ,
weighted by the FLOPs the channel costs; no gates, the model itself is what trains.

Picks every BatchNormalization whose scale γ is a constant vector over the channels of a
prunable group; a channel is alive while |γ| > threshold. Models without such a BN are refused.
"""

from __future__ import annotations

import numpy as np

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.methods.registry import MethodInput, Selection, register_method
from onnxmorph.methods.select import SelectionRules, prunable_groups
from onnxmorph.training.regularizers import RegularizerSource

# morph-net's gamma_threshold 1e-2 for γ near 1, relative to the group's mean |γ| in the seed.
GAMMA_RELATIVE_THRESHOLD = 0.01


def gamma_sources(analysis: Analysis, rules: SelectionRules) -> list[RegularizerSource]:
    """One source per BatchNormalization whose γ scales channels of a prunable group."""
    chosen = _prunable_units(analysis, rules)
    loaded, layouts = analysis.loaded, analysis.channels.layouts
    sources = []
    for node in loaded.model.graph.node:
        if node.op_type != "BatchNormalization" or len(node.input) < 2:
            continue
        gamma = loaded.initializers.get(node.input[1])
        layout = layouts.get(node.output[0])
        if gamma is None or layout is None or len(layout.axes) != 1 \
                or gamma.size != layout.ids.size or not chosen[layout.ids].any():
            continue
        sources.append(RegularizerSource(node.input[1], layout.ids.copy(), "abs"))
    if not sources:
        raise PruningError("--method gamma needs a BatchNormalization after a prunable layer "
                           "and this model has none; use --method group-lasso (weights' "
                           "group norms) or --method gates")
    return sources


def _prunable_units(analysis: Analysis, rules: SelectionRules) -> np.ndarray:
    chosen = np.zeros(analysis.channels.num_units, dtype=bool)
    for group in prunable_groups(analysis, rules):
        chosen[group.units] = True
    return chosen


@register_method("gamma", summary="morph-net's GammaFlops: FLOPs-weighted L1 on BatchNorm γ "
                                  "learns the structure on --data (BN networks), then "
                                  "fine-tune", needs_data=True, learns=True)
def gamma_selection(request: MethodInput) -> Selection:
    from onnxmorph.methods.regularized import Regularizer, learn_regularized

    regularizer = Regularizer("gamma", gamma_sources(request.analysis, request.rules),
                              GAMMA_RELATIVE_THRESHOLD)
    alive, model, extra = learn_regularized(request.analysis, regularizer, data=request.data,
                                            target=request.target, budget=request.budget,
                                            rules=request.rules, **request.training)
    return Selection(alive, extra, model)
