"""Fine-tuning with labels on a model without BatchNormalization (ORT's cross-entropy gradient
needs the loss node's log-probability output; it failed to build before)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxmorph

_LOADER = """import numpy as np
def train_batches():
    rng = np.random.default_rng(0)
    for _ in range(4):
        yield rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, 4)
"""


def _conv_gemm_model(path) -> None:
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "g")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "no_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def test_l1_with_labelled_finetuning_on_a_model_without_batchnorm(tmp_path):
    _conv_gemm_model(tmp_path / "m.onnx")
    (tmp_path / "loader.py").write_text(_LOADER)
    result = onnxmorph.prune(tmp_path / "m.onnx", method="l1", budget=0.6,
                             data=str(tmp_path / "loader.py"),
                             training={"steps": 2, "finetune_steps": 3})
    assert result.extra["loss"] == "ce+distill"  # the default with labels: CE + KL
    assert 0.0 <= result.extra["accuracy_after"] <= 1.0
    seed = onnx.load(tmp_path / "m.onnx")
    before = {i.name: numpy_helper.to_array(i) for i in seed.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    assert after["g"].shape[1] < before["g"].shape[1]  # sliced, then trained
