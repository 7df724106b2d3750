"""GDP polarization gates: where they go, the cost weights, the proximal step, and the claim
that matters — absorbing the gate values and slicing the zero gates computes the gated model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxmorph.graph.analysis import analyze
from onnxmorph.methods.select import SelectionRules, prunable_groups
from onnxmorph.rewrite import slice_channels, verify_models
from onnxmorph.rewrite.absorb_gates import absorb_input_factors
from onnxmorph.training.polarization import (
    PolarizationSettings,
    ProximalGateStep,
    insert_polarization_gates,
    polarization_plan,
    proximal_l1,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_builders import GraphBuilder, group_of  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _mixed_net() -> onnx.ModelProto:
    """Conv → depthwise → grouped conv (+ residual) → ConvTranspose → GAP → Gemm: every kind
    of layer a gate is folded into, and one it must skip."""
    b = GraphBuilder(seed=3)
    x = b.input("x", ["N", 3, 8, 8])
    stem = b.conv_bn_relu(x, 8, name="stem")
    dw = b.relu(b.bn(b.conv(stem, 8, group=8, name="dw")))
    grouped = b.relu(b.bn(b.conv(dw, 8, group=2, name="grouped")))
    up = b.relu(b.conv_transpose(b.add(grouped, stem), 6, name="up"))
    return b.model([b.gemm(b.flatten(b.gap(up)), 5, name="fc")])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _random_gates(polarized_groups, num_params: int, seed: int) -> np.ndarray:
    """a with about a third exactly 0 (never a whole group) and the rest spread out."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.05, 1.5, num_params) * rng.choice([-1, 1], num_params)
    a[rng.random(num_params) < 0.35] = 0.0
    start = 0
    for group in polarized_groups:
        if not a[start:start + group.channels].any():
            a[start] = 0.7
        start += group.channels
    return a


def _gated_absorbed_sliced(model: onnx.ModelProto, seed: int = 0):
    analysis = analyze(model)
    groups = prunable_groups(analysis, SelectionRules())
    plan, gated = polarization_plan(analysis, groups)
    settings = PolarizationSettings()
    empty = insert_polarization_gates(analysis.loaded.model, analysis, plan, gated, settings)
    a = _random_gates(gated, empty.gated_units.size, seed)
    polarized = insert_polarization_gates(analysis.loaded.model, analysis, plan, gated,
                                          settings, values=empty.split(a))
    gates = polarized.unit_gates(a)
    absorbed = analyze(absorb_input_factors(analysis.loaded.model, plan.sites, gates))
    sliced = slice_channels(absorbed, gates > 0)
    return analysis, plan, gated, polarized, absorbed, sliced


def test_gates_sit_before_channel_mixing_layers_only():
    analysis = analyze(_mixed_net())
    plan, gated = polarization_plan(analysis, prunable_groups(analysis, SelectionRules()))
    assert {s.node for s in plan.sites} == {"stem", "grouped", "up", "fc"}  # not "dw"
    assert not plan.blocked_units.any()
    # The stem's group reaches the depthwise conv and, through it, the grouped conv: gated.
    assert group_of(analysis, "dw").id == group_of(analysis, "stem").id
    assert group_of(analysis, "stem").id in {g.id for g in gated}


def test_a_group_read_by_a_quantized_weight_gets_no_gate():
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 3, 8, 8])
    h = b.conv_bn_relu(x, 8, name="c1")
    quantized = b.const(np.arange(4 * 8 * 9).reshape(4, 8, 3, 3) % 7 - 3, dtype=np.int8)
    w = b.node("DequantizeLinear", [quantized, b.const(np.full(4, 0.05))], axis=0)
    y = b.node("Conv", [h, w], name="c2", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    analysis = analyze(b.model([b.gemm(b.flatten(b.gap(b.relu(y))), 3)]))
    plan, gated = polarization_plan(analysis, prunable_groups(analysis, SelectionRules()))
    assert plan.blocked_units[analysis.channels.layouts[h].ids].all()
    assert group_of(analysis, h).id not in {g.id for g in gated}


@pytest.mark.parametrize("model", [
    pytest.param(_mixed_net, id="mixed"),
    pytest.param(lambda: onnx.load(SAMPLES / "resnet_seed.onnx"), id="resnet_seed"),
    pytest.param(lambda: onnx.load(SAMPLES / "mobilenet_seed.onnx"), id="mobilenet_seed"),
])
def test_the_sliced_model_computes_the_gated_model(model):
    analysis, plan, gated, polarized, absorbed, sliced = _gated_absorbed_sliced(model())
    gates = polarized.unit_gates(np.concatenate(
        [onnx.numpy_helper.to_array(i).ravel() for name in polarized.param_names
         for i in polarized.model.graph.initializer if i.name == name]))
    closed = int((gates[polarized.gated_units] == 0).sum())
    assert gated and closed > 0 and not sliced.alive[gates == 0].any()
    shape = [2, *analysis.loaded.input_shapes[analysis.loaded.model.graph.input[0].name][1:]]
    x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    want = _run(polarized.model, x)
    assert not np.allclose(want, _run(analysis.loaded.model, x), atol=1e-3)  # gates matter
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(_run(absorbed.loaded.model, x), want, rtol=1e-4,
                               atol=1e-5 * scale)
    np.testing.assert_allclose(_run(sliced.model, x), want, rtol=1e-4, atol=1e-5 * scale)
    assert verify_models(absorbed, sliced.model).passed
    assert absorbed.cost.macs(sliced.alive) < analysis.macs


def test_cost_derivative_matches_central_differences():
    analysis = analyze(SAMPLES / "mobilenet_seed.onnx")
    expr = analysis.cost.expr("flops")
    rng = np.random.default_rng(0)
    alive = rng.uniform(0.2, 1.0, analysis.channels.num_units)
    derivative = expr.derivative(alive)
    for unit in rng.choice(alive.size, 25, replace=False):
        step = np.zeros(alive.size)
        step[unit] = 0.1  # the cost is quadratic in one unit at most: central is exact
        numeric = (expr(alive + step) - expr(alive - step)) / 0.2
        assert derivative[unit] == pytest.approx(numeric, rel=1e-6, abs=1e-6 * expr())
    assert (expr.derivative(np.ones(alive.size)) >= 0).all()


def test_proximal_l1_soft_thresholds_to_exact_zeros():
    values = np.array([0.5, -0.5, 0.05, -0.05, 0.0])
    np.testing.assert_array_equal(proximal_l1(values, np.full(5, 0.1)),
                                  [0.4, -0.4, 0.0, 0.0, 0.0])


class _FakeSession:
    """The three calls the proximal step makes on a training session."""

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.params, self.grads = params, grads

    def value(self, name: str) -> np.ndarray:
        return self.params[name].copy()

    def gradient(self, name: str) -> np.ndarray:
        return self.grads[name].copy()

    def set_parameter(self, name: str, value: np.ndarray) -> None:
        self.params[name] = np.asarray(value, np.float32)


def test_the_proximal_step_closes_cheap_useless_gates_and_keeps_min_channels():
    analysis = analyze(_mixed_net())
    plan, gated = polarization_plan(analysis, prunable_groups(analysis, SelectionRules()))
    polarized = insert_polarization_gates(analysis.loaded.model, analysis, plan, gated,
                                          PolarizationSettings())
    sizes = [g.channels for g in gated]
    names = polarized.param_names
    a = np.concatenate([np.linspace(0.1, 0.4, n) for n in sizes])
    grad = np.zeros(a.size)
    grad[0] = -1.0  # the task wants the first gate of the first group open
    session = _FakeSession(polarized.split(a), polarized.split(grad))
    step = ProximalGateStep(names, step_size=0.1, sizes=sizes, min_open=2)
    after = step.apply(session, a, np.full(a.size, 2.0), polarized)
    # Shrunk by 0.2 per step: everything at or below 0.2 is exactly 0, except that each group
    # keeps its two largest gates, and the first gate, pushed up by the task, stays open.
    first = after[:sizes[0]]
    assert first[0] > 0 and np.count_nonzero(first) >= 2
    for start, size in zip(np.cumsum([0, *sizes[:-1]]), sizes):
        assert np.count_nonzero(after[start:start + size]) >= 2
    assert (after[a <= 0.2][1:] == 0).sum() >= 1
    np.testing.assert_allclose(np.concatenate([session.params[n] for n in names]), after,
                               rtol=1e-6)
    # A closed gate has no gradient (dg/da = 0 at a = 0) and stays closed.
    again = step.apply(_FakeSession(polarized.split(after), polarized.split(np.zeros(a.size))),
                       after, np.zeros(a.size), polarized)
    assert (again[after == 0] == 0).all()
