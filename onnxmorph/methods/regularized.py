"""Structure learning with a morph-net regularizer (gamma, group lasso): no gates in the model.

The weights train with the task loss plus λ · (FLOPs-weighted regularization term, see
training/regularizers.py); the budget controller sets λ from the structure the weights
describe now (a unit is alive while its value r > threshold). At the end the threshold is
chosen from the budget: units are dropped in order of r until the cost fits, with the shared
selection rules (--round-to, --min-channels, --exclude). The trained weights are sliced, the
slice verified against them with the dropped channels zeroed, then fine-tuned.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import onnx

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis, analyze
from onnxmorph.graph.cost import CostFunction
from onnxmorph.graph.load import LoadedModel
from onnxmorph.methods.gated import _final_structure
from onnxmorph.methods.select import SelectionRules, prunable_groups, select_to_budget
from onnxmorph.methods.training_data import finetune_and_report, training_data
from onnxmorph.rewrite import slice_channels, verify_models
from onnxmorph.rewrite.postconditions import require_passed
from onnxmorph.training.controller import BudgetController
from onnxmorph.training.data import Batch, DataSource
from onnxmorph.training.evaluate import evaluate
from onnxmorph.training.prepare import training_copy
from onnxmorph.training.regularizers import (
    COST_OUTPUT,
    WEIGHTS_INPUT,
    RegularizedModel,
    RegularizerSource,
    insert_regularizer,
)
from onnxmorph.training.session import model_with_values
from onnxmorph.training.structure_loop import StepReport, StructureLoop, structure_fingerprint
from onnxmorph.training.trainer import (
    TrainOptions,
    phase_session,
    scheduled_rate,
    target_for,
    work_folder,
)

_CONTROL_EVERY = 5  # steps between reading the weights back and re-weighting the term
_NOISE_FLOOR = 2.0  # × the learning rate: the smallest alive threshold
_WEIGHTS_KEY = "regularizer.weights"  # the term's weights in a checkpoint's arrays


@dataclasses.dataclass(frozen=True)
class Regularizer:
    """What a method contributes: its name, sources, and the alive threshold relative to the
    seed's mean r over the unit's group. morph-net uses one absolute threshold (1e-2 for γ
    near 1); relative per group it means the same for any model, and for weight norms,
    whose seed scale follows each layer's fan-in, it compares a layer with itself. Never
    below Adam's noise floor."""

    method: str
    sources: list[RegularizerSource]
    relative_threshold: float


def learn_regularized(
    analysis: Analysis, regularizer: Regularizer, *, data: str | os.PathLike, target: str,
    budget: float, rules: SelectionRules, **training,
) -> tuple[np.ndarray, onnx.ModelProto, dict]:
    """Learn which channels live under the regularizer; return (alive, model, extras)."""
    options = TrainOptions(**training)
    name = regularizer.method
    expr = analysis.cost.expr(target)  # flops, params, or the latency model's prices
    seed_model = analysis.loaded.model
    groups = prunable_groups(analysis, rules)
    select_to_budget(analysis, np.zeros(analysis.channels.num_units), target, budget, rules)
    prepared = training_data(data, seed_model, options)
    source, loss, shapes, teacher = (prepared.source, prepared.loss, prepared.shapes,
                                     prepared.teacher)
    extra: dict = {"loss": loss, "steps": options.steps, "finetune_steps": options.finetune_steps,
                   "regularized_units": int(sum(s.units.size for s in regularizer.sources))}
    extra["accuracy_before"] = evaluate(seed_model, source).accuracy
    regularized = insert_regularizer(training_copy(seed_model, shapes, rewrite=False),
                                     regularizer.sources, analysis.channels.num_units)
    steering = _Steering(analysis, regularized, groups, expr, regularizer.relative_threshold,
                         options.learning_rate)
    with work_folder(options.workdir) as folder:
        values, log = _train(regularized, steering, source, options, loss, teacher, budget,
                             f"{folder}/{name}")
    r = steering.values(values)
    # The threshold chosen from the budget, in units of each unit's own threshold:
    # _final_structure reads "probabilities" against options.alive_threshold, so r / τ is
    # scaled onto it; unregularized units go last.
    relative = np.where(steering.sourced, r / steering.threshold, np.inf)
    probs = np.where(steering.sourced, relative * options.alive_threshold, 1e9)
    alive = _final_structure(analysis, probs, groups, target, budget, rules, options)
    dropped = steering.sourced & ~alive
    log["threshold_from_budget"] = (float(relative[dropped].max()) if dropped.any()
                                    else None)  # × each unit's alive threshold
    trained = analyze(LoadedModel(model=model_with_values(seed_model, values),
                                  shapes=analysis.loaded.shapes,
                                  input_shapes=analysis.loaded.input_shapes,
                                  source=analysis.loaded.source),
                      prune_embedding=analysis.channels.prune_embedding)
    sliced_result = slice_channels(trained, alive)
    alive, sliced = sliced_result.alive, sliced_result.model
    extra["verify_regularized_slice"] = verify_models(trained, sliced).to_dict()
    require_passed(extra["verify_regularized_slice"], f"verify ({name}-trained weights, "
                                                      "before fine-tuning)")
    final = finetune_and_report(sliced, seed_model, prepared, options, extra)
    extra["learned"] = log
    return alive, final, extra


class _Steering:
    """Turns the current weights into the structure they describe and the term's weights."""

    def __init__(self, analysis: Analysis, regularized: RegularizedModel, groups,
                 expr: CostFunction, relative_threshold: float, learning_rate: float) -> None:
        self.regularized, self.expr = regularized, expr
        num_units = analysis.channels.num_units
        chosen = np.zeros(num_units, dtype=bool)
        for group in groups:
            chosen[group.units] = True
        self.sourced = np.zeros(num_units, dtype=bool)
        for source in regularized.sources:
            self.sourced[source.units] = True
        self.sourced &= chosen
        initializers = {i.name for i in regularized.model.graph.initializer}
        r0 = self.values({s.name: _initializer(regularized.model, s.name)
                          for s in regularized.sources if s.name in initializers})
        group_mean = np.zeros(num_units)
        for group in groups:
            units = group.units[self.sourced[group.units]]
            group_mean[group.units] = r0[units].mean() if units.size else 0.0
        # Adam moves every weight by about the learning rate per step, so a value the L1 term
        # holds at zero keeps bouncing within ± that: below twice it, a unit counts as dead.
        self.threshold = np.maximum(relative_threshold * group_mean,
                                    _NOISE_FLOOR * learning_rate)
        self.seed_cost = expr()
        self.norm = float((self._raw_weights(np.ones(num_units)) * r0).sum())
        if not self.norm > 0:
            raise PruningError("the regularized channels have no weight or no cost; "
                               "use --method gates")

    def values(self, params: dict[str, np.ndarray]) -> np.ndarray:
        return self.regularized.values(params)

    def alive(self, r: np.ndarray) -> np.ndarray:
        return ~self.sourced | (r > self.threshold)

    def weights(self, alive: np.ndarray) -> np.ndarray:
        return (self._raw_weights(alive) / self.norm).astype(np.float32)

    def _raw_weights(self, alive: np.ndarray) -> np.ndarray:
        return np.where(self.sourced, self.expr.derivative(alive.astype(np.float64)), 0.0)


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    raise KeyError(name)


def _train(regularized: RegularizedModel, steering: _Steering, source: DataSource,
           options: TrainOptions, loss: str, teacher, budget: float,
           folder: str) -> tuple[dict[str, np.ndarray], dict]:
    # The regularized graph's digest tells gamma from group lasso (their terms differ), the
    # term's norm one --target from another.
    loop = StructureLoop(options, source, structure_fingerprint(
        regularized.model, options, loss, budget, cost_norm=steering.norm),
        "learning structure", own=(_WEIGHTS_KEY,))
    controller = BudgetController(budget, options.strength)
    weights = steering.weights(np.ones(steering.sourced.size))
    ratio = 1.0
    if loop.loaded is not None:
        controller.load_state(loop.loaded.state["controller"])
        weights, ratio = loop.loaded.arrays[_WEIGHTS_KEY], loop.loaded.state["ratio"]
    values = loop.finished()  # interrupted in a later phase
    if values is None:
        session = phase_session(regularized.model, folder, options, loss,
                                cost_output=COST_OUTPUT, checkpoint=loop.ort_checkpoint)

        def step(index: int, batch: Batch) -> StepReport:
            nonlocal weights, ratio
            rate = scheduled_rate(session, options, index, options.steps, "structure")
            result = session.train_step({**batch.inputs, WEIGHTS_INPUT: weights},
                                        target_for(batch, loss, teacher), controller.lam)
            row = None
            if index % _CONTROL_EVERY == 0 or index == options.steps - 1:
                alive = steering.alive(steering.values(session.parameters()))
                ratio = steering.expr(alive) / steering.seed_cost
                weights = steering.weights(alive)
                row = {"phase": "structure", "step": index, "task_loss": result.task_loss,
                       "learning_rate": rate, "cost": result.cost, "alive_cost_ratio": ratio,
                       "lambda": controller.lam}
                controller.update(ratio)
            return StepReport(result.task_loss, ratio, controller.lam, row)

        def snapshot() -> tuple[dict, dict]:
            return {"controller": controller.state(), "ratio": ratio}, {_WEIGHTS_KEY: weights}

        values = loop.run(session, step, snapshot)
    return values, {"final_lambda": controller.lam, "alive_cost_ratio": ratio,
                    "alive_threshold": _summary(steering.threshold[steering.sourced]),
                    "history": loop.rows}


def _summary(values: np.ndarray) -> dict:
    return {"min": float(values.min()), "max": float(values.max())} if values.size else {}
