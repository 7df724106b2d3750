"""Ranger (training/ranger.py) against an independent numpy reference, and in training."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxmorph.errors import TrainingError
from onnxmorph.graph.layers import WeightLayout
from onnxmorph.training import trainer
from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.data import DataSource, model_input_specs
from onnxmorph.training.ranger import Ranger, RangerSettings, centralize, weight_layouts
from onnxmorph.training.session import TrainingSession
from onnxmorph.training.trainer import TrainOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_builders import GraphBuilder  # noqa: E402


class _Parameters:
    """Stands in for a TrainingSession: parameters and the gradients of the current step."""

    def __init__(self, values: dict[str, np.ndarray]) -> None:
        self.values = {k: v.astype(np.float64) for k, v in values.items()}
        self.grads: dict[str, np.ndarray] = {}

    def value(self, name):
        return self.values[name].copy()

    def gradient(self, name):
        return self.grads[name].copy()

    def set_parameter(self, name, value):
        self.values[name] = np.asarray(value, dtype=np.float64)


def _reference(params, grads_per_step, lr, b1, b2, eps, wd, k, alpha, out_axes):
    """RAdam + Lookahead + GC from the papers' notation (m̂, v̂, ρ_t, r_t), one dict per step.
    Ranger adds ε to √v, which in the m̂ / v̂ notation is ε / √(1 − β2ᵗ) on √v̂."""
    p = {n: v.astype(np.float64).copy() for n, v in params.items()}
    slow = {n: v.copy() for n, v in p.items()}
    m = {n: np.zeros_like(v) for n, v in p.items()}
    v2 = {n: np.zeros_like(v) for n, v in p.items()}
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    history = []
    for t, grads in enumerate(grads_per_step, start=1):
        rho_t = rho_inf - 2.0 * t * b2**t / (1.0 - b2**t)
        for n in p:
            g = grads[n].astype(np.float64)
            if n in out_axes:  # centre each output channel's gradient
                others = tuple(a for a in range(g.ndim) if a != out_axes[n])
                g = g - g.mean(axis=others, keepdims=True)
            m[n] = b1 * m[n] + (1 - b1) * g
            v2[n] = b2 * v2[n] + (1 - b2) * g**2
            m_hat = m[n] / (1 - b1**t)
            p[n] = p[n] * (1 - lr * wd)
            if rho_t > 5:
                v_hat = v2[n] / (1 - b2**t)
                r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                                / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                p[n] = p[n] - lr * r_t * m_hat / (np.sqrt(v_hat) + eps / math.sqrt(1 - b2**t))
            else:
                p[n] = p[n] - lr * m_hat
            if t % k == 0:
                slow[n] = slow[n] + alpha * (p[n] - slow[n])
                p[n] = slow[n].copy()
        history.append({n: x.copy() for n, x in p.items()})
    return history


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"conv.W": (3, 2, 3, 3), "fc.W": (2, 3), "mm.W": (3, 4), "fc.B": (2,)}
    params = {n: rng.normal(size=s) for n, s in shapes.items()}
    grads = [{n: rng.normal(size=s) * (1 + 0.2 * t) for n, s in shapes.items()}
             for t in range(11)]
    layouts = {"conv.W": WeightLayout((3, 2, 3, 3), 0, 1, 1, grouped_axis=1),
               "fc.W": WeightLayout((2, 3), 0, 1),  # Gemm transB: [N, K]
               "mm.W": WeightLayout((3, 4), 1, 0)}  # MatMul: [K, N]
    return params, grads, layouts


@pytest.mark.parametrize("gc", [True, False])
def test_each_step_matches_the_reference(gc):
    params, grads, layouts = _problem()
    settings = RangerSettings(beta1=0.9, beta2=0.99, eps=1e-5, weight_decay=0.01,
                              lookahead_steps=4, lookahead_alpha=0.5, gradient_centralization=gc)
    session = _Parameters(params)
    ranger = Ranger(list(params), layouts, settings, learning_rate=0.01)
    out_axes = {n: lay.out_axis for n, lay in layouts.items()} if gc else {}
    expected = _reference(params, grads, 0.01, 0.9, 0.99, 1e-5, 0.01, 4, 0.5, out_axes)
    for t, grad in enumerate(grads):
        session.grads = grad
        ranger.step(session)
        for name in params:
            np.testing.assert_allclose(session.values[name], expected[t][name], rtol=1e-10,
                                       atol=1e-12, err_msg=f"{name} after step {t + 1}")
    assert ranger.t == 11


def test_rectification_switches_on_at_step_six_with_the_default_beta2():
    rho_inf = 2 / (1 - 0.999) - 1
    rho = [rho_inf - 2 * t * 0.999**t / (1 - 0.999**t) for t in range(1, 9)]
    assert max(rho[:5]) <= 5 < min(rho[5:])  # ρ_5 ≈ 4.996, ρ_6 ≈ 5.994
    ranger = Ranger(["w"], {}, RangerSettings(lookahead_steps=100), learning_rate=0.1)
    assert [ranger.rectified(t) for t in range(1, 9)] == [False] * 5 + [True] * 3
    session = _Parameters({"w": np.zeros(3)})
    m = np.zeros(3)
    for t in range(1, 8):
        before = session.value("w")
        grad = np.array([1.0, -2.0, 0.5]) * t
        session.grads = {"w": grad}
        ranger.step(session)
        m = 0.95 * m + 0.05 * grad
        momentum_step = 0.1 * m / (1 - 0.95**t)  # plain bias-corrected momentum, no √v
        moved = before - session.values["w"]
        if t <= 5:
            np.testing.assert_allclose(moved, momentum_step, rtol=1e-12)
        else:  # the adaptive step: about lr per coordinate, not lr × momentum
            assert not np.allclose(moved, momentum_step, rtol=1e-3)
            assert np.all(np.abs(moved) < 0.1)


def test_centralize_grouped_conv_transpose_per_output_channel():
    groups, cin_per_group, cout_per_group = 2, 3, 2
    layout = WeightLayout((groups * cin_per_group, cout_per_group, 2, 2), 1, 0, groups,
                          grouped_axis=1)
    grad = np.random.default_rng(0).normal(size=layout.shape)
    centred = centralize(grad, layout)
    for g in range(groups):  # output channel g * 2 + j reads input rows of group g only
        block = centred[g * cin_per_group:(g + 1) * cin_per_group]
        np.testing.assert_allclose(block.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    # One weight per output channel: centring would zero it, so it is left alone.
    depthwise = WeightLayout((4, 1, 1, 1), 0, 1, 4, grouped_axis=1)
    one = np.arange(4.0).reshape(4, 1, 1, 1)
    np.testing.assert_array_equal(centralize(one, depthwise), one)


def test_weight_layouts_come_from_the_layer_registry():
    b = GraphBuilder(0)
    x = b.input("x", [2, 3, 8, 8])
    t = b.conv(x, 4, name="conv")
    t = b.conv_transpose(t, 2, name="deconv")
    model = b.model([b.gemm(b.flatten(b.gap(t)), 5, name="fc")])
    layouts = weight_layouts(model)
    by_node = {n.name: n.input[1] for n in model.graph.node if len(n.input) > 1}
    assert layouts[by_node["conv"]].out_axis == 0
    assert layouts[by_node["deconv"]].out_axis == 1
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    trans_b = onnx.helper.get_attribute_value(next(
        (a for a in gemm.attribute if a.name == "transB"), onnx.helper.make_attribute("t", 0)))
    assert layouts[gemm.input[1]].out_axis == (0 if trans_b else 1)
    assert len(layouts) == 3  # biases and BN vectors are not centred


def test_bad_settings_are_refused():
    with pytest.raises(TrainingError, match="lookahead_steps"):
        RangerSettings(lookahead_steps=0)
    with pytest.raises(TrainingError, match="unknown optimizer 'lamb'"):
        TrainOptions(optimizer="lamb")
    assert TrainOptions(optimizer="ranger", ranger={"lookahead_alpha": 0.8}).ranger == \
        RangerSettings(lookahead_alpha=0.8)


# -- in a real training session -----------------------------------------------------------------

_LOADER = """
import numpy as np
rng = np.random.default_rng(3)
X = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
Y = (np.arange(64) % 2).astype(np.int64)
X[Y == 1, :, :4, :] += 1.0
def train_batches():
    for i in range(0, 64, 16):
        yield X[i:i + 16], Y[i:i + 16]
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranger")
    loader = folder / "loader.py"
    loader.write_text(_LOADER)
    b = GraphBuilder(0)
    x = b.input("x", [16, 1, 8, 8])
    t = b.conv_bn_relu(x, 6, name="conv1")
    model = b.model([b.gemm(b.flatten(b.gap(t)), 2, name="fc")])
    return model, DataSource(loader, model_input_specs(model)), folder


def test_finetune_with_ranger_lowers_the_loss(tiny, tmp_path):
    model, source, _ = tiny
    log = tmp_path / "log.jsonl"
    # β2 = 0.99: RAdam's rectification warms up over about 2 / (1 − β2) steps, which with
    # the default 0.999 is far longer than a test can run.
    options = TrainOptions(finetune_steps=40, learning_rate=0.05, optimizer="ranger",
                           lr_schedule="constant", log=str(log), ranger={"beta2": 0.99})
    tuned = trainer.finetune(model, source, options, "cross-entropy", None, 40)
    losses = [json.loads(line)["task_loss"] for line in log.read_text().splitlines()]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:4])
    before = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: onnx.numpy_helper.to_array(i) for i in tuned.graph.initializer}
    conv_w = next(n.input[1] for n in model.graph.node if n.op_type == "Conv")
    assert not np.allclose(before[conv_w], after[conv_w])


def test_ranger_state_survives_a_checkpoint(tiny, tmp_path):
    model, source, _ = tiny
    paths = build_training_artifacts(model, tmp_path / "art", trainable=None, frozen=None,
                                     loss="cross-entropy", output_name=model.graph.output[0].name,
                                     cost_output=None, optimizer="ranger")
    settings = RangerSettings(lookahead_steps=3)
    layouts = weight_layouts(model)
    batches = list(source.train())

    def session(checkpoint=None):
        return TrainingSession(paths, learning_rate=0.01, checkpoint=checkpoint,
                               ranger=Ranger(list(paths.trainable), layouts, settings))

    straight = session()
    for batch in batches * 2:  # 8 steps: lookahead syncs at 3 and 6, rectified from 6
        straight.train_step(batch.inputs, batch.labels)
    first = session()
    for batch in batches:
        first.train_step(batch.inputs, batch.labels)
    first.save_checkpoint(str(tmp_path / "ort.ckpt"))
    resumed = session(str(tmp_path / "ort.ckpt"))
    assert resumed.ranger.t == 4
    for batch in batches:
        resumed.train_step(batch.inputs, batch.labels)
    for name, value in straight.parameters().items():
        np.testing.assert_allclose(resumed.value(name), value, rtol=1e-5, atol=1e-6)


def test_structure_learning_leaves_the_gates_to_their_own_optimizer(tiny):
    from onnxmorph.training.ranger import make_ranger

    model, _, _ = tiny
    names = [i.name for i in model.graph.initializer]
    ranger = make_ranger(TrainOptions(optimizer="ranger"), model, names, skip=names[:1])
    assert ranger.names == names[1:] and ranger.settings == RangerSettings()
    assert make_ranger(TrainOptions(optimizer="adamw"), model, names) is None
