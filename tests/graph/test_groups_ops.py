"""One op at a time between two convs: passthrough, sub-ranges, broadcasting and boundaries.

Every graph is x[1,3,8,8] → Conv 'feat' (8 channels) → the op under test → a head. When the
op passes channels through, 'feat' stays a prunable group whose ids the op's output carries;
when it is a boundary, 'feat' is pinned with the op's reason.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxmorph.graph import analyze
from tests.onnx_builders import GraphBuilder, group_of, ids_of

INT64_MAX = 2**63 - 1


def analyze_op(make: Callable[[GraphBuilder, str], str], head: str = "conv", seed: int = 0):
    """x → Conv 'feat' (8) → make(b, feat) → head ('conv': Conv 4, 'gemm': Gemm 4, None)."""
    b = GraphBuilder(seed)
    x = b.input("x", [1, 3, 8, 8])
    out = make(b, b.conv(x, 8, name="feat"))
    if head == "conv":
        out = b.conv(out, 4, name="head")
    elif head == "gemm":
        out = b.gemm(out, 4, name="head")
    return analyze(b.model([out]))


def assert_passthrough(a, tensor: str, source: str = "feat") -> None:
    np.testing.assert_array_equal(ids_of(a, tensor), ids_of(a, source))
    group = group_of(a, tensor)
    assert group is group_of(a, source)
    assert group.prunable, group.reason
    assert tensor in group.tensors


def assert_boundary(a, reason: str, output: str | None = None) -> None:
    feat = group_of(a, "feat")
    assert not feat.prunable
    assert feat.reason == reason
    if output is not None:
        out = group_of(a, output)
        assert out is not feat and not out.prunable and out.reason == reason
        assert not set(ids_of(a, output).tolist()) & set(ids_of(a, "feat").tolist())


# ------------------------------------------------------------------------- unary ops
def _slope(b, x):
    return b.node("PRelu", [x, b.const(np.full((8, 1, 1), 0.1))], name="op")


UNARY = {
    "Relu": lambda b, x: b.node("Relu", [x], name="op"),
    "Clip": lambda b, x: b.node("Clip", [x, b.const(0.0), b.const(6.0)], name="op"),
    "ClipNoBounds": lambda b, x: b.node("Clip", [x], name="op"),
    "LeakyRelu": lambda b, x: b.node("LeakyRelu", [x], name="op", alpha=0.2),
    "PRelu": _slope,
    "Sigmoid": lambda b, x: b.node("Sigmoid", [x], name="op"),
    "HardSigmoid": lambda b, x: b.node("HardSigmoid", [x], name="op", alpha=0.2, beta=0.5),
    "HardSwish": lambda b, x: b.node("HardSwish", [x], name="op"),
    "Tanh": lambda b, x: b.node("Tanh", [x], name="op"),
    "Erf": lambda b, x: b.node("Erf", [x], name="op"),
    "Softplus": lambda b, x: b.node("Softplus", [x], name="op"),
    "Identity": lambda b, x: b.node("Identity", [x], name="op"),
    "Dropout": lambda b, x: b.node("Dropout", [x], name="op"),
    "DropoutWithMask": lambda b, x: b.node("Dropout", [x], ["op", "mask"], name="op")[0],
    "Cast": lambda b, x: b.node("Cast", [x], name="op", to=TensorProto.FLOAT),
    "Elu": lambda b, x: b.node("Elu", [x], name="op"),
    "Softsign": lambda b, x: b.node("Softsign", [x], name="op"),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_ops_pass_channels_through(op):
    a = analyze_op(UNARY[op])
    assert_passthrough(a, "op")
    assert len(a.channels.prunable_groups()) == 1
    if op == "DropoutWithMask":
        assert "mask" not in a.channels.layouts  # a side output carries no channels


def test_prelu_per_channel_slope_params_shrink_with_channels():
    a = analyze_op(_slope)
    alive = a.all_alive()
    alive[ids_of(a, "feat")[:3]] = 0
    assert a.cost.params.by_layer()["op"] == 8
    assert a.cost.params.by_layer(alive)["op"] == 5


# ------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("norm", ["bn", "instance_norm"])
def test_per_channel_norms_pass_through(norm):
    a = analyze_op(lambda b, x: getattr(b, norm)(x, name="norm"))
    assert_passthrough(a, "norm")
    per_channel = 4 if norm == "bn" else 2
    assert a.cost.params.by_layer()["norm"] == per_channel * 8
    alive = a.all_alive()
    alive[ids_of(a, "feat")[:2]] = 0
    assert a.cost.params.by_layer(alive)["norm"] == per_channel * 6
    assert "norm" in group_of(a, "feat").layers


# ------------------------------------------------------------------------- broadcasting
def test_add_per_channel_constant_keeps_group():
    a = analyze_op(lambda b, x: b.add(x, b.const(np.ones((8, 1, 1))), name="op"))
    assert_passthrough(a, "op")
    assert a.cost.params.by_layer()["op"] == 8
    alive = a.all_alive()
    alive[ids_of(a, "feat")[0]] = 0
    assert a.cost.params.by_layer(alive)["op"] == 7


def test_add_vector_constant_aligns_with_width_not_channels():
    # [1,8,8,8] + [8]: numpy broadcasting aligns the [8] with W, not with the 8 channels.
    a = analyze_op(lambda b, x: b.add(x, b.const(np.arange(8.0)), name="op"))
    assert a.loaded.shapes["op"] == (1, 8, 8, 8)
    assert_passthrough(a, "op")
    alive = a.all_alive()
    alive[ids_of(a, "feat")[:4]] = 0
    # The constant is indexed by W: it must not shrink when channels go.
    assert a.cost.params.by_layer(alive)["op"] == 8


def test_mul_by_one_channel_activation_pins_it():
    def make(b, x):
        attn = b.sigmoid(b.conv("x", 1, name="attn"), name="attn_sig")  # [1,1,8,8]
        return b.mul(x, attn, name="op")

    a = analyze_op(make)
    assert_passthrough(a, "op")
    attn = group_of(a, "attn")
    assert attn is not group_of(a, "feat")
    assert not attn.prunable and attn.reason == "broadcast over all channels by 'op'"
    assert attn.channels == 1


def test_add_of_two_activations_merges_their_groups():
    def make(b, x):
        return b.add(b.relu(x, name="r"), b.conv("x", 8, name="other"), name="op")

    a = analyze_op(make)
    assert group_of(a, "other") is group_of(a, "feat")
    np.testing.assert_array_equal(ids_of(a, "other"), ids_of(a, "feat"))
    assert group_of(a, "feat").channels == 8


def test_add_of_pooled_activation_merges_with_feature_map():
    # [1,8,1,1] + [1,8,8,8]: the pooled tensor has the same channels, broadcast over space.
    def make(b, x):
        return b.add(x, b.conv(b.gap(b.conv("x", 5, name="side")), 8, k=1, name="pooled"),
                     name="op")

    a = analyze_op(make)
    assert group_of(a, "pooled") is group_of(a, "feat")
    assert group_of(a, "side") is not group_of(a, "feat")
    assert group_of(a, "side").prunable


def test_add_mixing_channels_with_another_axis_is_a_boundary():
    # Channels of a [1,8,8,8] aligned against W of a transposed copy: not one layout.
    def make(b, x):
        t = b.transpose(b.conv("x", 8, name="other"), [0, 3, 2, 1], name="t")
        return b.add(x, t, name="op")

    a = analyze_op(make)
    assert_boundary(a, "Add 'op' mixes channels across axes", output="op")
    assert not group_of(a, "other").prunable


# ------------------------------------------------------------------------- pooling
POOLS = {
    "MaxPool": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "AveragePool": dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    "LpPool": dict(kernel_shape=[2, 2], p=2),
    "GlobalAveragePool": {},
    "GlobalMaxPool": {},
    "GlobalLpPool": {},
}


@pytest.mark.parametrize("op", sorted(POOLS))
def test_pooling_passes_channels_through(op):
    a = analyze_op(lambda b, x: b.node(op, [x], name="pool", **POOLS[op]))
    assert_passthrough(a, "pool")
    assert a.loaded.shapes["pool"][1] == 8


# ------------------------------------------------------------------------- Pad, Resize
def test_spatial_pad_passes_through():
    pads = [0, 0, 1, 2, 0, 0, 1, 2]
    a = analyze_op(lambda b, x: b.node("Pad", [x, b.ints(pads)], name="pad"))
    assert a.loaded.shapes["pad"] == (1, 8, 10, 12)
    assert_passthrough(a, "pad")


def test_pad_on_channel_axis_is_a_boundary():
    pads = [0, 2, 0, 0, 0, 0, 0, 0]
    a = analyze_op(lambda b, x: b.node("Pad", [x, b.ints(pads)], name="pad"))
    assert a.loaded.shapes["pad"] == (1, 10, 8, 8)
    assert_boundary(a, "Pad 'pad' changes the channel axis", output="pad")
    assert group_of(a, "pad").channels == 10


@pytest.mark.parametrize("by", ["scales", "sizes"])
def test_resize_passes_through(by):
    def make(b, x):
        if by == "scales":
            inputs = [x, "", b.const([1.0, 1.0, 2.0, 2.0])]
        else:
            inputs = [x, "", "", b.ints([1, 8, 16, 16])]
        return b.node("Resize", inputs, name="up", mode="nearest")

    a = analyze_op(make)
    assert a.loaded.shapes["up"] == (1, 8, 16, 16)
    assert_passthrough(a, "up")


# ------------------------------------------------------------------------- Split, Slice
def test_split_on_channel_axis_gives_sub_ranges():
    def make(b, x):
        low, high = b.node("Split", [x, b.ints([3, 5])], ["low", "high"], name="split", axis=1)
        return b.concat([b.conv(low, 4, name="h1"), b.conv(high, 4, name="h2")], name="cat")

    a = analyze_op(make)
    feat = ids_of(a, "feat")
    np.testing.assert_array_equal(ids_of(a, "low"), feat[:3])
    np.testing.assert_array_equal(ids_of(a, "high"), feat[3:])
    assert group_of(a, "low") is group_of(a, "high") is group_of(a, "feat")
    assert group_of(a, "feat").prunable
    # h1 sees only the first 3 channels.
    assert a.cost.macs.by_layer()["h1"] == 64 * 4 * 3 * 9
    alive = a.all_alive()
    alive[feat[[0, 5]]] = 0
    assert a.cost.macs.by_layer(alive)["h1"] == 64 * 4 * 2 * 9
    assert a.cost.macs.by_layer(alive)["h2"] == 64 * 4 * 4 * 9


def test_split_equal_parts_without_sizes():
    def make(b, x):
        parts = b.node("Split", [x], ["p0", "p1"], name="split", axis=1)
        return b.add(parts[0], parts[1], name="sum")

    a = analyze_op(make)
    feat = ids_of(a, "feat")
    # Adding the halves ties channel j with channel j + 4.
    np.testing.assert_array_equal(feat[:4], feat[4:])
    np.testing.assert_array_equal(ids_of(a, "sum"), feat[:4])
    assert group_of(a, "feat").channels == 4 and group_of(a, "feat").prunable


def test_split_on_spatial_axis_passes_through():
    def make(b, x):
        top, bottom = b.node("Split", [x, b.ints([3, 5])], ["top", "bottom"], name="split",
                             axis=2)
        return b.concat([top, bottom], axis=2, name="cat")

    a = analyze_op(make)
    for name in ("top", "bottom", "cat"):
        assert_passthrough(a, name)


@pytest.mark.parametrize(
    "starts, ends, expected",
    [([2], [6], slice(2, 6)), ([2], [INT64_MAX], slice(2, None)), ([-3], [INT64_MAX],
                                                                    slice(-3, None)),
     ([0], [-2], slice(0, -2))],
)
def test_slice_on_channel_axis_gives_sub_range(starts, ends, expected):
    a = analyze_op(lambda b, x: b.node(
        "Slice", [x, b.ints(starts), b.ints(ends), b.ints([1])], name="sl"))
    np.testing.assert_array_equal(ids_of(a, "sl"), ids_of(a, "feat")[expected])
    assert a.loaded.shapes["sl"][1] == ids_of(a, "sl").size
    assert group_of(a, "sl") is group_of(a, "feat") and group_of(a, "feat").prunable


def test_slice_on_spatial_axes_passes_through():
    a = analyze_op(lambda b, x: b.node(
        "Slice", [x, b.ints([1, 0]), b.ints([5, 4]), b.ints([2, -1])], name="sl"))
    assert a.loaded.shapes["sl"] == (1, 8, 4, 4)
    assert_passthrough(a, "sl")


def test_slice_on_channels_and_space_together():
    a = analyze_op(lambda b, x: b.node(
        "Slice", [x, b.ints([1, 4]), b.ints([4, 8]), b.ints([2, 1])], name="sl"))
    assert a.loaded.shapes["sl"] == (1, 4, 3, 8)
    np.testing.assert_array_equal(ids_of(a, "sl"), ids_of(a, "feat")[4:8])


def test_strided_channel_slice_is_a_boundary():
    a = analyze_op(lambda b, x: b.node(
        "Slice", [x, b.ints([0]), b.ints([8]), b.ints([1]), b.ints([2])], name="sl"))
    assert_boundary(a, "Slice 'sl' takes a strided or shuffled channel range", output="sl")


def test_gather_on_channel_axis_picks_ids():
    a = analyze_op(lambda b, x: b.node("Gather", [x, b.ints([5, 1, 1])], name="g", axis=1))
    np.testing.assert_array_equal(ids_of(a, "g"), ids_of(a, "feat")[[5, 1, 1]])
    assert group_of(a, "g") is group_of(a, "feat")


def test_gather_on_spatial_axis_passes_through():
    a = analyze_op(lambda b, x: b.node("Gather", [x, b.ints([0, 2])], name="g", axis=2))
    assert_passthrough(a, "g")


# ------------------------------------------------------------------------- reductions
def test_reduce_mean_over_space_keepdims():
    a = analyze_op(lambda b, x: b.node("ReduceMean", [x], name="r", axes=[2, 3], keepdims=1))
    assert a.loaded.shapes["r"] == (1, 8, 1, 1)
    assert a.channels.layouts["r"].axes == (1,)
    assert_passthrough(a, "r")


@pytest.mark.parametrize("axes", [[2, 3], [-1, -2]])
def test_reduce_mean_over_space_without_keepdims(axes):
    a = analyze_op(lambda b, x: b.node("ReduceMean", [x], name="r", axes=axes, keepdims=0),
                   head="gemm")
    assert a.loaded.shapes["r"] == (1, 8)
    assert a.channels.layouts["r"].axes == (1,)
    assert_passthrough(a, "r")
    assert a.cost.macs.by_layer()["head"] == 8 * 4


def test_reduce_over_batch_without_keepdims_shifts_channel_axis():
    a = analyze_op(lambda b, x: b.node("ReduceMax", [x], name="r", axes=[0], keepdims=0),
                   head=None)
    assert a.loaded.shapes["r"] == (8, 8, 8)
    assert a.channels.layouts["r"].axes == (0,)
    np.testing.assert_array_equal(ids_of(a, "r"), ids_of(a, "feat"))
    assert group_of(a, "feat").reason == "reaches graph output 'r'"


def test_reduce_sum_axes_as_input():
    a = analyze_op(lambda b, x: b.node("ReduceSum", [x, b.ints([2, 3])], name="r"))
    assert_passthrough(a, "r")


@pytest.mark.parametrize("attrs", [dict(axes=[1]), dict(axes=[1, 2], keepdims=0), {}])
def test_reduce_over_channel_axis_is_a_boundary(attrs):
    a = analyze_op(lambda b, x: b.node("ReduceMean", [x], name="r", **attrs), head=None)
    assert_boundary(a, "ReduceMean 'r' reduces over the channel axis")


# ------------------------------------------------------------------------- mixing ops
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_over_channels_is_a_boundary(op):
    a = analyze_op(lambda b, x: b.node(op, [x], name="sm", axis=1))
    assert_boundary(a, f"{op} 'sm' mixes values across channels", output="sm")
    assert group_of(a, "sm").channels == 8


@pytest.mark.parametrize("axis", [None, -1, 2])
def test_softmax_over_space_passes_through(axis):
    attrs = {} if axis is None else {"axis": axis}
    a = analyze_op(lambda b, x: b.node("Softmax", [x], name="sm", **attrs))
    assert_passthrough(a, "sm")


def test_lrn_is_a_boundary():
    a = analyze_op(lambda b, x: b.node("LRN", [x], name="lrn", size=3))
    assert_boundary(a, "LRN 'lrn' normalises each channel by its neighbours", output="lrn")


@pytest.mark.parametrize("op_type", ["MyCustomOp", "Relu"])
def test_custom_domain_op_is_a_boundary(op_type):
    # Even a custom op named like a known one must not be passed through.
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    feat = b.conv(x, 8, name="feat")
    b.node(op_type, [feat], name="custom", domain="com.example")
    head = b.conv(feat, 4, name="head")
    model = b.model([head], check=False)
    # The custom op's output is a graph output so its shape is declared.
    model.graph.output.append(helper.make_tensor_value_info("custom", TensorProto.FLOAT,
                                                            [1, 8, 8, 8]))
    a = analyze(model, allow_uncounted=True)  # its MACs are unknown: listed, not guessed
    assert [u.node for u in a.uncounted] == ["custom"]
    reason = f"unsupported op {op_type} 'custom'"
    assert_boundary(a, reason, output="custom")
    assert op_type in group_of(a, "feat").reason
    assert not a.channels.prunable_groups()


# ------------------------------------------------------------------------- shapes
def test_squeeze_unsqueeze_follow_the_channel_axis():
    def make(b, x):
        sq = b.node("Squeeze", [b.gap(x), b.ints([2, 3])], name="sq")  # [1, 8]
        return b.node("Unsqueeze", [sq, b.ints([0])], name="unsq")  # [1, 1, 8]

    a = analyze_op(make, head=None)
    assert a.channels.layouts["sq"].axes == (1,)
    assert a.channels.layouts["unsq"].axes == (2,)
    np.testing.assert_array_equal(ids_of(a, "unsq"), ids_of(a, "feat"))


def test_transpose_to_channels_last():
    a = analyze_op(lambda b, x: b.transpose(x, [0, 2, 3, 1], name="nhwc"), head=None)
    assert a.channels.layouts["nhwc"].axes == (3,)
    np.testing.assert_array_equal(ids_of(a, "nhwc"), ids_of(a, "feat"))


def test_concat_on_spatial_axis_ties_inputs():
    a = analyze_op(lambda b, x: b.concat([x, b.conv("x", 8, name="other")], axis=3,
                                         name="cat"))
    assert a.loaded.shapes["cat"] == (1, 8, 8, 16)
    assert group_of(a, "other") is group_of(a, "feat")
    assert_passthrough(a, "cat")


def test_concat_with_constant_on_channel_axis_is_a_boundary():
    a = analyze_op(lambda b, x: b.concat([x, b.const(np.zeros((1, 2, 8, 8)))], name="cat"))
    assert_boundary(a, "Concat 'cat' joins a constant along the channel axis", output="cat")


# ------------------------------------------------------------------------- graph inputs/outputs
def test_graph_input_and_output_pin_through_residual_and_side_output():
    b = GraphBuilder()
    x = b.input("x", [1, 8, 8, 8])
    res = b.add(x, b.conv(x, 8, name="c1"), name="res")  # ties c1 to the graph input
    mid = b.relu(b.conv(res, 6, name="c2"), name="mid")  # also a graph output
    y = b.conv(mid, 4, name="y")
    inner = b.relu(b.conv(x, 5, name="c3"))
    z = b.conv(inner, 4, name="z")
    a = analyze(b.model([y, mid, z]))

    assert group_of(a, "c1") is group_of(a, "x")
    assert group_of(a, "c1").reason == "comes from graph input 'x'"
    assert group_of(a, "c2").reason == "reaches graph output 'mid'"
    assert group_of(a, "y").reason == "reaches graph output 'y'"
    assert group_of(a, "z").reason == "reaches graph output 'z'"
    assert [g.id for g in a.channels.prunable_groups()] == [group_of(a, "c3").id]
    for unit in ids_of(a, "x"):
        assert a.channels.pinned[int(unit)] == "comes from graph input 'x'"


def test_keep_mask_reads_alive_units_per_channel():
    a = analyze_op(lambda b, x: b.concat([x, x], name="cat"))
    alive = np.ones(a.channels.num_units, dtype=bool)
    alive[ids_of(a, "feat")[2]] = False
    mask = a.channels.keep_mask("cat", alive)
    expected = np.ones(16, dtype=bool)
    expected[[2, 10]] = False
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(
    "attrs, mixes", [({}, True), ({"axis": 1}, True), ({"axis": 2}, False), ({"axis": -1}, False)]
)
def test_softmax_before_opset_13_covers_every_axis_from_axis_on(attrs, mixes):
    # Opset 11/12 Softmax flattens to 2-D at `axis` (default 1): it mixes all axes after it.
    b = GraphBuilder(opset=11)
    x = b.input("x", [1, 3, 8, 8])
    sm = b.node("Softmax", [b.conv(x, 8, name="feat")], name="sm", **attrs)
    a = analyze(b.model([b.conv(sm, 4, name="head")]))
    if mixes:
        assert_boundary(a, "Softmax 'sm' mixes values across channels", output="sm")
    else:
        assert_passthrough(a, "sm")


@pytest.mark.parametrize("axis, mixes", [(-1, False), (1, True), (2, False)])
def test_layer_normalization_covers_axis_and_after(axis, mixes):
    def make(b, x):
        rank_after = 4 - (axis % 4)
        scale = b.const(np.ones([8] * rank_after))
        return b.node("LayerNormalization", [x, scale], name="ln", axis=axis)

    a = analyze_op(make)
    if mixes:
        assert_boundary(a, "LayerNormalization 'ln' mixes values across channels", output="ln")
    else:
        assert_passthrough(a, "ln")


# ------------------------------------------------------------------------- opset 18+ spellings
def _analyze_opset(opset: int, make, head: bool = True):
    b = GraphBuilder(opset=opset)
    x = b.input("x", [1, 3, 8, 8])
    out = make(b, b.conv(x, 8, name="feat"))
    if head:
        out = b.conv(out, 4, name="head")
    return analyze(b.model([out]))


def test_opset18_reduce_axes_input():
    a = _analyze_opset(18, lambda b, x: b.node("ReduceMean", [x, b.ints([2, 3])], name="r"))
    assert_passthrough(a, "r")
    a = _analyze_opset(18, lambda b, x: b.node("ReduceMean", [x, b.ints([1])], name="r"))
    assert_boundary(a, "ReduceMean 'r' reduces over the channel axis", output="r")
    a = _analyze_opset(18, lambda b, x: b.node("ReduceMean", [x], name="r",
                                                noop_with_empty_axes=1))
    assert_passthrough(a, "r")


def test_opset18_split_num_outputs_and_pad_axes():
    a = _analyze_opset(18, lambda b, x: b.node("Split", [x], ["s0", "s1"], name="s", axis=1,
                                                num_outputs=2)[1])
    np.testing.assert_array_equal(ids_of(a, "s1"), ids_of(a, "feat")[4:])
    a = _analyze_opset(18, lambda b, x: b.node("Pad", [x, b.ints([1, 1, 1, 1]), "",
                                                        b.ints([2, 3])], name="p"))
    assert_passthrough(a, "p")
    a = _analyze_opset(18, lambda b, x: b.node("Pad", [x, b.ints([0, 2]), "", b.ints([1])],
                                                name="p"))
    assert_boundary(a, "Pad 'p' changes the channel axis", output="p")


def test_concat_with_graph_input_keeps_other_group_prunable():
    a = analyze_op(lambda b, x: b.concat([x, "x"], name="cat"))
    np.testing.assert_array_equal(ids_of(a, "cat"),
                                  np.concatenate([ids_of(a, "feat"), ids_of(a, "x")]))
    assert group_of(a, "feat").prunable
    assert not group_of(a, "x").prunable


@pytest.mark.parametrize("op, attrs, extra", [
    ("DepthToSpace", {"blocksize": 2}, []),
    ("SpaceToDepth", {"blocksize": 2}, []),
    ("Tile", {}, [[1, 2, 1, 1]]),
])
def test_unhandled_default_domain_ops_are_boundaries(op, attrs, extra):
    a = analyze_op(lambda b, x: b.node(op, [x, *[b.ints(e) for e in extra]], name="o",
                                       **attrs))
    assert_boundary(a, f"unsupported op {op} 'o'", output="o")
