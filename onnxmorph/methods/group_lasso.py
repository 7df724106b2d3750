"""`--method group-lasso`: morph-net's GroupLassoFlopsRegularizer — the group-lasso norm of
the weights that produce each output channel (L2 / sqrt(dim), l1_fraction 0), weighted by
the FLOPs the channel costs. For networks without BatchNorm; nothing is added to the model.
"""

from __future__ import annotations

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.layers import WeightLayout, weight_layout
from onnxmorph.methods.gamma import _prunable_units
from onnxmorph.methods.registry import MethodInput, Selection, register_method
from onnxmorph.methods.select import SelectionRules
from onnxmorph.training.regularizers import RegularizerSource

# The RMS of a live conv row is a few 1e-2; 5 % of the mean sits well below it, and the
# learning-rate noise floor (methods/regularized.py) keeps it above what Adam leaves of a dead row.
GROUP_LASSO_RELATIVE_THRESHOLD = 0.05


def group_lasso_sources(analysis: Analysis, rules: SelectionRules) -> list[RegularizerSource]:
    """One source per weight layer (Conv, Gemm, MatMul, ungrouped ConvTranspose) whose
    constant weight produces channels of a prunable group."""
    chosen = _prunable_units(analysis, rules)
    loaded, layouts = analysis.loaded, analysis.channels.layouts
    sources = []
    for node in loaded.model.graph.node:
        layout = weight_layout(node, loaded.initializers)
        out_layout = layouts.get(node.output[0])
        if layout is None or out_layout is None or len(out_layout.axes) != 1 \
                or layout.out_channels != out_layout.ids.size or not chosen[out_layout.ids].any():
            continue
        perm = _output_first(layout)
        if perm is False:
            continue
        sources.append(RegularizerSource(node.input[1], out_layout.ids.copy(), "group_norm",
                                         perm))
    if not sources:
        raise PruningError("--method group-lasso needs a Conv, Gemm or MatMul with a constant "
                           "weight producing a prunable group, and this model has none; use "
                           "--method gates")
    return sources


def _output_first(layout: WeightLayout) -> tuple[int, ...] | None | bool:
    """The transpose that puts the output-channel axis first (None: it is first already;
    False: the rows of one output channel are not one block, a grouped ConvTranspose)."""
    if layout.out_axis == 0:
        return None
    if layout.out_axis == layout.grouped_axis and layout.groups > 1:
        return False
    rest = [a for a in range(len(layout.shape)) if a != layout.out_axis]
    return (layout.out_axis, *rest)


@register_method("group-lasso", summary="morph-net's GroupLassoFlops: FLOPs-weighted group "
                                        "norms of each channel's weights learn the structure "
                                        "on --data (networks without BN), then fine-tune",
                 needs_data=True, learns=True)
def group_lasso_selection(request: MethodInput) -> Selection:
    from onnxmorph.methods.regularized import Regularizer, learn_regularized

    regularizer = Regularizer("group-lasso",
                              group_lasso_sources(request.analysis, request.rules),
                              GROUP_LASSO_RELATIVE_THRESHOLD)
    alive, model, extra = learn_regularized(request.analysis, regularizer, data=request.data,
                                            target=request.target, budget=request.budget,
                                            rules=request.rules, **request.training)
    return Selection(alive, extra, model)
