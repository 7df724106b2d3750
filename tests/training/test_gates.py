"""Gate insertion: the gated model is valid ONNX, its cost output is the normalised cost model
at the gate probabilities, and open gates leave the seed's function unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxmorph.graph.analysis import analyze
from onnxmorph.methods.select import SelectionRules, prunable_groups
from onnxmorph.training.gates import (
    COST_OUTPUT,
    NOISE_INPUT,
    PREFIX,
    GatedModel,
    GateSettings,
    insert_gates,
)

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SEEDS = ["resnet_seed.onnx", "mobilenet_seed.onnx"]
HUGE = 100.0  # stored logit; × logit_scale → σ(1000) == 1 in float32


@pytest.fixture(scope="module", params=SEEDS)
def analysis(request):
    return analyze(str(SAMPLES / request.param))


def _gated(analysis, target: str = "flops", settings: GateSettings | None = None):
    groups = prunable_groups(analysis, SelectionRules())
    return insert_gates(analysis, groups, analysis.cost.expr(target), settings or GateSettings())


def _with_logits(gated: GatedModel, per_group: list[np.ndarray]) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(gated.model)
    inits = {i.name: i for i in model.graph.initializer}
    for name, value in zip(gated.logit_names, per_group):
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return model


def _run(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def _images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 28, 28)).astype(np.float32)


def test_gated_model_is_valid_and_runs(analysis):
    gated = _gated(analysis)
    onnx.checker.check_model(gated.model, full_check=True)
    # one logit initializer per prunable group, one noise entry per gated unit
    assert len(gated.logit_names) == len(gated.groups) == len(prunable_groups(
        analysis, SelectionRules()))
    assert gated.gated_units.size == sum(g.channels for g in gated.groups)
    assert len(set(gated.gated_units.tolist())) == gated.gated_units.size
    inputs = [i.name for i in gated.model.graph.input]
    assert inputs == ["input", NOISE_INPUT]
    assert [o.name for o in gated.model.graph.output] == ["logits", COST_OUTPUT]
    rng = np.random.default_rng(0)
    out = _run(gated.model, {"input": _images(), NOISE_INPUT: gated.noise(rng)})
    assert out["logits"].shape == (4, 10)
    assert out[COST_OUTPUT].shape == (1,)
    assert np.isfinite(out["logits"]).all()
    # the seed itself is untouched
    assert not any(n.name.startswith(PREFIX) for n in analysis.loaded.model.graph.node)


def test_gates_start_open(analysis):
    gated = _gated(analysis)
    params = {i.name: numpy_helper.to_array(i) for i in gated.model.graph.initializer}
    probs = gated.probabilities(params)
    np.testing.assert_allclose(probs[gated.gated_units], 1 / (1 + np.exp(-3.0)), rtol=1e-6)
    ungated = np.setdiff1d(np.arange(gated.num_units), gated.gated_units)
    assert (probs[ungated] == 1).all()


@pytest.mark.parametrize("target", ["flops", "params"])
def test_cost_with_open_gates_is_one(analysis, target):
    gated = _gated(analysis, target)
    model = _with_logits(gated, [np.full(g.channels, HUGE) for g in gated.groups])
    out = _run(model, {"input": _images(2), NOISE_INPUT: gated.no_noise()})
    np.testing.assert_allclose(out[COST_OUTPUT], [1.0], rtol=1e-5)


@pytest.mark.parametrize("target", ["flops", "params"])
def test_cost_output_is_normalised_cost_model_at_probabilities(analysis, target):
    gated = _gated(analysis, target)
    rng = np.random.default_rng(3)
    logits = [rng.uniform(-0.5, 0.5, g.channels) for g in gated.groups]  # p in σ(±5)
    model = _with_logits(gated, logits)
    params = {name: np.asarray(v, np.float32) for name, v in zip(gated.logit_names, logits)}
    probs = gated.probabilities(params)
    assert probs[gated.gated_units].min() < 0.05 and probs[gated.gated_units].max() > 0.95
    expr = analysis.cost.expr(target)
    seed_cost = analysis.macs if target == "flops" else analysis.params
    expected = expr(probs) / seed_cost
    assert 0.05 < expected < 0.95
    # the cost uses the probabilities, not the noisy samples: any noise gives the same cost
    for noise in (gated.no_noise(), gated.noise(rng)):
        out = _run(model, {"input": _images(2), NOISE_INPUT: noise})
        np.testing.assert_allclose(out[COST_OUTPUT], [expected], rtol=1e-4)


def test_cost_with_closed_gates_is_the_unprunable_rest(analysis):
    gated = _gated(analysis)
    model = _with_logits(gated, [np.full(g.channels, -HUGE) for g in gated.groups])
    out = _run(model, {"input": _images(2), NOISE_INPUT: gated.no_noise()})
    alive = np.ones(gated.num_units)
    alive[gated.gated_units] = 0
    expected = analysis.cost.macs(alive) / analysis.macs
    assert 0 <= expected < 0.2
    np.testing.assert_allclose(out[COST_OUTPUT], [expected], rtol=1e-4, atol=1e-7)


def test_open_gates_reproduce_the_seed(analysis):
    gated = _gated(analysis)
    model = _with_logits(gated, [np.full(g.channels, HUGE) for g in gated.groups])
    x = _images(8)
    seed = _run(analysis.loaded.model, {"input": x})["logits"]
    out = _run(model, {"input": x, NOISE_INPUT: gated.no_noise()})["logits"]
    scale = np.abs(seed).max()
    np.testing.assert_allclose(out, seed, atol=1e-3 * scale, rtol=1e-3)


def test_closing_one_group_changes_the_output(analysis):
    """The gates are wired in: a closed group must matter for the task output."""
    gated = _gated(analysis)
    logits = [np.full(g.channels, HUGE) for g in gated.groups]
    logits[0][:] = -HUGE
    x = _images(4)
    open_out = _run(_with_logits(gated, [np.full(g.channels, HUGE) for g in gated.groups]),
                    {"input": x, NOISE_INPUT: gated.no_noise()})["logits"]
    closed_out = _run(_with_logits(gated, logits),
                      {"input": x, NOISE_INPUT: gated.no_noise()})["logits"]
    assert np.abs(open_out - closed_out).max() > 1e-3 * np.abs(open_out).max()


def test_noise_is_logistic_and_sized_to_the_gates(analysis):
    gated = _gated(analysis)
    rng = np.random.default_rng(0)
    noise = np.concatenate([gated.noise(rng) for _ in range(50)])
    assert noise.dtype == np.float32
    assert gated.noise(rng).shape == gated.no_noise().shape == (gated.gated_units.size,)
    # standard logistic: mean 0, variance π²/3
    assert abs(noise.mean()) < 0.1
    assert noise.var() == pytest.approx(np.pi ** 2 / 3, rel=0.1)
    assert (gated.no_noise() == 0).all()


def test_logit_scale_and_temperature_are_applied(analysis):
    settings = GateSettings(init_logit=1.0, temperature=0.25, logit_scale=4.0)
    gated = _gated(analysis, settings=settings)
    params = {i.name: numpy_helper.to_array(i) for i in gated.model.graph.initializer}
    stored = params[gated.logit_names[0]]
    np.testing.assert_allclose(stored, 1.0 / 4.0)
    probs = gated.probabilities(params)
    np.testing.assert_allclose(probs[gated.gated_units], 1 / (1 + np.exp(-1.0)), rtol=1e-6)
    # the cost output follows the same probabilities
    out = _run(gated.model, {"input": _images(1), NOISE_INPUT: gated.no_noise()})
    np.testing.assert_allclose(out[COST_OUTPUT], [analysis.cost.macs(probs) / analysis.macs],
                               rtol=1e-4)
