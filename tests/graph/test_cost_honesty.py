"""Honest cost: every op is counted, declared free, or listed as uncounted — never a silent 0."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxmorph.cli.main import cli
from onnxmorph.graph import analyze
from onnxmorph.graph.handlers.base import registered_op_types
from onnxmorph.graph.layers import weight_layer_ops
from onnxmorph.graph.op_costs import _MAC_RULES, NO_MACS, UncountedCostError

RNG = np.random.default_rng(0)


def _init(name, shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, value_info=(), domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits, value_info=list(value_info))
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _custom_between_convs() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mystery", ["a"], ["b"], name="mystery", domain="com.example"),
        helper.make_node("Conv", ["b", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    return _model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [_init("w1", [8, 3, 3, 3]), _init("w2", [4, 8, 3, 3])],
        value_info=[helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 8, 8, 8])],
        domains=["com.example"],
    )


def test_custom_op_is_refused_in_one_line_then_listed_when_allowed(tmp_path):
    path = tmp_path / "custom.onnx"
    onnx.save(_custom_between_convs(), path)
    refused = CliRunner().invoke(cli, ["analyze", str(path)])
    assert refused.exit_code == 2
    assert len(refused.output.strip().splitlines()) == 1
    assert "mystery" in refused.output and "--allow-uncounted" in refused.output

    allowed = CliRunner().invoke(cli, ["analyze", str(path), "--allow-uncounted", "--json"])
    assert allowed.exit_code == 0, allowed.output
    summary = json.loads(allowed.output)
    assert [u["node"] for u in summary["uncounted"]] == ["mystery"]
    # both convs are still counted: 8·3·9 and 4·8·9 multiply-adds per pixel of an 8x8 map
    assert summary["macs"] == 64 * (8 * 3 * 9 + 4 * 8 * 9)
    text = CliRunner().invoke(cli, ["analyze", str(path), "--allow-uncounted"]).output
    assert "NOT COUNTED in MACs: Mystery 'mystery'" in text


def test_prune_refuses_uncounted_and_reports_them_when_allowed(tmp_path):
    path = tmp_path / "custom.onnx"
    onnx.save(_custom_between_convs(), path)
    out = tmp_path / "out.onnx"
    refused = CliRunner().invoke(cli, ["prune", str(path), "--method", "l1", "-o", str(out)])
    assert refused.exit_code == 2 and not out.exists()
    with pytest.raises(UncountedCostError):
        analyze(_custom_between_convs())


def test_op_without_a_rule_is_uncounted():
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv"),
             helper.make_node("ReduceMean", ["a"], ["sq"], axes=[1], keepdims=0),
             helper.make_node("Det", ["sq"], ["y"], name="det")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                   [_init("w", [4, 3, 1, 1])])
    analysis = analyze(model, allow_uncounted=True)
    assert [(u.op_type, u.reason) for u in analysis.uncounted] == [
        ("Det", "no cost rule for this op")]


def test_attention_matmul_and_einsum_count_activation_products():
    b, h, t, d = 2, 3, 5, 4
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("Einsum", ["p", "v"], ["y"], name="av", equation="bhts,bhsd->bhtd"),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [b, h, t, d])
              for n in ("q", "k", "v")]
    model = _model(nodes, inputs,
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, h, t, d])], [])
    analysis = analyze(model)
    # independent count: one multiply-add per (b, h, t, s, d) for QKᵀ and again for AV
    assert analysis.macs == 2 * b * h * t * t * d
    assert analysis.uncounted == []
    by_layer = analysis.cost.macs.by_layer()
    assert by_layer["qk"] == by_layer["av"] == b * h * t * t * d


def test_einsum_with_broadcast_ellipsis_and_implicit_output():
    nodes = [helper.make_node("Einsum", ["a", "w"], ["y"], name="e", equation="...ij,jk"),
             helper.make_node("Relu", ["y"], ["z"])]
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 1, 5, 6])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 1, 5, 7])
    model = _model(nodes, [a], [z], [_init("w", [6, 7])])
    reference = np.einsum("...ij,jk", np.ones((2, 1, 5, 6)), np.ones((6, 7)))
    # every output element sums 6 products
    assert analyze(model).macs == reference.size * 6 == 2 * 5 * 7 * 6


def test_conv_whose_weight_is_a_graph_input_is_counted_from_shapes():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="dyn", pads=[1, 1, 1, 1])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6]),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, [5, 3, 3, 3])]
    model = _model(nodes, inputs,
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 6, 6])], [])
    analysis = analyze(model)
    assert analysis.macs == 36 * 5 * 3 * 9
    assert not analysis.channels.prunable_groups()
    assert any("computed at run time" in (g.reason or "") for g in analysis.groups)
    assert analysis.uncounted == []


def test_every_op_the_analysis_accepts_has_a_cost_rule():
    ruled = NO_MACS | set(_MAC_RULES) | set(weight_layer_ops())
    missing = sorted(set(registered_op_types()) - ruled)
    assert missing == [], f"ops with a channel handler but no cost rule: {missing}"
    assert not (NO_MACS & set(_MAC_RULES)), "an op cannot both cost nothing and have a rule"


def test_no_op_that_multiplies_tensors_is_declared_free():
    assert {"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "QLinearConv"}.isdisjoint(NO_MACS)
