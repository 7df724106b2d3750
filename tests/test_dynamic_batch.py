"""A dynamic batch survives loading, pruning and slicing, even through Shape → Reshape chains."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxmorph


def _shape_chain_model() -> onnx.ModelProto:
    """Conv → Relu → Reshape(r, concat(shape(r)[0], -1)) → Gemm, as PyTorch exports flatten."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((10, 8 * 6 * 6)).astype(np.float32), "G"),
        numpy_helper.from_array(np.array(0, np.int64), "i0"),
        numpy_helper.from_array(np.array([0], np.int64), "ax"),
        numpy_helper.from_array(np.array([-1], np.int64), "m1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "ax"], ["bu"]),
        helper.make_node("Concat", ["bu", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "G"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_shape_chain_folds_to_a_batch_independent_reshape():
    loaded = onnxmorph.load_model(_shape_chain_model())
    ops = [n.op_type for n in loaded.model.graph.node]
    assert "Shape" not in ops and "Gather" not in ops
    reshape = next(n for n in loaded.model.graph.node if n.op_type == "Reshape")
    assert loaded.initializers[reshape.input[1]].tolist() == [0, -1]


def test_pruned_shape_chain_model_runs_at_any_batch():
    result = onnxmorph.prune(_shape_chain_model(), method="l1", budget=0.5, verify=True)
    assert result.report()["verify"]["passed"]
    conv = next(i for i in result.model.graph.initializer if i.name == "W")
    assert conv.dims[0] == 4
    session = ort.InferenceSession(result.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)
        assert session.run(None, {"x": x})[0].shape == (batch, 10)
