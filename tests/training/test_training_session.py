import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from onnxmorph.errors import DataError, TrainingError
from onnxmorph.training.artifacts import ArtifactPaths, build_training_artifacts
from onnxmorph.training.session import TrainingSession


def _build(model, tmp_path, **kw):
    args = dict(
        trainable=None,
        frozen=None,
        loss="cross-entropy",
        output_name="logits",
        cost_output="onnxmorph_cost",
    )
    args.update(kw)
    return build_training_artifacts(model, tmp_path, **args)


def _infer(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"x": x})[0]


def test_defaults_pick_weights_and_bn_stats(conv_net, tmp_path):
    paths = _build(conv_net(), tmp_path)
    # coef only feeds the cost output: a cost-model constant, never trained.
    assert set(paths.trainable) == {
        "conv.W",
        "conv.B",
        "bn.scale",
        "bn.bias",
        "fc.W",
        "fc.B",
        "gate",
    }
    assert paths.frozen == ("bn.mean", "bn.var")
    assert (paths.cost_index, paths.output_index) == (2, 3)
    assert ArtifactPaths.load(tmp_path) == paths


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_loss_decreases_and_updated_model_carries_weights(conv_net, toy_data, tmp_path, opset):
    x, y = toy_data
    model = conv_net(opset=opset)
    session = TrainingSession(_build(model, tmp_path), learning_rate=0.02)
    results = [session.train_step({"x": x}, y, lam=0.0) for _ in range(30)]
    assert results[-1].task_loss < 0.6 * results[0].task_loss
    assert results[0].output.shape == (32, 2)

    trained = session.updated_model(model)
    assert [n.name for n in trained.graph.node] == [n.name for n in model.graph.node]
    evaluated = session.eval_step({"x": x}, y, lam=0.0)
    # Inference with the copied-back weights matches the eval graph (inference-mode BN).
    np.testing.assert_allclose(_infer(trained, x), evaluated.output, rtol=1e-4, atol=1e-4)
    accuracy = (evaluated.output.argmax(1) == y).mean()
    assert accuracy > 0.9


def test_batchnorm_running_stats_update_and_persist(conv_net, toy_data, tmp_path):
    x, y = toy_data
    model = conv_net()
    session = TrainingSession(_build(model, tmp_path), learning_rate=0.01)
    for _ in range(3):
        session.train_step({"x": x}, y, lam=0.0)
    params = session.parameters()
    assert not np.allclose(params["bn.mean"], 0.0)
    assert not np.allclose(params["bn.var"], 1.0)
    trained = {i.name: i for i in session.updated_model(model).graph.initializer}
    np.testing.assert_array_equal(numpy_helper.to_array(trained["bn.mean"]), params["bn.mean"])
    # eval steps use the running stats and leave them alone
    session.eval_step({"x": x}, y, lam=0.0)
    np.testing.assert_array_equal(session.parameters()["bn.mean"], params["bn.mean"])


@pytest.mark.parametrize(("lam", "expect_drop"), [(0.0, False), (5.0, True)])
def test_lam_scales_the_cost_term(conv_net, toy_data, tmp_path, lam, expect_drop):
    x, y = toy_data
    session = TrainingSession(_build(conv_net(), tmp_path), learning_rate=0.05)
    first = session.train_step({"x": x}, y, lam=lam)
    assert first.loss == pytest.approx(first.task_loss + lam * first.cost, rel=1e-5)
    for _ in range(30):
        last = session.train_step({"x": x}, y, lam=lam)
    if expect_drop:
        # Adam moves each gate logit by about lr per step: 30 steps of 0.05 -> ~1.5.
        assert last.cost < 0.6 * first.cost
    else:
        # Without the penalty only the task gradient moves the gates (they may open a bit).
        assert last.cost == pytest.approx(first.cost, rel=0.2)


@pytest.mark.parametrize("loss", ["mse", "distill"])
def test_regression_and_distillation_losses_train(conv_net, toy_data, tmp_path, loss):
    x, _ = toy_data
    teacher_model = conv_net(seed=7, with_cost=False)
    teacher = _infer(teacher_model, x) * 3.0
    session = TrainingSession(
        _build(conv_net(with_cost=False), tmp_path, loss=loss, cost_output=None), 0.02
    )
    first = session.train_step({"x": x}, teacher)
    for _ in range(30):
        last = session.train_step({"x": x}, teacher)
    assert first.cost is None
    assert last.task_loss < 0.7 * first.task_loss


def test_nan_loss_raises_with_step_number(conv_net, toy_data, tmp_path):
    x, y = toy_data
    session = TrainingSession(_build(conv_net(), tmp_path), learning_rate=0.01)
    session.train_step({"x": x}, y, lam=0.0)
    session.train_step({"x": x}, y, lam=0.0)
    before = session.parameters()["conv.W"]
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(TrainingError, match="step 2"):
        session.train_step({"x": bad}, y, lam=0.0)
    np.testing.assert_array_equal(session.parameters()["conv.W"], before)


def test_set_parameter_and_learning_rate(conv_net, toy_data, tmp_path):
    x, y = toy_data
    session = TrainingSession(_build(conv_net(), tmp_path), learning_rate=0.01)
    session.set_parameter("gate", np.full(4, -3.0, np.float32))
    result = session.eval_step({"x": x}, y, lam=1.0)
    expected = float((1 / (1 + np.exp(3.0))) * (1 + 2 + 3 + 4))
    assert result.cost == pytest.approx(expected, rel=1e-5)
    session.set_learning_rate(0.0)
    session.train_step({"x": x}, y, lam=1.0)
    np.testing.assert_allclose(session.parameters()["gate"], -3.0)
    with pytest.raises(TrainingError):
        session.set_parameter("gate", np.zeros(5, np.float32))


def test_bad_batches_and_names_are_reported(conv_net, toy_data, tmp_path):
    x, y = toy_data
    with pytest.raises(TrainingError, match="not a graph output"):
        _build(conv_net(), tmp_path, output_name="nope")
    session = TrainingSession(_build(conv_net(), tmp_path), learning_rate=0.01)
    with pytest.raises(DataError):
        session.train_step({"image": x}, y, lam=0.0)
    with pytest.raises(DataError):
        session.train_step({"x": x[:, :, :4]}, y, lam=0.0)


def test_op_without_gradient_gives_clear_error(conv_net, tmp_path):
    model = conv_net(with_cost=False)
    for node in model.graph.node:
        if node.op_type == "GlobalAveragePool":
            node.op_type = "GlobalMaxPool"
    # Make the spatial size dynamic so the GlobalMaxPool rewrite cannot apply.
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "S"
    with pytest.raises(TrainingError, match="GlobalMaxPool"):
        _build(model, tmp_path, cost_output=None)


def test_rank0_cost_output_is_accepted(conv_net, toy_data, tmp_path):
    # A cost reduced with keepdims=0 is a scalar; the loss graph reshapes it to [1] first.
    x, y = toy_data
    model = conv_net()
    for node in model.graph.node:
        if node.op_type == "ReduceSum":
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("keepdims", 0))
    model.graph.output[1].type.tensor_type.shape.ClearField("dim")
    session = TrainingSession(_build(model, tmp_path), learning_rate=0.05)
    first = session.train_step({"x": x}, y, lam=5.0)
    for _ in range(10):
        last = session.train_step({"x": x}, y, lam=5.0)
    assert last.cost < first.cost
