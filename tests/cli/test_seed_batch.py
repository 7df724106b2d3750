"""Seeds whose batch axis is declared dynamic but is not (fuzz cases 152, 248, 740 and 354 of
benchmarks/bench_fuzz.py): refused before any work as bad input, not blamed on the slicer
after it (the post-conditions verify at two batch sizes)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxmorph.cli.main import cli


def _const(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(
        np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32), name)


def _model(nodes, inits, out_dims) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _squeeze_excite_with_swapped_conv_inputs() -> onnx.ModelProto:
    """The gate conv reads its weight as data and the activation as weight: the gate comes
    out [C, N, 1, 1], and the Mul broadcasts it over axis 0 — only at batch 1."""
    nodes = [
        helper.make_node("Conv", ["x", "w_body"], ["body"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["body"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "w_reduce"], ["reduced"]),
        helper.make_node("Relu", ["reduced"], ["relu"]),
        helper.make_node("Conv", ["w_gate", "relu"], ["gate_logits"]),  # inputs swapped
        helper.make_node("Sigmoid", ["gate_logits"], ["gate"]),
        helper.make_node("Mul", ["body", "gate"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "w_head"], ["y"]),
    ]
    inits = [_const("w_body", 4, 4, 3, 3), _const("w_reduce", 2, 4, 1, 1),
             _const("w_gate", 4, 2, 1, 1), _const("w_head", 3, 4, 1, 1)]
    return _model(nodes, inits, ["a", "b", "c", "d"])


def _gemm_after_flatten_of_axis_0() -> onnx.ModelProto:
    """Flatten(axis=0) folds the batch into the features: Gemm's K matches only at batch 1."""
    nodes = [
        helper.make_node("Conv", ["x", "w_conv"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=0),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["y"], transB=1),
    ]
    inits = [_const("w_conv", 8, 4, 3, 3), _const("w_fc", 5, 8), _const("b_fc", 5)]
    return _model(nodes, inits, ["a", "b"])


@pytest.mark.parametrize("build", [_squeeze_excite_with_swapped_conv_inputs,
                                   _gemm_after_flatten_of_axis_0])
def test_a_seed_that_runs_only_at_batch_1_is_refused_before_slicing(tmp_path, build):
    seed = tmp_path / "seed.onnx"
    onnx.save(build(), str(seed))
    before = seed.read_bytes()
    result = CliRunner().invoke(cli, ["prune", str(seed), "--method", "l1", "-o",
                                      str(tmp_path / "out.onnx")], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "declares a dynamic batch but fails to run at batch 3" in lines[0]
    assert "post-condition" not in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == ["seed.onnx"] and seed.read_bytes() == before


@pytest.mark.parametrize("build", [_squeeze_excite_with_swapped_conv_inputs,
                                   _gemm_after_flatten_of_axis_0])
def test_the_same_seed_at_a_fixed_batch_prunes_and_verifies(tmp_path, build):
    """With the batch fixed in the file there is no second batch to fail: the slice is
    correct (the post-conditions verify it numerically against the zeroed seed)."""
    model = build()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    seed = tmp_path / "seed.onnx"
    onnx.save(model, str(seed))
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(cli, ["prune", str(seed), "--method", "l1", "--budget", "0.6",
                                      "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sum(numpy_helper.to_array(i).size for i in onnx.load(str(out)).graph.initializer) \
        < sum(numpy_helper.to_array(i).size for i in model.graph.initializer)
