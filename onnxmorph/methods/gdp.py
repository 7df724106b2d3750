"""`--method gdp`: Gates with Differentiable Polarization (arXiv 2109.02220).

Gates g(a) = a² / (a² + ε) in front of every layer that mixes channels learn, with the
weights, which channels live (training/polarization.py); the cost (FLOPs, params or latency)
of the structure ‖a‖₀ is pushed down by a proximal L1 step whose strength the budget
controller sets. At the end the gate values are absorbed into the layers that read them
(rewrite/absorb_gates.py), channels whose gate is 0 are sliced away, and the slice is
verified against the absorbed model: the sliced model computes the gated one, with no
retraining gap. The report gives both accuracies ("accuracy_gated", "accuracy_after_slice")
and the output error between them.
"""

from __future__ import annotations

import os

import numpy as np
import onnx

from onnxmorph.graph.analysis import Analysis
from onnxmorph.methods.registry import MethodInput, Selection, register_method
from onnxmorph.methods.select import SelectionRules


@register_method("gdp", summary="learn the structure with GDP polarization gates on --data "
                                "(gates end at 0 or well above; the slice equals the gated "
                                "model), then fine-tune", needs_data=True,
                 learns=True)
def gdp_selection(request: MethodInput) -> Selection:
    alive, model, extra = learn_polarized(request.analysis, data=request.data,
                                          target=request.target, budget=request.budget,
                                          rules=request.rules, **request.training)
    return Selection(alive, extra, model)


def learn_polarized(
    analysis: Analysis, *, data: str | os.PathLike, target: str, budget: float,
    rules: SelectionRules, polarization=None, **training,
) -> tuple[np.ndarray, onnx.ModelProto, dict]:
    """Learn which channels live with GDP gates; return (alive units, model, report extras).
    `polarization`: PolarizationSettings (default: the paper-like ones in that class)."""
    import dataclasses

    from onnxmorph.errors import PruningError
    from onnxmorph.graph.analysis import analyze
    from onnxmorph.graph.load import LoadedModel
    from onnxmorph.methods.gated import _final_structure, finetune_training_copy
    from onnxmorph.methods.select import prunable_groups, select_to_budget
    from onnxmorph.methods.training_data import training_data
    from onnxmorph.rewrite import slice_channels, verify_models
    from onnxmorph.rewrite.absorb_gates import absorb_input_factors
    from onnxmorph.rewrite.postconditions import require_passed
    from onnxmorph.training.evaluate import evaluate
    from onnxmorph.training.polarization import (
        PolarizationSettings,
        insert_polarization_gates,
        polarization_plan,
        train_polarized,
    )
    from onnxmorph.training.prepare import training_copy
    from onnxmorph.training.session import model_with_values
    from onnxmorph.training.trainer import TrainOptions, work_folder

    options = TrainOptions(**training)
    settings = polarization or PolarizationSettings()
    expr = analysis.cost.expr(target)  # flops, params, or the latency model's prices
    seed_model = analysis.loaded.model
    groups = prunable_groups(analysis, rules)
    select_to_budget(analysis, np.zeros(analysis.channels.num_units), target, budget, rules)
    plan, gated_groups = polarization_plan(analysis, groups)
    if not gated_groups:
        raise PruningError("--method gdp found no prunable group read only by layers a gate "
                           "can be folded into (Conv, ConvTranspose, Gemm, MatMul with a float "
                           "weight of their own: not computed at run time, nor one weight "
                           "shared by layers reading different channels); use --method gates")
    prepared = training_data(data, seed_model, options)
    source, loss, shapes, teacher = (prepared.source, prepared.loss, prepared.shapes,
                                     prepared.teacher)
    extra: dict = {"loss": loss, "steps": options.steps, "finetune_steps": options.finetune_steps,
                   "accuracy_before": evaluate(seed_model, source).accuracy}
    train_loaded = dataclasses.replace(analysis.loaded,
                                       model=training_copy(seed_model, shapes, rewrite=False))
    polarized = insert_polarization_gates(train_loaded.model,
                                          dataclasses.replace(analysis, loaded=train_loaded),
                                          plan, gated_groups, settings)
    with work_folder(options.workdir) as folder:
        values, log = train_polarized(polarized, expr, source, options, loss, teacher, budget,
                                      f"{folder}/gdp", settings, rules.min_channels,
                                      kept=lambda open_units: _kept_by_rules(open_units,
                                                                             groups, rules))
    a = polarized.parameters_of(values)
    gates = polarized.unit_gates(a)
    # Open gates rank above closed ones (0) and ungated units (1) above all; the shared
    # rules (--min-channels, --round-to) and the budget then decide, as for the FiGS gates.
    scores = np.where(gates > 0, 0.5 + 0.5 * gates, 0.0)
    scores[np.setdiff1d(np.arange(gates.size), polarized.gated_units)] = 1.0
    alive = _final_structure(analysis, scores, groups, target, budget, rules,
                             dataclasses.replace(options, alive_threshold=0.25))
    trained = model_with_values(seed_model, values)
    # A gate the budget or the rules close after training reads 0 in the absorbed model too,
    # so the slice still computes it exactly; such gates are counted in the report.
    absorbed_gates = np.where(alive, gates, 0.0)
    absorbed = analyze(LoadedModel(
        model=absorb_input_factors(trained, plan.sites, absorbed_gates),
        shapes=analysis.loaded.shapes, input_shapes=analysis.loaded.input_shapes,
        source=analysis.loaded.source),
        prune_embedding=analysis.channels.prune_embedding)
    sliced_result = slice_channels(absorbed, alive, scores)
    alive, sliced = sliced_result.alive, sliced_result.model
    extra["verify_gates_absorbed"] = verify_models(absorbed, sliced).to_dict()
    require_passed(extra["verify_gates_absorbed"], "verify (gdp gates absorbed, before "
                                                   "fine-tuning)")
    gated_model = insert_polarization_gates(trained, analysis, plan, gated_groups, settings,
                                            values=polarized.split(a)).model
    gated_eval = evaluate(gated_model, source)
    slice_eval = evaluate(sliced, source, reference=gated_model)
    units = polarized.gated_units
    open_gates = gates[units][a != 0]
    extra.update(
        accuracy_gated=gated_eval.accuracy, accuracy_after_slice=slice_eval.accuracy,
        output_error_sliced_vs_gated=slice_eval.output_error,
        gdp={"gated_groups": len(gated_groups), "gated_units": int(units.size),
             "closed_gates": int((a == 0).sum()),
             "closed_by_budget_or_rules": int(((gates[units] > 0) & ~alive[units]).sum()),
             "open_gate_min": float(open_gates.min()) if open_gates.size else None,
             "open_gates_below_half": int((open_gates < 0.5).sum())})
    final = finetune_training_copy(sliced, source, options, loss, teacher,
                                   options.finetune_steps, shapes)
    after = evaluate(final, source, reference=seed_model)
    extra.update(accuracy_after=after.accuracy, agreement_with_seed=after.class_agreement,
                 output_error_vs_seed=after.output_error, learned=log)
    return alive, final, extra


def _kept_by_rules(open_units: np.ndarray, groups, rules: SelectionRules) -> np.ndarray:
    """The units the final structure keeps for these open ones: each group's count rounded
    up to --round-to and at least --min-channels, as methods.gated._final_structure does
    (the extra channels have closed gates, so keeping them changes nothing the model
    computes). Steering on it means the rules never have to close an open gate."""
    kept = open_units.copy()
    for group in groups:
        count = int(open_units[group.units].sum())
        floor, step = rules.min_channels, rules.step(group)
        if step > 1:
            floor = -(-max(count, floor) // step) * step
        extra = min(floor, group.channels) - count
        if extra > 0:
            kept[group.units[~open_units[group.units]][:extra]] = True
    return kept
