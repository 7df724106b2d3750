"""The distilling losses of the training graph, checked against numpy on the same batch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from onnxmorph.errors import TrainingError
from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.session import TrainingSession
from onnxmorph.training.trainer import TrainOptions, class_scores


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def ce_plus_kl(student, labels, teacher, temperature, weight) -> float:
    """(1 - a) * CE(labels, s) + a * T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean."""
    ce = -_log_softmax(student)[np.arange(len(labels)), labels].mean()
    log_t, log_s = _log_softmax(teacher / temperature), _log_softmax(student / temperature)
    kl = (np.exp(log_t) * (log_t - log_s)).sum(axis=1).mean()
    return float((1 - weight) * ce + weight * temperature ** 2 * kl)


def _teacher_logits(conv_net, x):
    teacher = conv_net(seed=7, with_cost=False)
    session = ort.InferenceSession(teacher.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"x": x})[0] * 3.0


def _session(conv_net, tmp_path, loss, **settings):
    paths = build_training_artifacts(conv_net(with_cost=False), tmp_path, trainable=None,
                                     frozen=None, loss=loss, output_name="logits",
                                     cost_output=None, **settings)
    return TrainingSession(paths, learning_rate=0.02)


@pytest.mark.parametrize(("temperature", "weight"), [(1.0, 0.5), (4.0, 0.5), (2.0, 0.2),
                                                     (4.0, 1.0), (3.0, 0.0)])
def test_ce_plus_distill_equals_numpy(conv_net, toy_data, tmp_path, temperature, weight):
    x, y = toy_data
    teacher = _teacher_logits(conv_net, x)
    session = _session(conv_net, tmp_path, "ce+distill", temperature=temperature,
                       distill_weight=weight)
    before = session.parameters()["fc.W"]
    # The step's output and loss come from the same forward pass (before the update).
    result = session.train_step({"x": x}, (y, teacher))
    expected = ce_plus_kl(result.output, y, teacher, temperature, weight)
    assert result.task_loss == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert result.loss == pytest.approx(expected, rel=1e-4, abs=1e-6)
    # The gradient reaches the weights through both terms (a = 1: through KL alone).
    assert not np.allclose(session.parameters()["fc.W"], before)


def test_distill_term_alone_pulls_the_student_to_the_teacher(conv_net, toy_data, tmp_path):
    x, y = toy_data
    teacher = _teacher_logits(conv_net, x)
    session = _session(conv_net, tmp_path, "ce+distill", temperature=4.0, distill_weight=1.0)
    first = session.train_step({"x": x}, (y, teacher))
    for _ in range(40):
        last = session.train_step({"x": x}, (y, teacher))
    assert last.task_loss < 0.5 * first.task_loss


def test_distill_mse_is_mse_to_the_teacher(conv_net, toy_data, tmp_path):
    x, _ = toy_data
    teacher = _teacher_logits(conv_net, x)
    session = _session(conv_net, tmp_path, "distill-mse")
    result = session.train_step({"x": x}, teacher)
    expected = float(np.mean((result.output.astype(np.float64) - teacher) ** 2))
    assert result.task_loss == pytest.approx(expected, rel=1e-4)


def test_distill_at_t1_is_unchanged_kl(conv_net, toy_data, tmp_path):
    x, y = toy_data
    teacher = _teacher_logits(conv_net, x)
    session = _session(conv_net, tmp_path, "distill")
    result = session.train_step({"x": x}, teacher)
    assert result.task_loss == pytest.approx(ce_plus_kl(result.output, y, teacher, 1.0, 1.0),
                                             rel=1e-4)


def test_ce_plus_distill_refuses_a_bare_target(conv_net, toy_data, tmp_path):
    x, y = toy_data
    session = _session(conv_net, tmp_path, "ce+distill")
    with pytest.raises(TrainingError, match=r"\(labels, teacher outputs\)"):
        session.train_step({"x": x}, y)


@pytest.mark.parametrize(("field", "value"), [("distill_temperature", 0.0),
                                              ("distill_temperature", float("nan")),
                                              ("distill_weight", 1.5),
                                              ("distill_weight", -0.1)])
def test_distill_options_are_range_checked(field, value):
    with pytest.raises(TrainingError, match=field.replace("_", "-")):
        TrainOptions(**{field: value})


def test_defaults_are_documented_values():
    options = TrainOptions()
    assert (options.loss, options.distill_temperature, options.distill_weight) == \
        ("auto", 4.0, 0.5)


def test_class_scores_decides_kl_or_mse(conv_net):
    from onnx import TensorProto, helper

    model = conv_net(with_cost=False)
    assert class_scores(model)
    for shape in (["N", 1], ["N", 2, 8, 8], ["N"]):
        model.graph.output[0].CopyFrom(
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape))
        assert not class_scores(model), shape
    model.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5, 1, 1]))
    assert class_scores(model)
