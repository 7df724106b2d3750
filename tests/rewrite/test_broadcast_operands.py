"""Per-channel constants on either operand of a broadcast op are sliced; constants of other ops
are never cut by shape coincidence. Each pruned model is checked against the seed with the
removed channels' consumer weights zeroed (tests/rewrite/_oracles.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxmorph.graph.handlers.base import Layout
from onnxmorph.graph.layers import constant_channel_axis
from tests.onnx_builders import GraphBuilder
from tests.rewrite._oracles import prune_half

C = 8


def _initializer_shapes(model):
    return {i.name: tuple(i.dims) for i in model.graph.initializer}


SHAPES = {"[C,1,1]": (C, 1, 1), "[1,C,1,1]": (1, C, 1, 1), "[C,H,W]": (C, 4, 4)}
OPS = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Where", "PRelu")


def broadcast_model(op: str, shape: tuple[int, ...], constant_first: bool) -> onnx.ModelProto:
    b = GraphBuilder(seed=7)
    x = b.input("x", [1, 3, 4, 4])
    feat = b.conv(x, C, name="feat")
    value = b.rng.uniform(0.5, 1.5, shape) * (1 if op != "Sub" else -1)
    const = b.const(value, "pc")
    if op == "Where":
        cond = b.const(b.rng.random(shape) > 0.5, "cond", dtype=np.bool_)
        inputs = [cond, const, feat] if constant_first else [cond, feat, const]
    elif op == "PRelu":
        inputs = [feat, const]  # the slope is input 1 by definition
    else:
        inputs = [const, feat] if constant_first else [feat, const]
    return b.model([b.conv(b.node(op, inputs, name="op"), 4, name="head")])


# PRelu's slope has a fixed position (input 1); every other op takes the constant either side.
CASES = [(op, shape, first) for op in OPS for shape in SHAPES for first in (True, False)
         if not (op == "PRelu" and first)]


@pytest.mark.parametrize("op, shape, constant_first", CASES)
def test_per_channel_constant_on_either_operand_is_sliced(op, shape, constant_first):
    _, alive, pruned = prune_half(broadcast_model(op, SHAPES[shape], constant_first), "feat")
    shapes = _initializer_shapes(pruned)
    kept = SHAPES[shape][:-3] + (C // 2,) + SHAPES[shape][-2:]
    assert shapes["pc"] == kept
    if op == "Where":
        assert shapes["cond"] == kept


@pytest.mark.parametrize("constant_first", [True, False])
def test_scalar_and_unaligned_constants_stay_whole(constant_first):
    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 3, 4, 4])
    feat = b.conv(x, C, name="feat")
    width = b.const(b.rng.uniform(0.5, 1.5, (1, 1, 1, 4)), "per_width")  # varies along W
    scalar = b.const(np.array([2.0]), "scalar")
    y = b.node("Mul", [width, feat] if constant_first else [feat, width], name="m")
    y = b.node("Sub", [scalar, y] if constant_first else [y, scalar], name="s")
    _, _, pruned = prune_half(b.model([b.conv(y, 4, name="head")]), "feat")
    assert _initializer_shapes(pruned)["per_width"] == (1, 1, 1, 4)
    assert _initializer_shapes(pruned)["scalar"] == (1,)


def test_gemm_bias_of_shape_1_by_n_is_sliced():
    b = GraphBuilder(seed=4)
    x = b.input("x", [1, 3, 4, 4])
    flat = b.flatten(b.gap(b.conv(x, C, name="feat")))
    w = b.const(b.rng.normal(0, 0.5, (12, C)), "fc.W")
    bias = b.const(b.rng.normal(0, 0.5, (1, 12)), "fc.B")
    fc = b.node("Gemm", [flat, w, bias], name="fc", transB=1)
    _, _, pruned = prune_half(b.model([b.gemm(b.relu(fc), 3, name="head")]), "fc")
    assert _initializer_shapes(pruned)["fc.B"] == (1, 6)
    assert _initializer_shapes(pruned)["fc.W"] == (6, C)


def test_reshape_shape_and_slice_axes_of_channel_length_are_not_cut():
    """[N, C] with C = 2: the Reshape target [1, 2] and Slice's starts/ends/axes all have the
    channel count as their length; only the Slice's channel bounds may change."""
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 3, 4, 4])
    feat = b.conv(x, 2, name="feat")
    flat = b.reshape(b.gap(feat), [1, 2], name="flat")
    cut = b.node("Slice", [flat, b.ints([0, 0], "starts"), b.ints([1, 2], "ends"),
                           b.ints([0, 1], "axes")], name="cut")
    analysis, _, pruned = prune_half(b.model([b.gemm(cut, 3, name="head")]), "feat")
    values = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    np.testing.assert_array_equal(values["axes"], [0, 1])
    np.testing.assert_array_equal(values["starts"], [0, 0])
    np.testing.assert_array_equal(values["ends"], [1, 1])
    np.testing.assert_array_equal(values[next(n.input[1] for n in pruned.graph.node
                                              if n.name == "flat")], [1, 1])
    node = next(n for n in analysis.loaded.model.graph.node if n.name == "flat")
    layout = analysis.channels.layouts["flat"]
    assert constant_channel_axis(node, 1, np.array([1, 2]), layout, (1, 2)) is None


def test_roles_decide_not_shapes():
    """A Reshape's target never runs along channels, a Mul operand does on either side."""
    layout = Layout((1,), np.arange(4))
    mul = onnx.helper.make_node("Mul", ["g", "x"], ["y"])
    reshape = onnx.helper.make_node("Reshape", ["x", "s"], ["y"])
    vector = np.ones((4, 1, 1))
    assert constant_channel_axis(mul, 0, vector, layout, (1, 4, 2, 2)) == 0
    assert constant_channel_axis(mul, 1, vector, layout, (1, 4, 2, 2)) == 0
    assert constant_channel_axis(reshape, 1, np.ones(4), layout, (1, 4)) is None


def split_model(opset: int) -> onnx.ModelProto:
    b = GraphBuilder(seed=opset, opset=opset)
    x = b.input("x", [1, 3, 4, 4])
    feat = b.conv(x, C, name="feat")
    scaled = b.node("Mul", [b.const(b.rng.uniform(0.5, 1.5, (C, 1, 1)), "gamma"), feat],
                    name="scale")
    if opset < 13:
        parts = b.node("Split", [scaled], outputs=2, name="split", axis=1, split=[3, 5])
    elif opset < 18:
        parts = b.node("Split", [scaled, b.ints([3, 5], "sizes")], outputs=2, name="split",
                       axis=1)
    else:
        parts = b.node("Split", [scaled], outputs=2, name="split", axis=1, num_outputs=2)
    left, right = (b.conv(p, 4, name=f"head{i}") for i, p in enumerate(parts))
    return b.model([b.add(left, right, name="out")])


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split_and_layer_scale_at_opset(opset):
    analysis, alive, pruned = prune_half(split_model(opset), "feat")
    kept = alive[analysis.channels.layouts["feat"].ids]
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    values = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    sizes = [int(a) for a in next((a.ints for a in split.attribute if a.name == "split"), [])]
    if not sizes:
        sizes = values[split.input[1]].tolist()
    first = 3 if opset < 18 else 4
    assert sizes == [int(kept[:first].sum()), int(kept[first:].sum())]
    assert values["gamma"].shape == (C // 2, 1, 1)
