"""--reinit: PyTorch's initialisation of a fresh module, on the structure as it is."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxmorph.rewrite.reinit import reinitialize


def _model() -> onnx.ModelProto:
    """Conv(64←32, 3×3, bias) → BN → Relu → GAP → Flatten → Gemm(transB, 40←64) →
    MatMul(40→48) + Add(bias) → LayerNorm → Gemm(no transB, 48→10); a Reshape constant."""
    rng = np.random.default_rng(0)

    def init(name, value, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(value, dtype), name)

    inits = [
        init("conv.W", rng.normal(3, 1, (64, 32, 3, 3))), init("conv.B", rng.normal(3, 1, 64)),
        init("bn.s", rng.normal(3, 1, 64)), init("bn.b", rng.normal(3, 1, 64)),
        init("bn.m", rng.normal(3, 1, 64)), init("bn.v", rng.uniform(2, 3, 64)),
        init("fc1.W", rng.normal(3, 1, (40, 64))), init("fc1.B", rng.normal(3, 1, 40)),
        init("mm.W", rng.normal(3, 1, (40, 48))), init("mm.B", rng.normal(3, 1, 48)),
        init("ln.s", rng.normal(3, 1, 48)), init("ln.b", rng.normal(3, 1, 48)),
        init("fc2.W", rng.normal(3, 1, (48, 10))), init("fc2.B", rng.normal(3, 1, 10)),
        init("shape", [-1, 48], np.int64),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "conv.W", "conv.B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc1.W", "fc1.B"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "mm.W"], ["m"]),
        helper.make_node("Add", ["m", "mm.B"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["a2"]),
        helper.make_node("LayerNormalization", ["a2", "ln.s", "ln.b"], ["l"], axis=-1),
        helper.make_node("Gemm", ["l", "fc2.W", "fc2.B"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "reinit", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


# name → PyTorch's fan_in: conv Cin·kh·kw, Linear in_features (either layout).
FAN_IN = {"conv": 32 * 9, "fc1": 64, "mm": 40, "fc2": 48}


@pytest.mark.parametrize("layer", sorted(FAN_IN))
def test_weights_and_biases_are_kaiming_uniform(layer):
    after = _values(reinitialize(_model(), seed=3).model)
    bound = 1 / np.sqrt(FAN_IN[layer])
    for name in (f"{layer}.W", f"{layer}.B"):
        value = after[name].astype(np.float64)
        assert np.abs(value).max() <= bound
        if value.size >= 500:  # U(-b, b): mean 0, variance b²/3, reaches the bound
            assert abs(value.mean()) < 0.05 * bound
            assert value.var() == pytest.approx(bound ** 2 / 3, rel=0.08)
            assert np.abs(value).max() > 0.97 * bound
    # a = sqrt(5): PyTorch's kaiming_uniform_ bound gain·sqrt(3 / fan_in) is 1/sqrt(fan_in)
    gain = np.sqrt(2.0 / (1 + 5))
    assert gain * np.sqrt(3 / FAN_IN[layer]) == pytest.approx(bound)


def test_normalisations_and_other_constants():
    result = reinitialize(_model(), seed=0)
    after, before = _values(result.model), _values(_model())
    for name, value in {"bn.s": 1, "bn.b": 0, "bn.m": 0, "bn.v": 1, "ln.s": 1, "ln.b": 0}.items():
        np.testing.assert_array_equal(after[name], np.full(after[name].shape, value, np.float32))
    np.testing.assert_array_equal(after["shape"], before["shape"])  # not a weight
    assert result.to_dict() == {"weights": 4, "biases": 4, "normalisation_parameters": 6}


def test_structure_is_unchanged_and_the_model_runs():
    import onnxruntime as ort

    seed = _model()
    model = reinitialize(seed, seed=0).model
    assert [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in seed.graph.node]
    assert {i.name: (tuple(i.dims), i.data_type) for i in model.graph.initializer} == \
        {i.name: (tuple(i.dims), i.data_type) for i in seed.graph.initializer}
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.ones((2, 32, 6, 6), np.float32)})[0]
    assert out.shape == (2, 10) and np.isfinite(out).all()
    assert seed.graph.initializer[0].raw_data != model.graph.initializer[0].raw_data
    # the caller's model is not modified
    assert _values(seed)["bn.s"].tolist() == _values(_model())["bn.s"].tolist()


def test_seeded_and_deterministic():
    a, b = _values(reinitialize(_model(), 5).model), _values(reinitialize(_model(), 5).model)
    c = _values(reinitialize(_model(), 6).model)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["conv.W"], c["conv.W"])
