"""Fixtures for the training backend tests: tiny hand-built models and an isolated cache."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    # onnxruntime may write caches under $XDG_CACHE_HOME; keep tests away from ~/.cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))


def _conv_net(
    activation: str = "Relu", with_cost: bool = True, seed: int = 0, opset: int = 17
) -> onnx.ModelProto:
    """x[N,1,8,8] -> Conv(4) -> BN -> activation -> GAP -> Flatten -> *sigmoid(gate) -> Gemm(2).

    With `with_cost`, a second output `onnxmorph_cost` = sum(sigmoid(gate) * coef), like the
    gating pass inserts (coef is a cost-model constant that must not be trained).
    """
    rng = np.random.default_rng(seed)

    def init(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value.astype(np.float32), name)

    inits = [
        init("conv.W", rng.normal(0, 0.5, (4, 1, 3, 3))), init("conv.B", np.zeros(4)),
        init("bn.scale", np.ones(4)), init("bn.bias", np.zeros(4)),
        init("bn.mean", np.zeros(4)), init("bn.var", np.ones(4)),
        init("fc.W", rng.normal(0, 0.5, (2, 4))), init("fc.B", np.zeros(2)),
        init("gate", np.full(4, 1.0)),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "conv.W", "conv.B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node(
            "BatchNormalization",
            ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
            ["bn"],
            name="bn",
        ),
        helper.make_node(activation, ["bn"], ["act"], name="act"),
        helper.make_node("GlobalAveragePool", ["act"], ["pool"], name="gap"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Sigmoid", ["gate"], ["gate_s"], name="gate_sigmoid"),
        helper.make_node("Mul", ["flat", "gate_s"], ["gated"], name="gate_mul"),
        helper.make_node("Gemm", ["gated", "fc.W", "fc.B"], ["logits"], transB=1, name="fc"),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])]
    if with_cost:
        inits.append(init("coef", np.array([1.0, 2.0, 3.0, 4.0])))
        nodes += [
            helper.make_node("Mul", ["gate_s", "coef"], ["weighted"], name="cost_mul"),
            helper.make_node("ReduceSum", ["weighted"], ["onnxmorph_cost"], keepdims=1),
        ]
        outputs.append(helper.make_tensor_value_info("onnxmorph_cost", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def conv_net() -> Callable[..., onnx.ModelProto]:
    return _conv_net


@pytest.fixture
def toy_data() -> tuple[np.ndarray, np.ndarray]:
    """Separable problem: class 1 images have a brighter top half."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 1, 8, 8)).astype(np.float32)
    y = (np.arange(32) % 2).astype(np.int64)
    x[y == 1, :, :4, :] += 1.5
    return x, y
