"""Damaged files that pass protobuf parsing: one clear error, never an internal one
(cases found by tests/test_fuzz.py's longer run, benchmarks/RESULTS_fuzz.md)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxmorph.errors import UnsupportedModelError
from onnxmorph.graph import load_model


def _conv_model(weight: onnx.TensorProto, node_name: str = "conv") -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name=node_name)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_initializer_whose_data_does_not_fill_its_dims_is_refused():
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    weight.raw_data = weight.raw_data[:-8]  # two floats short
    with pytest.raises(UnsupportedModelError, match="initializer 'w' does not hold the data"):
        load_model(_conv_model(weight))


@pytest.mark.parametrize("text", [b"Conv", b"g"])  # an op type, the graph's name
def test_a_name_that_is_not_utf8_is_refused_in_one_line(text):
    model = _conv_model(numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"))
    data = model.SerializeToString().replace(text, text[:-1] + b"\xc3", 1)
    damaged = onnx.ModelProto()
    damaged.ParseFromString(data)
    with pytest.raises(UnsupportedModelError, match="UTF-8|not valid ONNX"):
        load_model(damaged)


def test_a_node_name_that_is_not_utf8_is_refused_at_load_not_where_it_is_printed():
    # Fuzz case 432: the checker passed such a name and `analyze` failed printing it.
    model = _conv_model(numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"),
                        node_name="first_conv")
    damaged = onnx.ModelProto()
    damaged.ParseFromString(model.SerializeToString().replace(b"first_conv", b"first_co\xe4v"))
    with pytest.raises(UnsupportedModelError, match="NodeProto.name that is not UTF-8"):
        load_model(damaged)


def test_a_reshape_whose_shapes_disagree_is_a_boundary_not_a_crash():
    """Shape inference on a damaged export can give a Reshape more output elements than
    input ones (fuzzed BERT and ViT exports); laying the unit ids over it raised ValueError."""
    import onnxmorph

    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
             helper.make_node("Reshape", ["h", "shape"], ["r"], name="split_heads"),
             helper.make_node("ReduceSum", ["r"], ["y"], keepdims=0, name="sum")]
    inits = [numpy_helper.from_array(np.ones((6, 8), np.float32), "w"),
             numpy_helper.from_array(np.array([1, 4, 4, 4], np.int64), "shape")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    analysis = onnxmorph.analyze(model)
    assert analysis.loaded.shapes["h"] == (1, 4, 8) and analysis.loaded.shapes["r"] == (1, 4, 4, 4)
    reasons = [g.reason for g in analysis.groups if not g.prunable]
    assert any("turns 32 elements into 64" in (r or "") for r in reasons), reasons
