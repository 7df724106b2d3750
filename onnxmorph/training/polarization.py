"""GDP polarization gates and their proximal step (Guo et al., "GDP: Stabilized Neural Network
Pruning via Gates with Differentiable Polarization", ICCV 2021, arXiv 2109.02220).

Every unit of a gated group has a parameter a and the gate g(a) = a² / (a² + ε), the paper's
smoothed L0 function: exactly 0 at a = 0, close to 1 once |a| ≫ √ε, steep in between. The
gate multiplies the unit's channels in front of every layer that mixes channels (the sites of
rewrite/absorb_gates.py; depthwise convolutions get none). The resource constraint is the
cost of the structure ‖g‖₀ = ‖a‖₀, relaxed to the weighted L1 norm Σ w_u |a_u| with w_u the
cost one more channel of u adds at the current structure (∂cost/∂alive_u, morph-net's bilinear
cost). It is not in the ONNX Runtime graph: after each step a proximal step (soft threshold
by step · λ · w_u) sets a to exactly 0, and the task gradient holds up the gates it needs.
Since dg/da = 2aε / (a² + ε)² is 0 at a = 0, a closed gate stays closed; an open one is pushed
through the steep part quickly, which is the polarization: gates end at 0 or well above it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.channels import ChannelGroup
from onnxmorph.graph.cost import CostFunction
from onnxmorph.graph.layers import layer_kind
from onnxmorph.rewrite.absorb_gates import AbsorbPlan, absorb_sites
from onnxmorph.training.controller import BudgetController
from onnxmorph.training.data import Batch, DataSource
from onnxmorph.training.gates import PREFIX, _GateNodes, _splice
from onnxmorph.training.parameters import default_trainable
from onnxmorph.training.session import TrainingSession
from onnxmorph.training.structure_loop import StepReport, StructureLoop, structure_fingerprint
from onnxmorph.training.trainer import (
    Teacher,
    TrainOptions,
    output_name,
    phase_session,
    scheduled_rate,
    target_for,
)

PARAM_PREFIX = f"{PREFIX}/polarization"


@dataclass(frozen=True)
class PolarizationSettings:
    init: float = 1.0  # a at the start: g = 1 / (1 + ε), the seed's function within 1 %
    epsilon: float = 1e-2  # the steep part of g is |a| ≲ 3√ε
    # Step per training step, in units of a; None: min(0.5, 6 / steps), so that the most
    # expensive gate closes within a sixth of the run at λ = 1 if the task does not hold it.
    step_size: float | None = None


@dataclass
class PolarizedModel:
    model: onnx.ModelProto
    groups: list[ChannelGroup]  # the gated groups, in parameter order
    param_names: list[str]  # one [channels] initializer per group
    gated_units: np.ndarray  # unit of every entry of the concatenated parameters
    num_units: int
    epsilon: float

    def parameters_of(self, params: dict[str, np.ndarray]) -> np.ndarray:
        """The concatenated a of every gated unit."""
        return np.concatenate([np.asarray(params[n], np.float64).ravel()
                               for n in self.param_names])

    def unit_gates(self, a: np.ndarray) -> np.ndarray:
        """g(a) for every unit of the analysis (1 for units without a gate)."""
        gates = np.ones(self.num_units)
        squared = np.square(np.asarray(a, np.float64))
        gates[self.gated_units] = squared / (squared + self.epsilon)
        return gates

    def split(self, a: np.ndarray) -> dict[str, np.ndarray]:
        """The concatenated a back as one float32 array per parameter."""
        sizes = np.cumsum([g.channels for g in self.groups])[:-1]
        return {name: part.astype(np.float32)
                for name, part in zip(self.param_names, np.split(np.asarray(a), sizes))}


def polarization_plan(analysis: Analysis, groups: list[ChannelGroup]
                      ) -> tuple[AbsorbPlan, list[ChannelGroup]]:
    """The absorb sites and the groups that get gates: read by at least one site, and by no
    weight layer a gate cannot be folded into."""
    plan = absorb_sites(analysis)
    read = np.zeros(analysis.channels.num_units, dtype=bool)
    for site in plan.sites:
        read[site.ids] = True
    chosen = [g for g in groups
              if read[g.units].any() and not plan.blocked_units[g.units].any()]
    return plan, chosen


def insert_polarization_gates(
    model: onnx.ModelProto, analysis: Analysis, plan: AbsorbPlan, groups: list[ChannelGroup],
    settings: PolarizationSettings, values: dict[str, np.ndarray] | None = None,
) -> PolarizedModel:
    """A copy of `model` (the seed, or its training copy: same tensor names) with gates in
    front of the plan's sites; `values`: the parameters (default: every a at settings.init)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    num_units = analysis.channels.num_units
    names = [f"{PARAM_PREFIX}/{g.id}" for g in groups]
    for name, group in zip(names, groups):
        value = (values[name] if values is not None
                 else np.full(group.channels, settings.init, np.float32))
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    gated_units = (np.concatenate([g.units for g in groups]) if groups
                   else np.zeros(0, np.int64))
    nodes = _GateNodes(graph)
    head = nodes.head
    a = nodes.op(head, "Concat", names, "polarization_params", axis=0)
    squared = nodes.op(head, "Mul", [a, a], "polarization_squared")
    denominator = nodes.op(head, "Add", [squared, nodes.const(
        np.array([settings.epsilon], np.float32), "epsilon")], "polarization_denominator")
    gates = nodes.op(head, "Div", [squared, denominator], "polarization_gates")
    # Units without a gate read 1: [gates, ones] gathered into unit order.
    rest = np.setdiff1d(np.arange(num_units), gated_units)
    joined = nodes.op(head, "Concat", [gates, nodes.const(np.ones(rest.size, np.float32),
                                                          "ones")], "polarization_joined", axis=0)
    position = np.empty(num_units, np.int64)
    position[gated_units] = np.arange(gated_units.size)
    position[rest] = gated_units.size + np.arange(rest.size)
    unit_gates = nodes.op(head, "Gather", [joined, nodes.const(position, "unit_order")],
                          "polarization_units", axis=0)
    keys = {site.key for site in plan.sites}

    def at_site(node: onnx.NodeProto) -> bool:
        kind = layer_kind(node)
        return (kind is not None and kind.weight is not None and len(node.input) > kind.weight
                and (node.input[0], node.input[kind.weight]) in keys)

    _splice(graph, nodes.gate_consumers(analysis, unit_gates, keep=at_site), head)
    return PolarizedModel(model=out, groups=list(groups), param_names=names,
                          gated_units=gated_units, num_units=num_units,
                          epsilon=settings.epsilon)


class ProximalGateStep:
    """Replaces the optimizer's step on the gate parameters by a gradient step on the task
    loss (normalised by the gradients' joint RMS, so its size is under control whatever the
    loss scale) followed by the L1 proximal step, soft thresholding by `thresholds`."""

    def __init__(self, names: list[str], step_size: float, sizes: list[int],
                 min_open: int = 0) -> None:
        self.names, self.step_size = names, step_size
        self.bounds = np.cumsum([0, *sizes])
        self.min_open = min_open  # --min-channels: a group keeps this many gates open

    def snapshot(self, session: TrainingSession) -> np.ndarray:
        return np.concatenate([session.value(n).ravel() for n in self.names]).astype(np.float64)

    def apply(self, session: TrainingSession, before: np.ndarray, thresholds: np.ndarray,
              polarized: PolarizedModel) -> np.ndarray:
        """Undo the optimizer's step on the gates, take this one; returns the new a."""
        grad = np.concatenate([session.gradient(n).ravel() for n in self.names])
        rms = float(np.sqrt(np.mean(np.square(grad, dtype=np.float64))))
        half = before - self.step_size * (grad / rms if rms > 0 else grad)
        after = proximal_l1(half, self.step_size * thresholds)
        for start, stop in zip(self.bounds[:-1], self.bounds[1:]):
            floor = min(self.min_open, stop - start)
            if np.count_nonzero(after[start:stop]) < floor:  # the rules would keep them
                keep = start + np.argsort(-np.abs(half[start:stop]), kind="stable")[:floor]
                after[keep] = np.where(after[keep] != 0, after[keep], half[keep])
        for name, value in polarized.split(after).items():
            session.set_parameter(name, value)
        return after


def proximal_l1(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """argmin_x ½‖x − values‖² + Σ thresholds·|x|: soft thresholding, exact zeros included."""
    return np.sign(values) * np.maximum(np.abs(values) - thresholds, 0.0)


def train_polarized(
    polarized: PolarizedModel, expr: CostFunction, source: DataSource, options: TrainOptions,
    loss: str, teacher: Teacher | None, budget: float, folder: str,
    settings: PolarizationSettings, min_open: int = 0,
    kept: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Train weights (ORT) and gates (numpy, proximal) until the structure ‖a‖₀ describes
    fits `budget` (every group keeping `min_open` gates open); `kept` maps the open units to
    the units the selection rules will keep (--round-to rounds up), the structure steered on.
    Returns the trained parameters and the log."""
    model = polarized.model
    units = polarized.gated_units
    seed_cost = expr()
    # The most expensive gate shrinks by one step size per step at λ = 1, the others by
    # their share (normalising by the mean closed a residual stream's gates in two steps).
    norm = float(expr.derivative(np.ones(polarized.num_units))[units].max())
    if not norm > 0:
        raise PruningError("the gated channels cost nothing at this --target; use --method "
                           "gates or another --target")
    loop = StructureLoop(options, source, structure_fingerprint(
        model, options, loss, budget, polarization=asdict(settings), min_open=min_open,
        cost_norm=norm),  # the norm tells one --target from another
        "learning structure (gdp)", own=("gdp.a", "gdp.alive"))
    # λ may grow about e^6-fold over a short run: gates closed late leave the weights no
    # steps to adapt, and a closed gate never reopens, so the controller acts every step.
    controller = BudgetController(budget, options.strength, initial=1.0,
                                  rate=max(0.1, 6.0 / options.steps))
    step = ProximalGateStep(polarized.param_names,
                            settings.step_size or min(0.5, 6.0 / options.steps),
                            [g.channels for g in polarized.groups], min_open)
    alive = np.ones(polarized.num_units)
    ratio = 1.0
    if loop.loaded is not None:
        controller.load_state(loop.loaded.state["controller"])
        ratio = loop.loaded.state["ratio"]
        # a in float64 as the proximal step left it (the session holds it in float32).
        a, alive = loop.loaded.arrays["gdp.a"], loop.loaded.arrays["gdp.alive"]
    values = loop.finished()  # interrupted in a later phase
    if values is None:
        trainable = [n for n in default_trainable(model, [output_name(model)])
                     if not n.startswith(PREFIX)] + polarized.param_names
        # The gates take ProximalGateStep's step, not the optimizer's (Ranger leaves them
        # alone).
        session = phase_session(model, folder, options, loss, trainable=trainable,
                                own_step=polarized.param_names,
                                checkpoint=loop.ort_checkpoint)
        if loop.loaded is None:
            a = step.snapshot(session)

        def train_step(index: int, batch: Batch) -> StepReport:
            nonlocal a, ratio
            rate = scheduled_rate(session, options, index, options.steps, "structure")
            result = session.train_step(batch.inputs, target_for(batch, loss, teacher))
            thresholds = controller.lam * expr.derivative(alive)[units] / norm
            a = step.apply(session, a, thresholds, polarized)
            alive[units] = a != 0
            ratio = expr(kept(alive > 0) if kept else alive) / seed_cost
            # Every step: the structure is in hand (the gates live in numpy), and a closed
            # gate never reopens, so a late λ would overshoot the budget.
            controller.update(ratio)
            row = None
            if index % 5 == 0 or index == options.steps - 1:
                gates = polarized.unit_gates(a)[units]
                row = {"phase": "structure", "step": index, "task_loss": result.task_loss,
                       "learning_rate": rate, "alive_cost_ratio": ratio, "lambda": controller.lam,
                       "closed_gates": int((a == 0).sum()),
                       "open_gates_below_half": int(((a != 0) & (gates < 0.5)).sum())}
            return StepReport(result.task_loss, ratio, controller.lam, row)

        def snapshot() -> tuple[dict, dict]:
            return ({"controller": controller.state(), "ratio": ratio},
                    {"gdp.a": a, "gdp.alive": alive})

        values = loop.run(session, train_step, snapshot)
    return values, {"final_lambda": controller.lam, "alive_cost_ratio": ratio,
                    "step_size": step.step_size, "epsilon": polarized.epsilon,
                    "history": loop.rows}
