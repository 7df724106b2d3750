"""Slicing every supported pattern: the pruned model is valid, smaller, and computes exactly
what the seed computes with the removed channels zeroed.

Each pattern is a small hand-built graph with He-scaled random weights; a random half of every
prunable group's units is removed (three different random structures per pattern).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxmorph.errors import PruningError
from onnxmorph.graph import analyze
from onnxmorph.rewrite import slice_channels, verify_models
from tests.onnx_builders import group_of, ids_of
from tests.rewrite._support import (
    HeBuilder,
    check_sliced,
    init_value,
    kept,
    nodes_by_name,
    random_alive,
    random_feeds,
    run,
)

INT64_MAX = 2**63 - 1
SEEDS = [0, 1, 2]


# ------------------------------------------------------------------ pattern builders
def conv_bn_chain() -> onnx.ModelProto:
    b = HeBuilder(1)
    t = b.input("x", [1, 3, 8, 8])
    for i, width in enumerate((8, 16, 12)):
        t = b.conv_bn_relu(t, width, name=f"c{i + 1}")
    return b.model([b.conv(t, 4, name="head")])


def residual_chain() -> onnx.ModelProto:
    b = HeBuilder(2)
    t = b.conv_bn_relu(b.input("x", [1, 3, 8, 8]), 8, name="stem")
    for i in range(2):
        h = b.conv_bn_relu(t, 6, name=f"b{i}a")
        h = b.bn(b.conv(h, 8, name=f"b{i}b"))
        t = b.relu(b.add(h, t, name=f"sum{i}"))
    return b.model([b.conv(t, 4, name="head")])


def concat_depthwise(multiplier: int = 1) -> onnx.ModelProto:
    b = HeBuilder(3)
    x = b.input("x", [1, 3, 8, 8])
    left = b.relu(b.conv(x, 6, name="left"))
    right = b.relu(b.conv(x, 10, name="right"))
    t = b.concat([left, right], name="cat")
    t = b.relu(b.bn(b.conv(t, 16 * multiplier, group=16, name="dw")))
    return b.model([b.conv(t, 4, k=1, name="head")])


def se_block() -> onnx.ModelProto:
    b = HeBuilder(4)
    t = b.relu(b.conv(b.input("x", [1, 3, 8, 8]), 16, name="body"))
    s = b.relu(b.conv(b.gap(t), 4, k=1, name="se_reduce"))
    s = b.sigmoid(b.conv(s, 16, k=1, name="se_expand"))
    t = b.mul(t, s, name="excite")
    return b.model([b.conv(t, 4, name="head")])


def flatten_gemm() -> onnx.ModelProto:
    b = HeBuilder(5)
    t = b.maxpool(b.relu(b.conv(b.input("x", [1, 3, 8, 8]), 8, name="c1")))  # [1, 8, 4, 4]
    h = b.relu(b.gemm(b.flatten(t), 12, name="fc1"))
    return b.model([b.gemm(h, 5, name="fc2")])


def reshape_gemm(target=(1, -1)) -> onnx.ModelProto:
    b = HeBuilder(6)
    t = b.maxpool(b.relu(b.conv(b.input("x", [1, 3, 8, 8]), 8, name="c1")))
    h = b.relu(b.gemm(b.reshape(t, list(target), name="flat"), 12, name="fc1"))
    return b.model([b.gemm(h, 5, name="fc2")])


def grouped_conv() -> onnx.ModelProto:
    b = HeBuilder(7)
    t = b.relu(b.conv(b.input("x", [1, 3, 8, 8]), 16, name="c1"))
    t = b.relu(b.conv(t, 8, group=4, name="g4"))  # W [8, 4, 3, 3]
    return b.model([b.conv(t, 4, name="head")])


def channel_shuffle() -> onnx.ModelProto:
    b = HeBuilder(8)
    t = b.relu(b.conv(b.input("x", [1, 3, 8, 8]), 12, name="c1"))
    t = b.reshape(t, [1, 3, 4, 8, 8], name="split_groups")
    t = b.transpose(t, [0, 2, 1, 3, 4], name="shuffle")
    t = b.reshape(t, [1, 12, 8, 8], name="merge_groups")
    return b.model([b.conv(t, 4, name="head")])


def split_channels(mode: str = "sizes") -> onnx.ModelProto:
    b = HeBuilder(9, opset=18 if mode == "num_outputs" else 17)
    t = b.relu(b.conv(b.input("x", [1, 3, 8, 8]), 12, name="c1"))
    if mode == "sizes":
        parts = b.node("Split", [t, b.ints([4, 8])], outputs=2, name="split", axis=1)
    elif mode == "equal":
        parts = b.node("Split", [t], outputs=2, name="split", axis=1)
    else:
        parts = b.node("Split", [t], outputs=2, name="split", axis=1, num_outputs=2)
    left = b.relu(b.conv(parts[0], 6, name="left"))
    right = b.relu(b.conv(parts[1], 6, name="right"))
    return b.model([b.conv(b.add(left, right), 4, name="head")])


def slice_channels_model(starts=(2,), ends=(9,), axes=(1,)) -> onnx.ModelProto:
    b = HeBuilder(10)
    t = b.relu(b.conv(b.input("x", [1, 3, 8, 8]), 12, name="c1"))
    s = b.node("Slice", [t, b.ints(list(starts)), b.ints(list(ends)), b.ints(list(axes))],
               name="slice")
    return b.model([b.conv(s, 4, name="head")])


def conv_transpose(group: int = 1) -> onnx.ModelProto:
    b = HeBuilder(11)
    t = b.relu(b.conv(b.input("x", [1, 3, 4, 4]), 8, name="c1"))
    t = b.relu(b.conv_transpose(t, 6, group=group, name="up"))
    return b.model([b.conv(t, 4, name="head")])


def per_channel_constants() -> onnx.ModelProto:
    b = HeBuilder(12)
    rng = np.random.default_rng(12)
    t = b.conv(b.input("x", [1, 3, 8, 8]), 8, name="c1")
    t = b.mul(t, b.const(rng.uniform(0.5, 1.5, (1, 8, 1, 1)), "scale"), name="scale_mul")
    t = b.add(t, b.const(rng.normal(0, 0.3, (8, 1, 1)), "shift"), name="shift_add")
    t = b.relu(t)
    return b.model([b.conv(t, 4, name="head")])


def prelu() -> onnx.ModelProto:
    b = HeBuilder(13)
    rng = np.random.default_rng(13)
    t = b.conv(b.input("x", [1, 3, 8, 8]), 8, name="c1")
    t = b.node("PRelu", [t, b.const(rng.uniform(0.05, 0.5, (8, 1, 1)), "slope")], name="prelu")
    return b.model([b.conv(t, 4, name="head")])


def gather_channels() -> onnx.ModelProto:
    b = HeBuilder(15)
    t = b.relu(b.conv(b.input("x", [1, 3, 8, 8]), 8, name="c1"))
    g = b.node("Gather", [t, b.ints([6, 0, 2, 3, -1, 5])], name="gather", axis=1)
    return b.model([b.conv(g, 4, name="head")])


def resize_and_pad() -> onnx.ModelProto:
    b = HeBuilder(16)
    t = b.relu(b.conv(b.input("x", [1, 3, 4, 4]), 8, name="c1"))
    t = b.node("Resize", [t, "", "", b.ints([1, 8, 8, 8])], name="resize", mode="nearest")
    t = b.node("Pad", [t, b.ints([0, 0, 1, 1, 0, 0, 1, 1])], name="pad")
    return b.model([b.conv(t, 4, name="head")])


PATTERNS = {
    "conv_bn_chain": conv_bn_chain,
    "residual_chain": residual_chain,
    "concat_depthwise": concat_depthwise,
    "concat_depthwise_x2": lambda: concat_depthwise(multiplier=2),
    "se_block": se_block,
    "flatten_gemm": flatten_gemm,
    "reshape_n_minus1_gemm": reshape_gemm,
    "reshape_0_minus1_gemm": lambda: reshape_gemm((0, -1)),
    "reshape_explicit_gemm": lambda: reshape_gemm((1, 128)),
    "grouped_conv": grouped_conv,
    "channel_shuffle": channel_shuffle,
    "split_sizes": split_channels,
    "split_equal": lambda: split_channels("equal"),
    "split_num_outputs": lambda: split_channels("num_outputs"),
    "slice_range": slice_channels_model,
    "slice_to_end": lambda: slice_channels_model((-8,), (INT64_MAX,)),
    "slice_negative_end": lambda: slice_channels_model((0,), (-3,)),
    "slice_channels_and_height": lambda: slice_channels_model((2, 1), (9, 7), (1, 2)),
    "conv_transpose": conv_transpose,
    "conv_transpose_group2": lambda: conv_transpose(group=2),
    "per_channel_add_mul": per_channel_constants,
    "prelu_per_channel": prelu,
    "gather_channels": gather_channels,
    "resize_sizes_and_pad": resize_and_pad,
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_slice_pattern_matches_zeroed_seed(pattern, seed):
    analysis = analyze(PATTERNS[pattern]())
    assert analysis.channels.prunable_groups(), "nothing to prune: the pattern is not covered"
    alive = random_alive(analysis, seed)
    assert not alive.all()
    check_sliced(analysis, alive)


# ------------------------------------------------------------------ what each pattern does
def _sliced(model: onnx.ModelProto, seed: int = 0):
    analysis = analyze(model)
    alive = random_alive(analysis, seed)
    return analysis, alive, slice_channels(analysis, alive).model


def _weight(model: onnx.ModelProto, node: str) -> np.ndarray:
    return init_value(model, nodes_by_name(model)[node].input[1])


def _attr(model: onnx.ModelProto, node: str, name: str):
    for attr in nodes_by_name(model)[node].attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return None


def test_conv_chain_weights_are_the_kept_rows_and_columns():
    analysis, alive, pruned = _sliced(conv_bn_chain())
    seed_w = analysis.loaded.initializers["c2.W"]
    in_keep = alive[ids_of(analysis, "c1")]
    out_keep = alive[ids_of(analysis, "c2")]
    np.testing.assert_array_equal(_weight(pruned, "c2"), seed_w[out_keep][:, in_keep])
    bn = nodes_by_name(pruned)[nodes_by_name(analysis.loaded.model)["bn_2"].name]
    np.testing.assert_array_equal(init_value(pruned, bn.input[4]),
                                  analysis.loaded.initializers["bn_2.var"][out_keep])
    # The head's outputs are the graph output: untouched.
    assert _weight(pruned, "head").shape[0] == 4


def test_residual_blocks_share_one_group_and_slice_together():
    analysis, alive, pruned = _sliced(residual_chain())
    group = group_of(analysis, "stem")
    for tensor in ("b0b", "b1b", "sum0", "sum1"):
        assert group_of(analysis, tensor) is group
    width = int(alive[ids_of(analysis, "stem")].sum())
    assert width < 8
    for conv in ("stem", "b0b", "b1b"):
        assert _weight(pruned, conv).shape[0] == width
    for conv in ("b0a", "b1a", "head"):
        assert _weight(pruned, conv).shape[1] == width


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_after_concat_gets_a_smaller_group_count(multiplier):
    analysis, alive, pruned = _sliced(concat_depthwise(multiplier))
    cat = alive[ids_of(analysis, "cat")]
    assert cat[:6].sum() < 6 and cat[6:].sum() < 10  # both concat inputs were pruned
    assert _attr(pruned, "dw", "group") == int(cat.sum())
    assert _weight(pruned, "dw").shape == (int(cat.sum()) * multiplier, 1, 3, 3)
    np.testing.assert_array_equal(
        _weight(pruned, "dw"), analysis.loaded.initializers["dw.W"][np.repeat(cat, multiplier)])


def test_se_block_expand_follows_the_body():
    analysis, alive, pruned = _sliced(se_block())
    assert group_of(analysis, "se_expand") is group_of(analysis, "body")
    assert group_of(analysis, "se_reduce") is not group_of(analysis, "body")
    body = int(alive[ids_of(analysis, "body")].sum())
    reduce = int(alive[ids_of(analysis, "se_reduce")].sum())
    assert _weight(pruned, "se_reduce").shape[:2] == (reduce, body)
    assert _weight(pruned, "se_expand").shape[:2] == (body, reduce)


@pytest.mark.parametrize("builder", [flatten_gemm, reshape_gemm,
                                     lambda: reshape_gemm((0, -1)),
                                     lambda: reshape_gemm((1, 128))])
def test_gemm_after_flatten_loses_whole_channel_blocks(builder):
    analysis, alive, pruned = _sliced(builder())
    channels = alive[ids_of(analysis, "c1")]
    features = np.repeat(channels, 16)  # each channel is a 4x4 block of features
    seed_w = analysis.loaded.initializers["fc1.W"]
    out_keep = alive[ids_of(analysis, "fc1")]
    np.testing.assert_array_equal(_weight(pruned, "fc1"), seed_w[out_keep][:, features])
    reshape = nodes_by_name(pruned).get("flat")
    if reshape is not None:
        target = init_value(pruned, reshape.input[1])
        original = analysis.loaded.initializers[reshape.input[1]]
        expected = original.copy()
        if original[1] != -1:
            expected[1] = int(features.sum())
        np.testing.assert_array_equal(target, expected)


def test_grouped_conv_keeps_equal_groups():
    analysis, alive, pruned = _sliced(grouped_conv())
    per_group_in = alive[ids_of(analysis, "c1")].reshape(4, 4)
    assert (per_group_in == per_group_in[0]).all()  # the same index in every group
    per_group_out = alive[ids_of(analysis, "g4")].reshape(4, 2)
    assert (per_group_out == per_group_out[0]).all()
    weight = _weight(pruned, "g4")
    assert _attr(pruned, "g4", "group") == 4
    assert weight.shape[:2] == (4 * int(per_group_out[0].sum()), int(per_group_in[0].sum()))


def test_channel_shuffle_reshapes_are_rewritten():
    analysis, alive, pruned = _sliced(channel_shuffle())
    keep = alive[ids_of(analysis, "c1")].reshape(3, 4)
    assert (keep == keep[0]).all()
    per_group = int(keep[0].sum())
    nodes = nodes_by_name(pruned)
    np.testing.assert_array_equal(init_value(pruned, nodes["split_groups"].input[1]),
                                  [1, 3, per_group, 8, 8])
    np.testing.assert_array_equal(init_value(pruned, nodes["merge_groups"].input[1]),
                                  [1, 3 * per_group, 8, 8])


@pytest.mark.parametrize("mode", ["sizes", "equal", "num_outputs"])
def test_split_sizes_follow_the_kept_channels(mode):
    analysis, alive, pruned = _sliced(split_channels(mode))
    node = nodes_by_name(pruned)["split"]
    first = 4 if mode == "sizes" else 6
    keep = alive[ids_of(analysis, "c1")]
    sizes = init_value(pruned, node.input[1])
    np.testing.assert_array_equal(sizes, [keep[:first].sum(), keep[first:].sum()])
    assert _attr(pruned, "split", "num_outputs") is None


@pytest.mark.parametrize("starts,ends,axes,python", [
    ((2,), (9,), (1,), slice(2, 9)),
    ((-8,), (INT64_MAX,), (1,), slice(-8, None)),
    ((0,), (-3,), (1,), slice(0, -3)),
    ((2, 1), (9, 7), (1, 2), slice(2, 9)),
])
def test_slice_bounds_index_the_kept_channels(starts, ends, axes, python):
    analysis, alive, pruned = _sliced(slice_channels_model(starts, ends, axes))
    keep = alive[ids_of(analysis, "c1")]
    head_in = int(keep[python].sum())
    assert _weight(pruned, "head").shape[1] == head_in
    feeds = random_feeds(pruned, analysis.loaded.input_shapes)
    # The Slice output has exactly the kept channels of the slice's range, in order.
    sliced_out = onnx.helper.make_tensor_value_info("slice", onnx.TensorProto.FLOAT, None)
    probe = onnx.ModelProto()
    probe.CopyFrom(pruned)
    probe.graph.output.append(sliced_out)
    seed_probe = onnx.ModelProto()
    seed_probe.CopyFrom(analysis.loaded.model)
    seed_probe.graph.output.append(sliced_out)
    got = run(probe, feeds)[1]
    c1 = np.arange(12)[python][keep[python]]  # seed channel of each kept slice channel
    want = run(seed_probe, feeds)[1][:, np.searchsorted(np.arange(12)[python], c1)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_weights(group):
    analysis, alive, pruned = _sliced(conv_transpose(group))
    in_keep = alive[ids_of(analysis, "c1")]
    out_keep = alive[ids_of(analysis, "up")]
    weight = _weight(pruned, "up")
    seed_w = analysis.loaded.initializers["up.W"]  # [8, 6/group, 2, 2]
    if group == 1:
        np.testing.assert_array_equal(weight, seed_w[in_keep][:, out_keep])
    else:
        assert (in_keep.reshape(2, 4) == in_keep[:4]).all()
        assert (out_keep.reshape(2, 3) == out_keep[:3]).all()
        np.testing.assert_array_equal(weight, seed_w[in_keep][:, out_keep[:3]])
    assert _attr(pruned, "up", "group") in (None, group)


def test_per_channel_constants_are_sliced():
    analysis, alive, pruned = _sliced(per_channel_constants())
    keep = alive[ids_of(analysis, "c1")]
    nodes = nodes_by_name(pruned)
    np.testing.assert_array_equal(init_value(pruned, nodes["scale_mul"].input[1]),
                                  analysis.loaded.initializers["scale"][:, keep])
    np.testing.assert_array_equal(init_value(pruned, nodes["shift_add"].input[1]),
                                  analysis.loaded.initializers["shift"][keep])


def test_prelu_slope_is_sliced():
    analysis, alive, pruned = _sliced(prelu())
    keep = alive[ids_of(analysis, "c1")]
    np.testing.assert_array_equal(
        init_value(pruned, nodes_by_name(pruned)["prelu"].input[1]),
        analysis.loaded.initializers["slope"][keep])


def test_gather_indices_point_at_the_kept_channels():
    analysis, alive, pruned = _sliced(gather_channels())
    keep = alive[ids_of(analysis, "c1")]
    old = np.array([6, 0, 2, 3, 7, 5])
    survivors = old[keep[old]]
    position = np.cumsum(keep) - 1
    np.testing.assert_array_equal(
        init_value(pruned, nodes_by_name(pruned)["gather"].input[1]), position[survivors])


def test_resize_sizes_follow_the_channels():
    analysis, alive, pruned = _sliced(resize_and_pad())
    width = int(alive[ids_of(analysis, "c1")].sum())
    np.testing.assert_array_equal(
        init_value(pruned, nodes_by_name(pruned)["resize"].input[3]), [1, width, 8, 8])


# ------------------------------------------------------------------ nothing, all, pinned
def test_all_alive_is_the_seed():
    analysis = analyze(residual_chain())
    alive = np.ones(analysis.channels.num_units, dtype=bool)
    pruned = slice_channels(analysis, alive).model
    seed = analysis.loaded.model
    assert [tuple(i.dims) for i in pruned.graph.initializer] == [
        tuple(i.dims) for i in seed.graph.initializer]
    feeds = random_feeds(seed, analysis.loaded.input_shapes)
    np.testing.assert_array_equal(run(pruned, feeds)[0], run(seed, feeds)[0])


@pytest.mark.parametrize("pattern", ["conv_bn_chain", "residual_chain", "se_block",
                                     "grouped_conv", "channel_shuffle", "split_sizes"])
def test_removing_a_whole_group_removes_its_branch_or_keeps_one_channel(pattern):
    analysis = analyze(PATTERNS[pattern]())
    for group in analysis.channels.prunable_groups():
        alive = np.ones(analysis.channels.num_units, dtype=bool)
        alive[group.units] = False
        result = slice_channels(analysis, alive)
        kept = int(result.alive[group.units].sum())
        assert kept in (0, 1)
        assert (result.alive | ~alive).all()  # nothing else came back
        onnx.checker.check_model(result.model, full_check=True)
        assert verify_models(analysis, result.model).passed


@pytest.mark.parametrize("pattern", ["conv_bn_chain", "flatten_gemm", "split_sizes"])
def test_removing_a_pinned_unit_is_refused(pattern):
    analysis = analyze(PATTERNS[pattern]())
    pinned = sorted(analysis.channels.pinned)
    assert pinned
    # One pinned unit of the input and one of the output, each alone and with others dead.
    for unit in (pinned[0], pinned[-1]):
        alive = random_alive(analysis, 0)
        alive[unit] = False
        with pytest.raises(PruningError, match="must stay"):
            slice_channels(analysis, alive)


def test_a_mask_of_the_wrong_size_is_refused():
    analysis = analyze(conv_bn_chain())
    with pytest.raises(PruningError, match="channel units"):
        slice_channels(analysis, np.ones(analysis.channels.num_units + 1, dtype=bool))


# ------------------------------------------------------------------ shared initializers
def _shared_weight_model() -> onnx.ModelProto:
    """Two convs read the same input with the same weight initializer 'W', then go separate
    ways to two outputs, so their output channels are two groups sliced independently."""
    b = HeBuilder(14)
    x = b.input("x", [1, 3, 8, 8])
    shared = b.weight([8, 3, 3, 3], "W")
    outs = []
    for side in ("a", "b"):
        t = b.node("Conv", [x, shared], name=f"conv_{side}", kernel_shape=[3, 3],
                   pads=[1, 1, 1, 1])
        outs.append(b.conv(b.relu(t), 4, name=f"head_{side}"))
    return b.model(outs)


@pytest.mark.parametrize("untouched", [None, "b"])
def test_shared_initializer_is_sliced_per_user(untouched):
    analysis = analyze(_shared_weight_model())
    a_units, b_units = ids_of(analysis, "conv_a"), ids_of(analysis, "conv_b")
    assert group_of(analysis, "conv_a") is not group_of(analysis, "conv_b")
    alive = np.ones(analysis.channels.num_units, dtype=bool)
    alive[a_units[[0, 2, 3, 7]]] = False
    if untouched is None:
        alive[b_units[[1, 4]]] = False
    # A weight shared by layers that keep different channels is stored twice after slicing;
    # the bilinear cost model counts it once, so only MACs are compared exactly.
    result = check_sliced(analysis, alive, manual=False, exact_params=False)
    pruned = result.model
    seed_w = analysis.loaded.initializers["W"]
    np.testing.assert_array_equal(_weight(pruned, "conv_a"), seed_w[alive[a_units]])
    np.testing.assert_array_equal(_weight(pruned, "conv_b"), seed_w[alive[b_units]])
    assert _weight(pruned, "conv_a").shape[0] == 4
    assert _weight(pruned, "conv_b").shape[0] == kept(analysis, alive, "conv_b", 8)
    names = [i.name for i in pruned.graph.initializer]
    assert len(names) == len(set(names))
    assert nodes_by_name(pruned)["conv_a"].input[1] != nodes_by_name(pruned)["conv_b"].input[1]
