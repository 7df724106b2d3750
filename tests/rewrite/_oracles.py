"""An oracle for slicing that holds even where zeroing an activation would not: the seed with
the removed channels' *consumer* weights zeroed (Div(c, x) of a zeroed x is inf, but a removed
channel read by nobody cannot change the output)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxmorph.graph import analyze
from onnxmorph.rewrite import slice_channels, zero_removed_channels
from tests.onnx_builders import group_of
from tests.rewrite._support import assert_close, assert_differs, keep_masks, run


def consumers_zeroed(analysis, alive) -> onnx.ModelProto:
    """The seed where every Conv/Gemm/MatMul ignores the removed channels of its input."""
    model = onnx.ModelProto()
    model.CopyFrom(analysis.loaded.model)
    masks = keep_masks(analysis, alive)
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        mask = masks.get(node.input[0])
        if mask is None or mask.all() or node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).copy()
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        axis = 1 if node.op_type == "Conv" or trans_b else 0
        if weight.shape[axis] != mask.size:
            continue  # a grouped layer: its outputs are removed too, its consumer is zeroed
        if axis == 1:
            weight[:, ~mask.ravel()] = 0
        else:
            weight[~mask.ravel()] = 0
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
    return model


def prune_half(model: onnx.ModelProto, group_tensor: str):
    analysis = analyze(model)
    group = group_of(analysis, group_tensor)
    assert group.prunable, group.reason
    alive = analysis.all_alive().astype(bool)
    alive[group.units[1::2]] = False
    pruned = slice_channels(analysis, alive).model
    onnx.checker.check_model(pruned, full_check=True)
    feeds = {"x": np.random.default_rng(0).standard_normal(
        analysis.loaded.input_shapes["x"]).astype(np.float32)}
    want = run(consumers_zeroed(analysis, alive), feeds)
    assert_close(run(pruned, feeds), want, "pruned vs seed with consumers zeroed")
    assert_differs(want, run(model, feeds), "reference vs seed")
    again = analyze(pruned)
    assert again.macs == pytest.approx(analysis.cost.macs(alive.astype(float)))
    assert again.params == pytest.approx(analysis.cost.params(alive.astype(float)))
    return analysis, alive, pruned


def assert_matches_zeroed_seed(result, seed: onnx.ModelProto, input_name: str,
                               shape: tuple[int, ...], runner=run) -> None:
    """A pruned result (onnxmorph.prune's) computes the seed with its removed channels zeroed,
    at batch 1 and 3 (`shape` without the batch; `runner` runs a model on feeds)."""
    analysis = result.analysis
    zeroed = zero_removed_channels(seed, analysis.channels.layouts, analysis.loaded.shapes,
                                   keep_masks(analysis, result.alive))
    for batch in (1, 3):
        feeds = {input_name: np.random.default_rng(batch).standard_normal(
            (batch, *shape)).astype(np.float32)}
        want = runner(zeroed, feeds)
        assert_close(runner(result.model, feeds), want, f"batch {batch}")
        assert_differs(want, runner(seed, feeds), "zeroed seed vs seed")
