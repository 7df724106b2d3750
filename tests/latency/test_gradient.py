"""The latency term in the training graph: its value is the LatencyExpr at the gate
probabilities, and ORT's gradient of it matches a numerical derivative."""

from __future__ import annotations

import numpy as np
import pytest

from onnxmorph.latency.expr import latency_expr
from onnxmorph.methods.select import SelectionRules, prunable_groups
from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.gates import COST_OUTPUT, NOISE_INPUT, PREFIX, insert_gates
from onnxmorph.training.parameters import default_trainable
from onnxmorph.training.session import TrainingSession
from onnxmorph.training.trainer import output_name
from tests.latency.fixtures import synthetic_table


@pytest.fixture(scope="module")
def trained_setup(tiny_analysis, tmp_path_factory):
    # Priced other ops (GlobalAveragePool, Flatten) are terms of the same training graph.
    expr = latency_expr(tiny_analysis, synthetic_table(tiny_analysis, ops=True))
    assert expr.layers[expr.weight_layers:] and expr.split()[1] > 0
    groups = prunable_groups(tiny_analysis, SelectionRules())
    gated = insert_gates(tiny_analysis, groups, expr)
    model = gated.model
    trainable = [n for n in default_trainable(model, [output_name(model)])
                 if not n.startswith(PREFIX)] + gated.logit_names
    paths = build_training_artifacts(
        model, str(tmp_path_factory.mktemp("lat")), trainable=trainable, frozen=None,
        loss="mse", output_name=output_name(model), cost_output=COST_OUTPUT,
        optimizer="sgd")
    session = TrainingSession(paths, learning_rate=0.0, threads=1)
    return expr, gated, session


def _set_logits(session, gated, logits):
    start = 0
    for name, group in zip(gated.logit_names, gated.groups):
        session.set_parameter(name, logits[start:start + group.channels])
        start += group.channels


def _cost_and_gradient(session, gated, logits, lam):
    _set_logits(session, gated, logits)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    feeds = {"x": x, NOISE_INPUT: gated.no_noise()}
    result = session.train_step(feeds, np.zeros((1, 10), np.float32), lam)
    gradient = np.concatenate([session.gradient(n) for n in gated.logit_names])
    return result.cost, gradient


def test_latency_term_value_and_gradient_match_numpy(trained_setup):
    expr, gated, session = trained_setup
    rng = np.random.default_rng(0)
    logits = rng.uniform(-0.3, 0.3, gated.gated_units.size).astype(np.float32)
    # The task loss depends on the gates too: the cost term's gradient is the difference of
    # the gradients at λ = 1 and λ = 0 (learning rate 0, so parameters do not move).
    cost, with_cost = _cost_and_gradient(session, gated, logits, 1.0)
    _, without = _cost_and_gradient(session, gated, logits, 0.0)
    analytic = with_cost - without
    probs = gated.probabilities({n: v for n, v in zip(
        gated.logit_names, np.split(logits, np.cumsum([g.channels for g in gated.groups])[:-1]))})
    assert cost == pytest.approx(expr(probs) / expr(), rel=1e-4)

    def normalised(stored: np.ndarray) -> float:
        p = np.ones(gated.num_units)
        p[gated.gated_units] = 1 / (1 + np.exp(-stored.astype(np.float64)
                                               * gated.settings.logit_scale))
        return expr(p) / expr()

    eps = 1e-4
    numeric = np.array([(normalised(logits + eps * e) - normalised(logits - eps * e)) / (2 * eps)
                        for e in np.eye(logits.size)])
    assert np.abs(numeric).max() > 1e-3  # the check is not vacuous
    assert np.allclose(analytic, numeric, rtol=2e-2, atol=2e-3 * np.abs(numeric).max())
