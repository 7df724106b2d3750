import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.differentiable_ops import make_differentiable, non_differentiable_nodes
from onnxmorph.training.session import TrainingSession

SHAPE = [2, 3, 4, 5]


def _single_op(op: str, opset: int, shape=SHAPE, extra_inits=(), **attrs) -> onnx.ModelProto:
    inputs = ["x", *(i.name for i in extra_inits)]
    out_shape = [*shape[:2], 1, 1] if op == "GlobalMaxPool" else shape
    node = helper.make_node(op, inputs, ["y"], name="op", **attrs)
    graph = helper.make_graph(
        [node],
        "single",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        list(extra_inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _slope() -> onnx.TensorProto:
    return numpy_helper.from_array(np.array([0.1, -0.5, 2.0], np.float32).reshape(3, 1, 1), "s")


CASES = [
    ("HardSwish", {}, ()),
    ("HardSigmoid", {}, ()),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, ()),
    ("PRelu", {}, (_slope(),)),
    ("Softplus", {}, ()),
    ("Elu", {"alpha": 0.7}, ()),
    ("Selu", {}, ()),
    ("GlobalMaxPool", {}, ()),
]


@pytest.mark.parametrize("opset", [13, 17, 21])
@pytest.mark.parametrize(("op", "attrs", "inits"), CASES, ids=[c[0] for c in CASES])
def test_rewrite_matches_original(op, attrs, inits, opset):
    if op == "HardSwish" and opset < 14:
        pytest.skip("HardSwish exists from opset 14")
    rng = np.random.default_rng(0)
    # Wide range so every branch (clip bounds, negative side, Softplus overflow) is hit.
    x = (rng.normal(size=SHAPE) * 5).astype(np.float32)
    x.flat[:3] = [100.0, -100.0, 0.0]
    model = _single_op(op, opset, extra_inits=inits, **attrs)
    rewritten = make_differentiable(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert all(n.op_type != op for n in rewritten.graph.node)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_rewrite_returns_copy_and_keeps_other_nodes():
    model = _single_op("HardSwish", 17)
    rewritten = make_differentiable(model)
    assert [n.op_type for n in model.graph.node] == ["HardSwish"]
    assert rewritten.graph.output[0].name == "y"
    untouched = make_differentiable(_single_op("Relu", 17))
    assert [n.op_type for n in untouched.graph.node] == ["Relu"]


def test_global_max_pool_with_dynamic_spatial_size_is_left_and_reported():
    model = _single_op("GlobalMaxPool", 17, shape=["N", 3, "H", "W"])
    rewritten = make_differentiable(model)
    assert [n.op_type for n in rewritten.graph.node] == ["GlobalMaxPool"]
    assert non_differentiable_nodes(rewritten) == ["op (GlobalMaxPool)"]


def test_hardswish_model_trains(conv_net, toy_data, tmp_path):
    x, y = toy_data
    paths = build_training_artifacts(
        conv_net("HardSwish", with_cost=False),
        tmp_path,
        trainable=None,
        frozen=None,
        loss="cross-entropy",
        output_name="logits",
        cost_output=None,
    )
    session = TrainingSession(paths, learning_rate=0.02)
    losses = [session.train_step({"x": x}, y).loss for _ in range(25)]
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize(("op", "attrs", "inits"), CASES, ids=[c[0] for c in CASES])
def test_rewrite_has_working_cpu_gradient(op, attrs, inits, tmp_path):
    # Scale the input by a trainable weight so the gradient must flow through the rewrite.
    weight = numpy_helper.from_array(np.full([1, 3, 1, 1], 0.5, np.float32), "w")
    out_shape = [2, 3, 1, 1] if op == "GlobalMaxPool" else SHAPE
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["xw"], name="scale"),
        helper.make_node(op, ["xw", *(i.name for i in inits)], ["y"], name="op", **attrs),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [weight, *inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    paths = build_training_artifacts(
        model,
        tmp_path,
        trainable=["w"],
        frozen=[],
        loss="mse",
        output_name="y",
        cost_output=None,
    )
    session = TrainingSession(paths, learning_rate=0.1)
    x = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32) * 3
    target = np.zeros(out_shape, np.float32)
    session.train_step({"x": x}, target)
    assert not np.allclose(session.parameters()["w"], 0.5)
