"""Real architectures: the light models the onnx wheel ships (opset 9, ConstantOfShape weights).

Each model is analysed once per session. vgg19, zfnet512 and bvlc_alexnet carry large weights
(a few seconds each) and are marked `slow`: `-m "not slow"` skips them.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import onnx
import pytest

from onnxmorph.graph import Analysis, analyze
from tests.onnx_builders import LIGHT_MODELS_DIR, group_of, groups_of, ids_of, light_model_path

FAST = ["resnet50", "densenet121", "inception_v1", "inception_v2", "squeezenet", "shufflenet"]
SLOW = ["vgg19", "zfnet512", "bvlc_alexnet"]
ALL = [*FAST, *[pytest.param(name, marks=pytest.mark.slow) for name in SLOW]]


@functools.cache
def light(name: str) -> Analysis:
    return analyze(light_model_path(name))


def reference_macs(path: str) -> int:
    """Σ over Conv of N·Cout·Hout·Wout·(Cin/group)·kh·kw plus M·K·N over Gemm, from the
    original file's ONNX shape inference (independent of onnxmorph's loader and cost model)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(path), data_prop=True)
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in list(model.graph.input) + list(model.graph.value_info)
        + list(model.graph.output)
    }
    total = 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            n, cout, *spatial = shapes[node.output[0]]
            _, cin_per_group, *kernel = shapes[node.input[1]]
            assert cin_per_group * attrs.get("group", 1) == shapes[node.input[0]][1]
            total += n * cout * math.prod(spatial) * cin_per_group * math.prod(kernel)
        elif node.op_type == "Gemm":
            a_shape = shapes[node.input[0]]
            m, n = shapes[node.output[0]]
            k = a_shape[0] if attrs.get("transA", 0) else a_shape[1]
            total += m * k * n
        elif node.op_type in ("MatMul", "ConvTranspose"):
            raise AssertionError(f"reference does not cover {node.op_type}")
    return total


def test_light_models_are_all_covered():
    found = sorted(f[len("light_"):-len(".onnx")] for f in os.listdir(LIGHT_MODELS_DIR)
                   if f.endswith(".onnx"))
    assert found == sorted(FAST + SLOW)


@pytest.mark.parametrize("name", ALL)
def test_light_model_analyses_and_macs_match_reference(name):
    a = light(name)
    assert a.loaded.model.opset_import[0].version == 13  # converted from opset 9
    assert a.macs == reference_macs(light_model_path(name))
    # Every Conv/Gemm is a costed layer and every channel of every layer is in one group.
    costed = set(a.cost.macs.layers)
    weighted = {n.name for n in a.loaded.model.graph.node if n.op_type in ("Conv", "Gemm")}
    assert costed == weighted
    assert np.array_equal(np.sort(np.concatenate([g.units for g in a.groups])),
                          np.arange(a.channels.num_units))
    # The first group is the image input, pinned; something is prunable.
    assert a.groups[0].reason.startswith("comes from graph input")
    assert a.channels.prunable_groups()
    # Removing a prunable group saves MACs and never costs more than the whole model.
    for group in a.channels.prunable_groups()[:5]:
        assert 0 < a.group_dependent(group) < a.macs


def _conv_outputs(a: Analysis) -> dict[str, str]:
    """Weight name → output tensor of every Conv in the loaded model."""
    return {n.input[1]: n.output[0] for n in a.loaded.model.graph.node if n.op_type == "Conv"}


def test_resnet50_groups():
    a = light("resnet50")
    convs = _conv_outputs(a)
    nodes = a.loaded.model.graph.node
    sums = [n for n in nodes if n.op_type == "Sum"]
    assert len(sums) == 16
    blocks = {2: 3, 3: 4, 4: 6, 5: 3}
    stage_groups = []
    start = 0
    for stage, count in blocks.items():
        width = 256 * 2 ** (stage - 2)
        stage_sums = sums[start:start + count]
        start += count
        group = group_of(a, stage_sums[0].output[0])
        assert group.prunable and group.channels == width
        for node in stage_sums:
            for tensor in [*node.input, *node.output]:
                assert group_of(a, tensor) is group
                np.testing.assert_array_equal(ids_of(a, tensor), ids_of(a, node.output[0]))
            assert node.output[0] in group.tensors
        shortcut = convs[f"gpu_0/res{stage}_0_branch1_w_0"]
        assert group_of(a, shortcut) is group
        inner_groups = []
        for block in range(count):
            assert group_of(a, convs[f"gpu_0/res{stage}_{block}_branch2c_w_0"]) is group
            for branch in ("2a", "2b"):
                inner = group_of(a, convs[f"gpu_0/res{stage}_{block}_branch{branch}_w_0"])
                assert inner.prunable and inner.channels == width // 4
                assert inner is not group
                inner_groups.append(inner.id)
        assert len(set(inner_groups)) == 2 * count
        stage_groups.append(group.id)
    assert len(set(stage_groups)) == 4

    stem = group_of(a, convs["gpu_0/conv1_w_0"])
    assert stem.prunable and stem.channels == 64 and stem.id not in stage_groups
    assert len(a.channels.prunable_groups()) == 37
    assert len(a.groups) == 40  # + input, classifier output, softmax output
    pred = [n for n in nodes if n.op_type == "Gemm"][0].output[0]
    assert group_of(a, pred).reason == "Softmax 'n175' mixes values across channels"


def test_densenet121_concat_offsets():
    a = light("densenet121")
    concats = [n for n in a.loaded.model.graph.node if n.op_type == "Concat"]
    assert len(concats) == 58
    for node in concats:
        np.testing.assert_array_equal(
            ids_of(a, node.output[0]), np.concatenate([ids_of(a, i) for i in node.input])
        )
    # Dense block 1: pool1 (64) then conv2_1..conv2_6 growth layers (32 each), in order.
    convs = _conv_outputs(a)
    pool = concats[0].input[0]
    growth = [convs[f"conv2_{i}/x2_w_0"] for i in range(1, 7)]
    last = ids_of(a, concats[5].output[0])
    assert last.size == 64 + 6 * 32
    np.testing.assert_array_equal(last[:64], ids_of(a, pool))
    for i, tensor in enumerate(growth):
        np.testing.assert_array_equal(last[64 + 32 * i:64 + 32 * (i + 1)], ids_of(a, tensor))
        group = group_of(a, tensor)
        assert group.prunable and group.channels == 32
    assert len({group_of(a, t).id for t in growth}) == 6
    # The block's final concat spans the stem group and the six growth groups.
    assert len(groups_of(a, concats[5].output[0])) == 7
    assert len(a.channels.prunable_groups()) == 120


def test_squeezenet_fire_concat_offsets():
    a = light("squeezenet")
    convs = _conv_outputs(a)
    concats = [n for n in a.loaded.model.graph.node if n.op_type == "Concat"]
    assert len(concats) == 8
    for fire, node in zip(range(2, 10), concats, strict=True):
        e1 = ids_of(a, convs[f"fire{fire}/expand1x1_w_0"])
        e3 = ids_of(a, convs[f"fire{fire}/expand3x3_w_0"])
        out = ids_of(a, node.output[0])
        assert out.size == e1.size + e3.size
        np.testing.assert_array_equal(out[:e1.size], e1)
        np.testing.assert_array_equal(out[e1.size:], e3)
        assert group_of(a, convs[f"fire{fire}/expand1x1_w_0"]) is not group_of(
            a, convs[f"fire{fire}/expand3x3_w_0"])
        squeeze = group_of(a, convs[f"fire{fire}/squeeze1x1_w_0"])
        assert squeeze.prunable
        # A squeeze's channels feed both expands.
        expand_layers = {n.name for n in a.loaded.model.graph.node
                         if n.op_type == "Conv" and n.input[1].startswith(f"fire{fire}/expand")}
        assert expand_layers <= set(squeeze.layers)
    assert len(a.channels.prunable_groups()) == 25


def test_shufflenet_shuffles_permute_ids_and_groups_tie_units():
    a = light("shufflenet")
    nodes = a.loaded.model.graph.node
    producer = {n.output[0]: n for n in nodes}
    consumers = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    transposes = [n for n in nodes if n.op_type == "Transpose"]
    assert len(transposes) == 16
    for node in transposes:
        split, merge = producer[node.input[0]], consumers[node.output[0]][0]
        assert (split.op_type, merge.op_type) == ("Reshape", "Reshape")
        _, groups, per_group, *_ = a.loaded.shapes[split.output[0]]
        before, after = ids_of(a, split.input[0]), ids_of(a, merge.output[0])
        perm = np.arange(groups * per_group).reshape(groups, per_group).T.ravel()
        np.testing.assert_array_equal(after, before[perm])
        assert a.channels.layouts[merge.output[0]].axes == (1,)

    def group_count(node):
        return next((attr.i for attr in node.attribute if attr.name == "group"), 1)

    grouped = [n for n in nodes if n.op_type == "Conv" and group_count(n) > 1]
    assert grouped
    for node in grouped:
        groups = group_count(node)
        rows = ids_of(a, node.input[0]).reshape(groups, -1)
        if rows.shape[1] > 1:  # not depthwise: index j is one unit in every conv group
            assert all(np.array_equal(row, rows[0]) for row in rows)
        else:
            np.testing.assert_array_equal(ids_of(a, node.output[0]), rows.ravel())
    assert len(a.channels.prunable_groups()) == 17


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zfnet512", "bvlc_alexnet"])
def test_lrn_pins_early_convs(name):
    a = light(name)
    nodes = a.loaded.model.graph.node
    lrns = [n for n in nodes if n.op_type == "LRN"]
    assert len(lrns) == 2
    for node in lrns:
        assert "normalises each channel by its neighbours" in group_of(a, node.input[0]).reason
    assert len(a.channels.prunable_groups()) == 5
