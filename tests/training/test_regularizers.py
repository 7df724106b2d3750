"""morph-net's Gamma and GroupLasso FLOPs regularizers: the term in the ONNX graph against
numpy, its gradient in ORT training, the cost weights against finite differences."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxmorph.graph.analysis import analyze
from onnxmorph.methods.gamma import gamma_sources
from onnxmorph.methods.group_lasso import group_lasso_sources
from onnxmorph.methods.select import SelectionRules
from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.parameters import default_trainable
from onnxmorph.training.regularizers import (
    COST_OUTPUT,
    WEIGHTS_INPUT,
    insert_regularizer,
)
from onnxmorph.training.session import TrainingSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularizer_models import regularizer_net  # noqa: E402

UNITS = {"conv1": np.arange(2, 6), "residual": np.arange(6, 10), "hidden": np.arange(10, 15)}
NUM_UNITS = 18  # with the 2 input and the 3 output channels


def _analysis(tmp_path: Path, **kwargs):
    path = tmp_path / "net.onnx"
    onnx.save(regularizer_net(**kwargs), path)
    return analyze(path)


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i).astype(np.float64) for i in
            model.graph.initializer}


def _expected_gamma(w: dict) -> np.ndarray:
    """r per unit: |γ| of BN1 for conv1's units, the larger of |γ2|, |γ3| on the Add."""
    r = np.zeros(NUM_UNITS)
    r[UNITS["conv1"]] = np.abs(w["bn1.scale"])
    r[UNITS["residual"]] = np.maximum(np.abs(w["bn2.scale"]), np.abs(w["bn3.scale"]))
    return r


def _expected_group_lasso(w: dict) -> np.ndarray:
    """r per unit: RMS of the weights producing the channel (L2 / sqrt(dim))."""
    def rms(rows):
        return np.sqrt((rows ** 2).mean(axis=1))
    r = np.zeros(NUM_UNITS)
    r[UNITS["conv1"]] = rms(w["conv1.W"].reshape(4, -1))
    r[UNITS["residual"]] = np.maximum(rms(w["conv2.W"].reshape(4, -1)),
                                      rms(w["conv3.W"].reshape(4, -1)))
    r[UNITS["hidden"]] = rms(w["w1"].T)  # MatMul weight [K, N]: output channels on axis 1
    return r


@pytest.mark.parametrize("method", ["gamma", "group-lasso"])
def test_term_in_the_graph_equals_numpy(tmp_path, method):
    analysis = _analysis(tmp_path, seed=1)
    find = gamma_sources if method == "gamma" else group_lasso_sources
    expected_r = (_expected_gamma if method == "gamma" else _expected_group_lasso)(
        _inits(analysis.loaded.model))
    regularized = insert_regularizer(analysis.loaded.model, find(analysis, SelectionRules()),
                                     analysis.channels.num_units)
    weights = np.random.default_rng(0).uniform(0.1, 2.0, NUM_UNITS).astype(np.float32)
    session = ort.InferenceSession(regularized.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = np.zeros((2, 2, 6, 6), np.float32)
    term = session.run([COST_OUTPUT], {"x": x, WEIGHTS_INPUT: weights})[0]
    assert term.shape == (1,)
    np.testing.assert_allclose(term[0], (weights * expected_r).sum(), rtol=1e-5)
    np.testing.assert_allclose(regularized.values(_inits(analysis.loaded.model)), expected_r,
                               rtol=1e-6, atol=1e-6)


def test_cost_weights_are_the_cost_derivative(tmp_path):
    """w_u = ∂MACs/∂alive_u: morph-net's coef · (alive_in · reg_out + alive_out · reg_in)."""
    expr = _analysis(tmp_path).cost.expr("flops")
    rng = np.random.default_rng(0)
    alive = (rng.uniform(size=NUM_UNITS) > 0.4).astype(np.float64)
    weights = expr.derivative(alive)
    for unit in range(NUM_UNITS):
        up, down = alive.copy(), alive.copy()
        up[unit] += 0.5
        down[unit] -= 0.5
        # The cost is at most quadratic in one unit: the central difference is exact.
        assert weights[unit] == pytest.approx(expr(up) - expr(down), rel=1e-9, abs=1e-9)
    # By hand: one more conv1 channel costs 36 positions × 9 MACs per alive input channel in
    # conv1 plus 36 × 1 MAC in each of conv2 and conv3 per alive residual channel.
    inputs_alive, residual_alive = alive[:2].sum(), alive[UNITS["residual"]].sum()
    assert weights[2] == pytest.approx(36 * 9 * inputs_alive + 2 * 36 * residual_alive)


@pytest.mark.parametrize("method", ["gamma", "group-lasso"])
def test_gradient_of_the_term_in_ort_training(tmp_path, method):
    """The ORT gradient with λ = 1 minus the one with λ = 0 is the term's own gradient:
    w · sign(γ) for gamma (only the larger source of a residual unit), w · row / (dim · r)
    for group lasso."""
    analysis = _analysis(tmp_path, seed=2)
    find = gamma_sources if method == "gamma" else group_lasso_sources
    regularized = insert_regularizer(analysis.loaded.model, find(analysis, SelectionRules()),
                                     analysis.channels.num_units)
    model = regularized.model
    paths = build_training_artifacts(
        model, tmp_path / "artifacts", trainable=default_trainable(model, ["logits"]),
        frozen=None, loss="cross-entropy", output_name="logits", cost_output=COST_OUTPUT,
        optimizer="sgd")
    session = TrainingSession(paths, learning_rate=1e-12)  # the weights barely move
    rng = np.random.default_rng(4)
    feeds = {"x": rng.normal(size=(4, 2, 6, 6)).astype(np.float32),
             WEIGHTS_INPUT: rng.uniform(0.5, 2.0, NUM_UNITS).astype(np.float32)}
    labels = rng.integers(0, 3, 4)
    names = [s.name for s in regularized.sources]
    session.train_step(feeds, labels, 0.0)
    without = {n: session.gradient(n).astype(np.float64) for n in names}
    session.train_step(feeds, labels, 1.0)
    w, values = feeds[WEIGHTS_INPUT].astype(np.float64), _inits(model)
    for source in regularized.sources:
        got = session.gradient(source.name) - without[source.name]
        value = values[source.name]
        if method == "gamma":
            others = [s for s in regularized.sources if s is not source
                      and np.array_equal(s.units, source.units)]
            larger = np.all([np.abs(value) > np.abs(values[o.name]) for o in others], axis=0)
            expected = w[source.units] * np.sign(value) * larger
        else:
            rows = (value.transpose(source.perm) if source.perm else value).reshape(
                source.units.size, -1)
            rms = np.sqrt((rows ** 2).mean(axis=1))
            others = [s for s in regularized.sources if s is not source
                      and np.array_equal(s.units, source.units)]
            larger = np.ones(source.units.size, bool)
            for other in others:
                other_rows = values[other.name].reshape(other.units.size, -1)
                larger &= rms > np.sqrt((other_rows ** 2).mean(axis=1))
            grad_rows = (w[source.units] * larger / (rows.shape[1] * rms))[:, None] * rows
            shape = [value.shape[a] for a in source.perm] if source.perm else value.shape
            expected = grad_rows.reshape(shape)
            if source.perm:
                expected = expected.transpose(np.argsort(source.perm))
        assert np.abs(expected).max() > 1e-3  # every source wins for some of its units
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5, err_msg=source.name)
