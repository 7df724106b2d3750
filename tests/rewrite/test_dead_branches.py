"""A group that loses every channel: its residual branch goes, or one channel stays."""

import numpy as np
import onnx
import onnxruntime as ort

import onnxmorph
from onnxmorph.rewrite import slice_channels, verify_models
from tests.onnx_builders import GraphBuilder


def _residual_model():
    b = GraphBuilder(3)
    x = b.input("x", ["N", 3, 8, 8])
    stem = b.conv_bn_relu(x, 8, name="stem")
    inner = b.conv_bn_relu(stem, 6, name="inner")
    branch = b.bn(b.conv(inner, 8, name="last"), name="last_bn")
    out = b.relu(b.add(stem, branch, name="residual"))
    return b.model([b.gemm(b.flatten(b.gap(out)), 4, name="fc")])


def _group_of(analysis, layer):
    return next(g for g in analysis.channels.prunable_groups() if g.layers[0] == layer)


def test_dead_residual_branch_leaves_the_shortcut():
    analysis = onnxmorph.analyze(_residual_model())
    alive = np.ones(analysis.channels.num_units, dtype=bool)
    alive[_group_of(analysis, "inner").units] = False
    result = slice_channels(analysis, alive)
    ops = {n.name for n in result.model.graph.node}
    assert not {"inner", "last", "last_bn"} & ops  # the branch is gone
    assert "residual" in ops and "stem" in ops
    onnx.checker.check_model(result.model, full_check=True)
    report = verify_models(analysis, result.model)
    assert report.passed, report.to_dict()
    # The seed with that group zeroed really differs from the seed: the check is not vacuous.
    seed = ort.InferenceSession(analysis.loaded.model.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    pruned = ort.InferenceSession(result.model.SerializeToString(),
                                  providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert not np.allclose(seed.run(None, {"x": x})[0], pruned.run(None, {"x": x})[0])
    assert pruned.run(None, {"x": x})[0].shape == (2, 4)


def test_dead_branch_with_partly_pruned_residual_group():
    analysis = onnxmorph.analyze(_residual_model())
    alive = np.ones(analysis.channels.num_units, dtype=bool)
    alive[_group_of(analysis, "inner").units] = False
    alive[_group_of(analysis, "stem").units[::2]] = False
    result = slice_channels(analysis, alive)
    assert verify_models(analysis, result.model).passed


def test_dead_group_that_cannot_go_keeps_its_best_channel():
    b = GraphBuilder(4)
    x = b.input("x", ["N", 3, 8, 8])
    a = b.conv_bn_relu(x, 6, name="a")
    c = b.conv_bn_relu(a, 5, name="c")  # c's output feeds a Concat, not a residual Add
    joined = b.concat([c, b.conv_bn_relu(x, 4, name="d")])
    model = b.model([b.gemm(b.flatten(b.gap(b.conv_bn_relu(joined, 4, name="e"))), 2)])
    analysis = onnxmorph.analyze(model)
    group = _group_of(analysis, "a")
    alive = np.ones(analysis.channels.num_units, dtype=bool)
    alive[group.units] = False
    scores = np.zeros(analysis.channels.num_units)
    scores[group.units[3]] = 1.0
    result = slice_channels(analysis, alive, scores)
    assert result.alive[group.units].tolist() == [False, False, False, True, False, False]
    assert verify_models(analysis, result.model).passed
