"""The layer-kind registry: every kind has every facet, every consumer reads it, and each kind
slices a small graph to exactly the seed with the removed channels unused, and grows without
changing what it computes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxmorph import report
from onnxmorph.graph import analyze
from onnxmorph.graph.handlers import handler_for
from onnxmorph.graph.layers import LAYER_KINDS, Role, WeightLayout, weight_layer_ops
from onnxmorph.rewrite import dead_branches, slice_ops
from onnxmorph.rewrite.grow import grow_channels
from onnxmorph.training import gates
from tests.onnx_builders import GraphBuilder, group_of
from tests.rewrite._oracles import prune_half
from tests.rewrite._support import assert_close, run

# A representative weight shape per kind that has one: [out/in channel layout] of each.
SAMPLE_WEIGHTS = {"Conv": (8, 4, 3, 3), "ConvTranspose": (4, 8, 2, 2), "Gemm": (4, 8),
                  "MatMul": (4, 8)}


@pytest.mark.parametrize("op_type", sorted(LAYER_KINDS))
def test_every_kind_has_every_facet(op_type):
    kind = LAYER_KINDS[op_type]
    node = helper.make_node(op_type, ["x", "w"], ["y"])
    assert handler_for(node) is not None, "no channel handler"
    assert kind.activation == 0 and kind.channel_axis in ("first", "last")
    assert kind.activation_axis(4) in (1, 3)
    assert all(isinstance(role, Role) and index != kind.activation
               for index, role in kind.per_channel.items())
    if kind.bias is not None:
        assert kind.bias in kind.per_channel
    if kind.weight is None:
        assert kind.positions is None and kind.per_channel, "a weight-free kind slices nothing"
        return
    assert kind.positions in ("output", "input")
    layout = kind.weight_layout(node, SAMPLE_WEIGHTS[op_type])
    assert isinstance(layout, WeightLayout)
    assert {layout.out_axis, layout.in_axis} == {0, 1}
    assert layout.out_channels == 8 and layout.in_channels == 4 and layout.kernel >= 1
    assert layout.output_channel_l1(np.ones(SAMPLE_WEIGHTS[op_type])).shape == (8,)
    # The slicer, the gates, dead-branch removal and the report all know the kind.
    assert op_type in slice_ops._RULES
    assert op_type in gates._CONSUMERS and op_type in dead_branches._LAYERS
    assert op_type in report._LAYER_OPS


def test_consumers_list_exactly_the_weight_layers():
    assert set(weight_layer_ops()) == {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    assert set(gates._CONSUMERS) == set(weight_layer_ops())


def test_grouped_layouts_select_per_group_and_keep_depthwise_whole():
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], group=2)
    layout = LAYER_KINDS["ConvTranspose"].weight_layout(node, (4, 3, 2, 2))  # Cin 4, Cout 6
    assert (layout.in_channels, layout.out_channels, layout.grouped_axis) == (4, 6, 1)
    out_mask = np.array([1, 0, 1, 1, 0, 1], bool)  # tied across the two groups
    selection = layout.selection(None, out_mask)
    np.testing.assert_array_equal(selection[1], [True, False, True])
    weight = np.arange(48, dtype=float).reshape(4, 3, 2, 2)
    l1 = layout.output_channel_l1(weight)
    np.testing.assert_allclose(l1[4], np.abs(weight[2:, 1]).sum())
    depthwise = LAYER_KINDS["Conv"].weight_layout(
        helper.make_node("Conv", ["x", "w"], ["y"], group=4), (8, 1, 3, 3))
    assert depthwise.depthwise
    in_mask = np.array([1, 0, 1, 1], bool)
    assert list(depthwise.selection(in_mask, np.repeat(in_mask, 2))) == [0]
    assert depthwise.groups_after(in_mask) == 3


# ------------------------------------------------------------------ one small graph per kind
def _graph(body) -> onnx.ModelProto:
    b = GraphBuilder(seed=11)
    x = b.input("x", [1, 3, 6, 6])
    feat = b.conv(x, 8, name="feat")
    return b.model([b.conv(body(b, feat), 4, name="head")])


def _matmul(b, x):
    t = b.transpose(x, [0, 2, 3, 1])
    y = b.node("MatMul", [t, b.const(b.rng.normal(0, 0.5, (8, 6)), "mm.W")], name="layer")
    return b.transpose(b.add(y, b.const(b.rng.normal(0, 0.1, 6))), [0, 3, 1, 2])


def _gemm(b, x, trans_b):
    flat = b.flatten(b.gap(x))
    w = b.const(b.rng.normal(0, 0.5, (6, 8) if trans_b else (8, 6)), "gemm.W")
    y = b.node("Gemm", [flat, w, b.const(b.rng.normal(0, 0.1, 6))], name="layer",
               transB=trans_b)
    return b.reshape(y, [1, 6, 1, 1])


KINDS = {  # body, tensor whose group loses half its channels
    "Conv": (lambda b, x: b.conv(x, 6, name="layer"), "layer"),
    "Conv-grouped": (lambda b, x: b.conv(x, 6, group=2, name="layer"), "layer"),
    "Conv-depthwise": (lambda b, x: b.conv(x, 16, group=8, name="layer"), "feat"),
    "ConvTranspose": (lambda b, x: b.conv_transpose(x, 6, name="layer"), "layer"),
    "ConvTranspose-grouped": (lambda b, x: b.conv_transpose(x, 6, group=2, name="layer"),
                              "layer"),
    "ConvTranspose-depthwise": (lambda b, x: b.conv_transpose(x, 16, group=8, name="layer"),
                                "feat"),
    "Gemm": (lambda b, x: _gemm(b, x, 0), "layer"),
    "Gemm-transB": (lambda b, x: _gemm(b, x, 1), "layer"),
    "MatMul": (_matmul, "layer"),
    "BatchNormalization": (lambda b, x: b.bn(x, name="layer"), "feat"),
    "InstanceNormalization": (lambda b, x: b.instance_norm(x, name="layer"), "feat"),
    "PRelu": (lambda b, x: b.node("PRelu", [x, b.const(b.rng.uniform(0, 0.3, (8, 1, 1)))],
                                  name="layer"), "feat"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_slices_to_the_seed_with_removed_channels_unused(kind):
    body, tensor = KINDS[kind]
    seed = _graph(body)
    _, _, pruned = prune_half(seed, tensor)
    before = {i.name: tuple(i.dims) for i in seed.graph.initializer}
    after = {i.name: tuple(i.dims) for i in pruned.graph.initializer}
    layer = next(n for n in pruned.graph.node if n.name == "layer")
    constants = [n for n in layer.input[1:] if n in after]
    assert constants and any(after[n] != before.get(n) for n in constants), (before, after)
    values = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    assert all(values[n].dtype == np.float32 for n in constants)


@pytest.mark.parametrize("kind", ["Conv", "Conv-depthwise", "ConvTranspose-depthwise", "MatMul",
                                  "Gemm", "Gemm-transB", "BatchNormalization"])
def test_each_kind_grows_without_changing_the_function(kind):
    body, tensor = KINDS[kind]
    seed = _graph(body)
    analysis = analyze(seed)
    group = group_of(analysis, tensor)
    grown = grow_channels(analysis, {group.id: 3})
    assert grown.added == {group.id: 3}, grown.skipped
    onnx.checker.check_model(grown.model, full_check=True)
    assert group_of(analyze(grown.model), tensor).channels == group.channels + 3
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    assert_close(run(grown.model, feeds), run(seed, feeds), f"{kind} grown vs seed")
