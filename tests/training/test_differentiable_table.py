"""Every entry of the differentiable-ops table: same forward values as the original op, and
the rewrite's ONNX Runtime gradient equals the original op's finite-difference gradient."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.differentiable_ops import (
    NON_DIFFERENTIABLE_OPS,
    make_differentiable,
    non_differentiable_nodes,
)
from onnxmorph.training.session import TrainingSession

X = [2, 3, 5, 6]


def _f32(value, name):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _i64(value, name):
    return numpy_helper.from_array(np.asarray(value, np.int64), name)


# (id, op, attrs, extra inputs (initializers or "xw2" for a second scaled input), output shape,
#  opset)
CASES = [
    ("HardSwish", "HardSwish", {}, [], X, 17),
    ("HardSigmoid", "HardSigmoid", {"alpha": 0.3, "beta": 0.4}, [], X, 17),
    ("PRelu", "PRelu", {}, [_f32(np.array([0.1, -0.5, 2.0]).reshape(3, 1, 1), "slope")], X, 17),
    ("Softplus", "Softplus", {}, [], X, 17),
    ("Elu", "Elu", {"alpha": 0.7}, [], X, 17),
    ("Selu", "Selu", {}, [], X, 17),
    ("Mish", "Mish", {}, [], X, 18),
    ("Softsign", "Softsign", {}, [], X, 17),
    ("Celu", "Celu", {"alpha": 0.8}, [], X, 17),
    ("ThresholdedRelu", "ThresholdedRelu", {"alpha": 0.3}, [], X, 17),
    ("Sum", "Sum", {}, ["xw2", "xw2"], X, 17),
    ("LRN", "LRN", {"size": 3, "alpha": 0.5, "beta": 0.75, "bias": 2.0}, [], X, 17),
    ("LRN-size5", "LRN", {"size": 5, "alpha": 0.3}, [], X, 13),
    ("GlobalMaxPool", "GlobalMaxPool", {}, [], [2, 3, 1, 1], 17),
    ("ReduceMax-channels", "ReduceMax", {"axes": [1]}, [], [2, 1, 5, 6], 17),
    ("ReduceMax-input-axes", "ReduceMax", {"keepdims": 0}, [_i64([2, 3], "axes")], [2, 3], 18),
    ("ReduceSumSquare", "ReduceSumSquare", {"axes": [2, 3]}, [], [2, 3, 1, 1], 17),
    ("InstanceNormalization", "InstanceNormalization", {"epsilon": 1e-3},
     [_f32([1.0, 2.0, 0.5], "scale"), _f32([0.0, 0.1, -0.2], "bias")], X, 17),
    ("Pad-reflect", "Pad", {"mode": "reflect"}, [_i64([0, 0, 2, 1, 0, 0, 1, 3], "pads")],
     [2, 3, 8, 10], 17),
    ("Pad-edge", "Pad", {"mode": "edge"}, [_i64([0, 0, 1, 0, 0, 0, 2, 2], "pads")],
     [2, 3, 8, 8], 17),
    ("Pad-wrap", "Pad", {"mode": "wrap"}, [_i64([0, 0, 1, 2, 0, 0, 1, 1], "pads")],
     [2, 3, 7, 9], 19),
    ("Resize-nearest", "Resize", {"mode": "nearest"}, ["", _f32([1, 1, 2, 2], "scales")],
     [2, 3, 10, 12], 17),
    ("Resize-nearest-asymmetric-floor", "Resize",
     {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     ["", _f32([1, 1, 1.5, 2], "scales")], [2, 3, 7, 12], 13),
    ("Resize-linear", "Resize", {"mode": "linear"}, ["", _f32([1, 1, 2, 2], "scales")],
     [2, 3, 10, 12], 17),
    ("Resize-linear-align-corners", "Resize",
     {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
     ["", "", _i64([2, 3, 9, 4], "sizes")], [2, 3, 9, 4], 17),
    ("Dropout", "Dropout", {}, [], X, 17),
    ("ConvTranspose", "ConvTranspose", {"strides": [2, 2], "pads": [1, 0, 0, 1]},
     [_f32(np.linspace(-1, 1, 3 * 4 * 3 * 2).reshape(3, 4, 3, 2), "deconv_w")], [2, 4, 10, 11], 17),
    ("ConvTranspose-grouped", "ConvTranspose",
     {"group": 3, "strides": [1, 2], "dilations": [2, 1], "output_padding": [0, 1],
      "pads": [3, 1, 2, 0]}, [_f32(np.linspace(-1, 1, 3 * 2 * 2 * 2).reshape(3, 2, 2, 2),
                                   "deconv_w"), _f32(np.arange(6), "deconv_b")],
     [2, 6, 2, 12], 17),
]
# Ops of the no-gradient list without an entry: Upsample becomes Resize when the training copy
# is converted to opset 13; the others are named before training (see the test below).
WITHOUT_REWRITE = {"Upsample", "Einsum", "Sign"}


def _model(op, attrs, extra, out_shape, opset, scale_is_input):
    """x → Mul(x, w) [and Mul(x, w2)] → op → y. w scales channels and columns differently,
    so even a per-channel normalisation (InstanceNormalization) depends on it."""
    inits = [_f32(np.full([1, 3, 1, 1], 0.7), "w2")]
    inputs = ["xw"]
    for item in extra:
        if isinstance(item, str):
            inputs.append(item)
        else:
            inits.append(item)
            inputs.append(item.name)
    nodes = [helper.make_node("Mul", ["x", "w"], ["xw"]), helper.make_node("Mul", ["x", "w2"],
                                                                          ["xw2"]),
             helper.make_node(op, inputs, ["y"], name="op", **attrs)]
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, X)]
    w = np.linspace(-1.3, 1.4, 18).astype(np.float32).reshape(1, 3, 1, 6)
    if scale_is_input:
        graph_inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 3, 1, 6]))
    else:
        inits.append(_f32(w, "w"))
    graph = helper.make_graph(nodes, "g", graph_inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model, w


def _inputs():
    rng = np.random.default_rng(3)
    return (rng.normal(size=X) * 2).astype(np.float32), rng.normal(size=X).astype(np.float32)


@pytest.mark.parametrize(("case", "op", "attrs", "extra", "out_shape", "opset"), CASES,
                         ids=[c[0] for c in CASES])
def test_rewrite_matches_forward_and_finite_difference_gradient(
        case, op, attrs, extra, out_shape, opset, tmp_path):
    original, w = _model(op, attrs, extra, out_shape, opset, scale_is_input=True)
    rewritten = make_differentiable(original)
    assert non_differentiable_nodes(rewritten) == []
    assert all(n.op_type != op for n in rewritten.graph.node)
    x, _ = _inputs()
    run = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    run_new = ort.InferenceSession(rewritten.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    expected = run.run(None, {"x": x, "w": w})[0]
    np.testing.assert_allclose(run_new.run(None, {"x": x, "w": w})[0], expected, rtol=1e-5,
                               atol=1e-5)

    # Gradient of mean((y - t)²) w.r.t. w: ORT training on the rewrite vs finite differences
    # of the original op.
    target = np.random.default_rng(4).normal(size=expected.shape).astype(np.float32)
    trainable, _ = _model(op, attrs, extra, out_shape, opset, scale_is_input=False)
    paths = build_training_artifacts(trainable, tmp_path, trainable=["w"], frozen=[],
                                     loss="mse", output_name="y", cost_output=None)
    session = TrainingSession(paths, learning_rate=0.0)
    session.train_step({"x": x}, target)
    gradient = session.gradient("w").reshape(-1)

    def loss(scale):
        y = run.run(None, {"x": x, "w": scale.astype(np.float32)})[0].astype(np.float64)
        return np.mean((y - target) ** 2)

    eps = 1e-3  # small: ThresholdedRelu jumps at alpha, and a jump inside ±eps breaks FD
    # Directional derivatives along a few random directions: cheap, and a wrong entry of the
    # gradient shows up in every direction that touches it.
    directions = np.random.default_rng(5).normal(size=(3, w.size))
    numeric = [(loss(w + eps * d.reshape(w.shape)) - loss(w - eps * d.reshape(w.shape)))
               / (2 * eps) for d in directions]
    analytic = directions @ gradient.astype(np.float64)
    np.testing.assert_allclose(analytic, numeric, rtol=3e-2,
                               atol=2e-3 * np.abs(numeric).max() + 1e-7)


def test_the_table_covers_every_op_without_a_gradient():
    assert {c[1] for c in CASES} | WITHOUT_REWRITE == NON_DIFFERENTIABLE_OPS | {"Pad"}


def test_pad_in_constant_mode_is_left_alone():
    model, _ = _model("Pad", {}, [_i64([0, 0, 1, 1, 0, 0, 1, 1], "pads")], [2, 3, 7, 8], 17,
                      scale_is_input=False)
    assert [n.op_type for n in make_differentiable(model).graph.node][-1] == "Pad"
    assert non_differentiable_nodes(model) == []


def test_cubic_resize_stays_and_is_named():
    model, _ = _model("Resize", {"mode": "cubic"}, ["", _f32([1, 1, 2, 2], "scales")],
                      [2, 3, 10, 12], 17, scale_is_input=False)
    assert non_differentiable_nodes(make_differentiable(model)) == ["op (Resize)"]
