"""Registrations of the first methods: L1 magnitude, uniform width and learned gates.

Their code lives in l1.py, uniform.py and gated.py; this module only says how each one
answers the shared interface, importing the heavy parts inside the functions.
"""

from __future__ import annotations

from onnxmorph.methods.registry import (
    MethodInput,
    Selection,
    UnitScores,
    register_criterion,
    register_method,
)


@register_criterion("l1", summary="weight magnitude of each channel's filters; no data")
def l1_scores(request: MethodInput) -> UnitScores:
    from onnxmorph.methods.l1 import l1_unit_scores

    return UnitScores(l1_unit_scores(request.analysis))


@register_method("uniform", summary="the same width multiplier everywhere (highest-L1 "
                                    "channels kept); no data")
def uniform_selection(request: MethodInput) -> Selection:
    from onnxmorph.methods.uniform import width_for_budget

    width, alive = width_for_budget(request.analysis, request.target, request.budget,
                                    request.rules)
    return Selection(alive, {"width": width})


@register_method("gates", summary="learn the structure with FiGS gates on --data, then "
                                  "fine-tune", needs_data=True, learns=True)
def gated_selection(request: MethodInput) -> Selection:
    from onnxmorph.methods.gated import learn_structure

    alive, model, extra = learn_structure(request.analysis, data=request.data,
                                          target=request.target, budget=request.budget,
                                          rules=request.rules, **request.training)
    return Selection(alive, extra, model)
