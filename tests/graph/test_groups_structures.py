"""Channel groups of small hand-built networks: chains, residuals, concats, depthwise and
grouped convs, SE blocks, Flatten/Reshape into Gemm, channel shuffle, transposed convs."""

from __future__ import annotations

import numpy as np
import pytest

from onnxmorph.graph import analyze
from tests.onnx_builders import GraphBuilder, conv_chain_model, group_of, groups_of, ids_of

HW = 64  # 8x8 feature maps everywhere below


def alive_without(analysis, units) -> np.ndarray:
    alive = analysis.all_alive()
    alive[np.asarray(units, dtype=np.int64)] = 0.0
    return alive


# ------------------------------------------------------------------------- plain chain
def test_plain_conv_chain_groups_and_pins():
    a = analyze(conv_chain_model((8, 16, 4)))
    assert len(a.groups) == 4
    x, c1, c2, y = (group_of(a, t) for t in ("x", "conv1", "conv2", "y"))
    assert len({x.id, c1.id, c2.id, y.id}) == 4
    assert (x.channels, c1.channels, c2.channels, y.channels) == (3, 8, 16, 4)

    assert not x.prunable and x.reason == "comes from graph input 'x'"
    assert not y.prunable and y.reason == "reaches graph output 'y'"
    assert c1.prunable and c1.reason is None
    assert c2.prunable and c2.reason is None
    assert [g.id for g in a.channels.prunable_groups()] == [c1.id, c2.id]

    # Unit ids are numbered in order of allocation: input first, then each conv's outputs.
    np.testing.assert_array_equal(ids_of(a, "x"), np.arange(3))
    np.testing.assert_array_equal(ids_of(a, "conv1"), np.arange(3, 11))
    np.testing.assert_array_equal(ids_of(a, "relu1"), ids_of(a, "conv1"))
    np.testing.assert_array_equal(ids_of(a, "conv2"), np.arange(11, 27))
    np.testing.assert_array_equal(ids_of(a, "y"), np.arange(27, 31))
    assert a.channels.num_units == 31

    assert set(c1.tensors) == {"conv1", "relu1"}
    assert set(c1.layers) == {"conv1", "conv2"}  # producer and consumer
    assert set(c2.layers) == {"conv2", "y"}
    assert all(a.channels.pinned[u] == "comes from graph input 'x'" for u in range(3))


def test_plain_conv_chain_cost_by_hand():
    a = analyze(conv_chain_model((8, 16, 4)))
    macs = {"conv1": HW * 8 * 3 * 9, "conv2": HW * 16 * 8 * 9, "y": HW * 4 * 16 * 9}
    params = {"conv1": 8 * 3 * 9 + 8, "conv2": 16 * 8 * 9 + 16, "y": 4 * 16 * 9 + 4}
    assert a.macs == sum(macs.values()) == 124416
    assert a.params == sum(params.values()) == 1972
    assert a.cost.macs.by_layer() == pytest.approx(macs)

    c1 = group_of(a, "conv1")
    # Removing conv1's whole group takes conv1 (weights and bias) and conv2's input side away.
    assert a.group_dependent(c1, "flops") == macs["conv1"] + macs["conv2"]
    assert a.group_dependent(c1, "params") == params["conv1"] + 16 * 8 * 9

    # Bilinear: 2 of conv1's 8 channels and 4 of conv2's 16 removed.
    alive = alive_without(a, [*ids_of(a, "conv1")[:2], *ids_of(a, "conv2")[:4]])
    expected = HW * (6 * 3 * 9 + 12 * 6 * 9 + 4 * 12 * 9)
    assert a.cost.macs(alive) == expected
    assert a.cost.params(alive) == (6 * 27 + 6) + (12 * 6 * 9 + 12) + (4 * 12 * 9 + 4)
    # Fractional gates give the expected cost (linear in each form).
    half = np.full(a.channels.num_units, 0.5)
    half[ids_of(a, "x")] = 1.0
    half[ids_of(a, "y")] = 1.0
    assert a.cost.macs(half) == pytest.approx(HW * (4 * 27 + 8 * 4 * 9 + 4 * 8 * 9))

    with pytest.raises(ValueError, match="unknown cost target"):
        a.cost.expr("latency")


def test_to_dict_reports_groups():
    a = analyze(conv_chain_model((8, 16, 4)))
    report = a.to_dict()
    assert report["macs"] == 124416 and report["params"] == 1972
    assert report["input_shapes"] == {"x": [1, 3, 8, 8]}
    assert [g["channels"] for g in report["groups"]] == [3, 8, 16, 4]
    assert [g["prunable"] for g in report["groups"]] == [False, True, True, False]
    assert report["groups"][1]["macs"] == HW * 8 * 27 + HW * 16 * 8 * 9


# ------------------------------------------------------------------------- residual
def residual_builder():
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 3, 8, 8])
    r0 = b.relu(b.conv(x, 8, name="stem"), name="r0")
    t = b.relu(b.conv(r0, 4, name="b1c1"))
    add1 = b.add(r0, b.conv(t, 8, name="b1c2"), name="add1")
    s1 = b.relu(add1, name="s1")
    t = b.relu(b.conv(s1, 4, name="b2c1"))
    add2 = b.add(b.conv(t, 8, name="b2c2"), s1, name="add2")  # residual as second input
    s2 = b.relu(add2, name="s2")
    return b, s2


def test_residual_adds_form_one_group():
    b, s2 = residual_builder()
    a = analyze(b.model([b.conv(s2, 5, name="head")]))
    stream = ("stem", "r0", "b1c2", "add1", "s1", "b2c2", "add2", "s2")
    res = group_of(a, "stem")
    for name in stream:
        assert group_of(a, name) is res
        np.testing.assert_array_equal(ids_of(a, name), ids_of(a, "stem"))
    assert res.prunable and res.channels == 8
    assert set(stream) <= set(res.tensors)
    assert {"stem", "b1c2", "b2c2", "b1c1", "b2c1", "head"} <= set(res.layers)

    inner = [group_of(a, "b1c1"), group_of(a, "b2c1")]
    assert all(g.prunable and g.channels == 4 and g is not res for g in inner)
    assert inner[0] is not inner[1]
    assert len(a.groups) == 5  # x, residual stream, two inner convs, head
    assert len(a.channels.prunable_groups()) == 3

    # Removing one residual unit removes that channel from all five convs that touch it.
    unit = ids_of(a, "stem")[3]
    drop = a.cost.macs() - a.cost.macs(alive_without(a, [unit]))
    assert drop == HW * 9 * (3 + 4 + 4 + 4 + 4 + 5)


def test_residual_concat_with_other_group_then_depthwise():
    b, s2 = residual_builder()
    other = b.relu(b.conv("x", 6, name="side"), name="side_relu")
    cat = b.concat([s2, other], name="cat")
    dw = b.conv(cat, 14, group=14, name="dw")
    dw2 = b.conv(cat, 28, group=14, name="dw2")  # depth multiplier 2
    head = b.conv(b.relu(b.bn(dw, name="dwbn")), 5, k=1, name="head")
    y = b.add(head, b.conv(dw2, 5, k=1, name="head2"), name="y")
    a = analyze(b.model([y]))

    np.testing.assert_array_equal(
        ids_of(a, "cat"), np.concatenate([ids_of(a, "s2"), ids_of(a, "side")])
    )
    res, side = group_of(a, "s2"), group_of(a, "side")
    assert res is not side
    assert [g.id for g in groups_of(a, "cat")] == sorted([res.id, side.id])
    assert res.channels == 8 and side.channels == 6
    assert "cat" in res.tensors and "cat" in side.tensors

    # Depthwise: each output channel is its input channel (times the multiplier).
    np.testing.assert_array_equal(ids_of(a, "dw"), ids_of(a, "cat"))
    np.testing.assert_array_equal(ids_of(a, "dwbn"), ids_of(a, "cat"))
    np.testing.assert_array_equal(ids_of(a, "dw2"), np.repeat(ids_of(a, "cat"), 2))
    assert res.prunable and side.prunable
    assert group_of(a, "head") is group_of(a, "head2") is group_of(a, "y")
    assert len(a.groups) == 6  # x, residual, side, b1c1, b2c1, head outputs

    # Depthwise MACs and params are linear in the alive channels.
    macs = a.cost.macs.by_layer()
    assert macs["dw"] == HW * 9 * 14
    assert macs["dw2"] == HW * 9 * 28
    removed = [*ids_of(a, "s2")[:3], *ids_of(a, "side")[:1]]
    after = a.cost.macs.by_layer(alive_without(a, removed))
    assert after["dw"] == HW * 9 * (14 - 4)
    assert after["dw2"] == HW * 9 * 2 * (14 - 4)
    params = a.cost.params.by_layer(alive_without(a, removed))
    assert params["dw"] == (9 + 1) * 10  # weight + bias per surviving channel
    assert params["dwbn"] == 4 * 10


# ------------------------------------------------------------------------- SE block
def test_squeeze_excitation_merges_expand_with_feature_map():
    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 3, 8, 8])
    feat = b.relu(b.conv(x, 8, name="feat"), name="feat_relu")
    pooled = b.gap(feat, name="gap")
    squeeze = b.relu(b.conv(pooled, 2, k=1, name="squeeze"))
    gate = b.sigmoid(b.conv(squeeze, 8, k=1, name="expand"), name="gate")
    scaled = b.mul(feat, gate, name="scale")
    a = analyze(b.model([b.conv(scaled, 4, name="head")]))

    fm = group_of(a, "feat")
    for name in ("feat_relu", "gap", "expand", "gate", "scale"):
        assert group_of(a, name) is fm
        np.testing.assert_array_equal(ids_of(a, name), ids_of(a, "feat"))
    assert fm.prunable and fm.channels == 8
    assert {"feat", "squeeze", "expand", "head"} <= set(fm.layers)

    sq = group_of(a, "squeeze")
    assert sq is not fm and sq.prunable and sq.channels == 2
    assert len(a.groups) == 4

    # expand's cost is bilinear in (squeeze units) x (feature units).
    assert a.cost.macs.by_layer()["expand"] == 2 * 8
    alive = alive_without(a, [ids_of(a, "squeeze")[0], *ids_of(a, "feat")[:2]])
    assert a.cost.macs.by_layer(alive)["expand"] == 1 * 6


# ------------------------------------------------------------------------- into Gemm
def _head_into_gemm(kind: str):
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 3, 8, 8])
    pooled = b.maxpool(b.relu(b.conv(x, 4, name="feat")), k=4, name="pool")  # [1,4,2,2]
    if kind == "flatten":
        flat = b.flatten(pooled, name="flat")
    else:
        flat = b.reshape(pooled, [1, -1] if kind == "reshape" else [0, -1], name="flat")
    return b.model([b.gemm(flat, 5, name="fc")])


@pytest.mark.parametrize("kind", ["flatten", "reshape", "reshape0"])
def test_flatten_or_reshape_into_gemm(kind):
    a = analyze(_head_into_gemm(kind))
    assert a.loaded.shapes["flat"] == (1, 16)
    layout = a.channels.layouts["flat"]
    assert layout.axes == (1,)
    np.testing.assert_array_equal(layout.ids, np.repeat(ids_of(a, "feat"), 4))
    feat = group_of(a, "flat")
    assert feat is group_of(a, "feat") and feat.prunable and feat.channels == 4

    fc = group_of(a, "fc")
    assert not fc.prunable and fc.reason == "reaches graph output 'fc'" and fc.channels == 5
    assert a.cost.macs.by_layer()["fc"] == 16 * 5
    assert a.cost.params.by_layer()["fc"] == 16 * 5 + 5
    # One conv channel is 2x2 = 4 Gemm input features.
    alive = alive_without(a, ids_of(a, "feat")[:1])
    assert a.cost.macs.by_layer(alive)["fc"] == 12 * 5
    assert a.cost.params.by_layer(alive)["fc"] == 12 * 5 + 5
    assert a.macs == HW * 4 * 27 + 80


def test_matmul_with_constant_weight_makes_new_features():
    b = GraphBuilder(seed=4)
    x = b.input("x", [1, 3, 8, 8])
    flat = b.flatten(b.gap(b.conv(x, 6, name="feat")), name="flat")  # [1, 6]
    mm = b.node("MatMul", [flat, b.weight([6, 10])], name="mm")
    a = analyze(b.model([b.relu(b.conv(x, 2), name="other"), b.add(mm, b.weight([10]))]))
    np.testing.assert_array_equal(ids_of(a, "flat"), ids_of(a, "feat"))
    assert group_of(a, "mm").channels == 10 and group_of(a, "mm").prunable is False
    assert group_of(a, "feat").prunable
    assert a.cost.macs.by_layer()["mm"] == 60


# ------------------------------------------------------------------------- channel shuffle
def test_channel_shuffle_permutes_ids_and_ties_groups():
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 3, 8, 8])
    c = b.conv(x, 8, name="feat")
    split = b.reshape(c, [1, 2, 4, 8, 8], name="split")
    swapped = b.transpose(split, [0, 2, 1, 3, 4], name="swap")
    merged = b.reshape(swapped, [1, 8, 8, 8], name="shuffled")
    a = analyze(b.model([b.conv(merged, 4, name="head")]))

    feat_ids = ids_of(a, "feat")
    # Index j of the first half is one unit with index j of the second half.
    np.testing.assert_array_equal(feat_ids[:4], feat_ids[4:])
    assert len(np.unique(feat_ids)) == 4
    assert group_of(a, "feat").channels == 4 and group_of(a, "feat").prunable

    assert a.channels.layouts["split"].axes == (1, 2)
    np.testing.assert_array_equal(ids_of(a, "split"), feat_ids.reshape(2, 4))
    assert a.channels.layouts["swap"].axes == (1, 2)
    np.testing.assert_array_equal(ids_of(a, "swap"), feat_ids.reshape(2, 4).T)
    perm = np.arange(8).reshape(2, 4).T.ravel()  # output channel k reads input channel perm[k]
    assert a.channels.layouts["shuffled"].axes == (1,)
    np.testing.assert_array_equal(ids_of(a, "shuffled"), feat_ids[perm])
    assert group_of(a, "shuffled") is group_of(a, "feat")

    # Removing one unit removes one channel from each half: 2 of head's 8 inputs.
    alive = alive_without(a, feat_ids[:1])
    assert a.cost.macs.by_layer(alive)["head"] == HW * 4 * 6 * 9


# ------------------------------------------------------------------------- grouped conv
def test_grouped_conv_ties_indices_across_groups():
    b = GraphBuilder(seed=6)
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 8, name="feat"), name="feat_relu")
    g = b.conv(c, 12, group=4, name="gconv")  # weight [12, 2, 3, 3]
    a = analyze(b.model([b.conv(b.relu(g), 4, name="head")]))

    feat = ids_of(a, "feat")
    per_group = feat.reshape(4, 2)
    for row in per_group[1:]:
        np.testing.assert_array_equal(row, per_group[0])  # index j tied across the 4 groups
    assert group_of(a, "feat").channels == 2

    out = ids_of(a, "gconv")
    assert out.size == 12
    np.testing.assert_array_equal(out, np.tile(out[:3], 4))
    assert len(np.unique(out)) == 3
    assert not set(out.tolist()) & set(feat.tolist())  # fresh units
    gc = group_of(a, "gconv")
    assert gc.prunable and gc.channels == 3

    # N*Cout*H*W*(Cin/group)*k*k
    assert a.cost.macs.by_layer()["gconv"] == HW * 12 * 2 * 9
    assert a.cost.params.by_layer()["gconv"] == 12 * 2 * 9 + 12
    alive = alive_without(a, [per_group[0, 0], out[0]])  # 1 of 2 inputs, 2 of 3 outputs per group
    assert a.cost.macs.by_layer(alive)["gconv"] == HW * 8 * 1 * 9
    assert a.cost.params.by_layer(alive)["gconv"] == 8 * 1 * 9 + 8


def test_grouped_conv_with_pinned_input_pins_tied_channels():
    b = GraphBuilder(seed=7)
    x = b.input("x", [1, 4, 8, 8])
    a = analyze(b.model([b.conv(b.conv(x, 8, group=2, name="g"), 2, name="head")]))
    np.testing.assert_array_equal(ids_of(a, "x"), [0, 1, 0, 1])
    assert group_of(a, "x").channels == 2 and not group_of(a, "x").prunable
    np.testing.assert_array_equal(ids_of(a, "g"), np.tile(ids_of(a, "g")[:4], 2))
    assert group_of(a, "g").prunable


# ------------------------------------------------------------------------- ConvTranspose
def test_conv_transpose_makes_fresh_channels():
    b = GraphBuilder(seed=8)
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 4, name="feat"))
    up = b.conv_transpose(c, 6, k=2, stride=2, name="up")  # [1,6,16,16]
    a = analyze(b.model([b.conv(b.relu(up), 2, name="head")]))
    assert a.loaded.shapes["up"] == (1, 6, 16, 16)
    up_group = group_of(a, "up")
    assert up_group.prunable and up_group.channels == 6
    assert up_group is not group_of(a, "feat")
    assert set(up_group.layers) == {"up", "head"}
    # Per input pixel: Cin * Cout * k*k.
    assert a.cost.macs.by_layer()["up"] == HW * 4 * 6 * 4
    assert a.cost.params.by_layer()["up"] == 4 * 6 * 4 + 6
    alive = alive_without(a, [ids_of(a, "feat")[0], *ids_of(a, "up")[:2]])
    assert a.cost.macs.by_layer(alive)["up"] == HW * 3 * 4 * 4
    assert a.cost.macs.by_layer(alive)["head"] == 256 * 2 * 4 * 9


def test_grouped_conv_transpose():
    b = GraphBuilder(seed=9)
    x = b.input("x", [1, 3, 8, 8])
    c = b.conv(x, 4, name="feat")
    up = b.conv_transpose(c, 6, group=2, name="up")  # weight [4, 3, 2, 2]
    a = analyze(b.model([b.conv(up, 2, name="head")]))
    feat = ids_of(a, "feat")
    np.testing.assert_array_equal(feat[:2], feat[2:])
    out = ids_of(a, "up")
    np.testing.assert_array_equal(out, np.tile(out[:3], 2))
    assert group_of(a, "up").channels == 3
    # Cin/group * Cout per input pixel and kernel tap.
    assert a.cost.macs.by_layer()["up"] == HW * 4 * 3 * 4


# ------------------------------------------------------------------------- weights at run time
def test_conv_with_runtime_weight_is_a_boundary():
    b = GraphBuilder(seed=10)
    x = b.input("x", [1, 3, 8, 8])
    w = b.input("w", [4, 3, 3, 3])
    c = b.conv(x, 6, name="pre")
    y = b.node("Conv", [x, w], name="dyn", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    a = analyze(b.model([b.add(y, b.conv(c, 4, name="post"))]))
    assert group_of(a, "pre").prunable
    # The Add ties post's outputs with dyn's, which are pinned.
    assert group_of(a, "post") is group_of(a, "dyn")
    assert not group_of(a, "dyn").prunable


# ------------------------------------------------------------------------- cost details
def test_shared_weight_params_counted_once_macs_twice():
    b = GraphBuilder(seed=15)
    x = b.input("x", [1, 4, 8, 8])
    w = b.weight([4, 4, 3, 3], "W")
    c1 = b.node("Conv", [x, w], name="c1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    c2 = b.node("Conv", [b.relu(c1), w], name="c2", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    a = analyze(b.model([c2]))
    assert a.macs == 2 * HW * 4 * 4 * 9
    assert a.params == 4 * 4 * 9


def test_conv1d_cost_and_groups():
    b = GraphBuilder(seed=16)
    x = b.input("x", [1, 3, 16])
    c = b.node("Conv", [x, b.weight([6, 3, 5]), b.weight([6])], name="c", kernel_shape=[5],
               pads=[2, 2])
    y = b.node("Conv", [b.relu(c), b.weight([2, 6, 1])], name="y", kernel_shape=[1])
    a = analyze(b.model([y]))
    assert group_of(a, "c").prunable and group_of(a, "c").channels == 6
    assert a.macs == 16 * 6 * 3 * 5 + 16 * 2 * 6
    assert a.params == 6 * 3 * 5 + 6 + 2 * 6
    alive = alive_without(a, ids_of(a, "c")[:2])
    assert a.cost.macs(alive) == 16 * 4 * 3 * 5 + 16 * 2 * 4
    assert a.cost.params(alive) == 4 * 3 * 5 + 4 + 2 * 4
