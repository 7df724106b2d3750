"""L1 pruning of real architectures: the onnx wheel's light models, with random weights.

The light models come with constant weights (ConstantOfShape), which would make every channel
alike; each is loaded once, its weights replaced by He-scaled random ones (BN variances
positive), and its final Softmax cut off so that differences in the logits are visible. Then
`onnxmorph.prune(..., method="l1", budget=0.5, verify=True)` must give a model that
onnxruntime loads, with the seed's output shapes, at most ~half the MACs, and that computes
what the seed computes with the removed channels zeroed.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import onnxmorph
from onnxmorph.graph import load_model
from onnxmorph.methods.l1 import l1_unit_scores, normalized_within_groups
from onnxmorph.methods.select import select_to_budget
from onnxmorph.rewrite import slice_channels, verify_models, zero_removed_channels
from tests.onnx_builders import light_model_path
from tests.rewrite._support import assert_close, assert_differs, keep_masks, random_feeds, run

MODELS = ["resnet50", "densenet121", "inception_v1", "inception_v2", "squeezenet",
          "shufflenet"]


def _cut_before_softmax(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    """Make the input of the last Softmax the only graph output; drop what only fed it."""
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    if not softmaxes:
        return
    logits = softmaxes[-1].input[0]
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, list(shapes[logits])))
    needed, kept = {logits}, []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    for index in reversed(range(len(model.graph.initializer))):
        if model.graph.initializer[index].name not in needed:
            del model.graph.initializer[index]


def _random_value(node: onnx.NodeProto, index: int, value: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op in ("Conv", "Gemm") and index == 1:
        if op == "Conv":
            fan_in = math.prod(value.shape[1:])
        else:
            fan_in = value.shape[1] if attrs.get("transB", 0) else value.shape[0]
        return rng.normal(0, math.sqrt(2.0 / fan_in), value.shape)
    if op in ("Conv", "Gemm") and index == 2:
        return rng.normal(0, 0.05, value.shape)
    if op == "BatchNormalization":
        if index in (1, 4):  # scale, variance: positive
            return rng.uniform(0.5, 1.5, value.shape)
        return rng.normal(0, 0.1, value.shape)
    if op == "Mul":
        return rng.uniform(0.5, 1.5, value.shape)
    if op in ("Add", "Sum"):
        return rng.normal(0, 0.1, value.shape)
    return None


def _seed_bytes(name: str) -> bytes:
    """The light model, loaded (weights folded to initializers), randomised and cut."""
    loaded = load_model(light_model_path(name))
    model = loaded.model
    _cut_before_softmax(model, loaded.shapes)
    rng = np.random.default_rng(sum(map(ord, name)))
    first_use = {}
    for node in model.graph.node:
        for index, tensor in enumerate(node.input):
            first_use.setdefault(tensor, (node, index))
    changed = 0
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name not in first_use:
            continue
        node, index = first_use[init.name]
        value = _random_value(node, index, numpy_helper.to_array(init), rng)
        if value is not None:
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), init.name))
            changed += 1
    assert changed > 0
    onnx.checker.check_model(model)
    return model.SerializeToString()


def light_seed(name: str) -> onnx.ModelProto:
    return onnx.load_from_string(_seed_bytes(name))


@pytest.mark.parametrize("name", MODELS)
def test_light_model_l1_prune_to_half(name):
    seed = light_seed(name)
    result = onnxmorph.prune(seed, method="l1", budget=0.5, verify=True)
    pruned = result.model
    onnx.checker.check_model(pruned, full_check=True)

    # Cost: at most ~half, and the cost model says what re-analysing the pruned model says.
    report = result.report()
    assert report["pruned"]["macs"] <= 0.52 * report["seed"]["macs"]
    assert report["ratio"]["macs"] <= 0.52
    again = onnxmorph.analyze(pruned)
    assert again.macs == pytest.approx(report["pruned"]["macs"], abs=1)
    assert again.params == pytest.approx(report["pruned"]["params"], abs=1)
    assert report["seed"]["macs"] == round(result.analysis.macs)

    # It loads in onnxruntime, keeps the output shapes, and equals the zeroed seed.
    assert report["verify"]["passed"], report["verify"]
    feeds = random_feeds(seed, result.analysis.loaded.input_shapes, seed=7)
    original = run(seed, feeds)
    got = run(pruned, feeds)
    assert [g.shape for g in got] == [o.shape for o in original]
    declared = [tuple(d.dim_value for d in o.type.tensor_type.shape.dim)
                for o in pruned.graph.output]
    assert declared == [o.shape for o in original]
    analysis = result.analysis
    masked = zero_removed_channels(analysis.loaded.model, analysis.channels.layouts,
                                   analysis.loaded.shapes, keep_masks(analysis, result.alive))
    want = run(masked, feeds)
    assert_close(got, want, f"{name}: pruned vs masked seed")
    assert_differs(want, original, f"{name}: masked seed vs seed")

    # Every prunable group keeps at least one channel; pinned ones keep all.
    alive = result.alive
    for group in analysis.groups:
        if group.prunable:
            assert alive[group.units].any()
        else:
            assert alive[group.units].all()


def test_light_model_low_level_pipeline_on_modified_analysis():
    """The steps `prune` runs, on an Analysis whose weights were replaced in place."""
    analysis = onnxmorph.analyze(light_model_path("squeezenet"))
    rng = np.random.default_rng(0)
    model = analysis.loaded.model
    users = {}
    for node in model.graph.node:
        for index, tensor in enumerate(node.input):
            users.setdefault(tensor, (node, index))
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name not in users:
            continue
        value = _random_value(*users[init.name], numpy_helper.to_array(init), rng)
        if value is not None:
            value = value.astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(value, init.name))
            analysis.loaded.initializers[init.name] = value
    scores = normalized_within_groups(analysis, l1_unit_scores(analysis))
    # Random weights give every channel its own score (the constant ones tied them all).
    assert np.unique(np.round(scores, 6)).size > analysis.channels.num_units // 2
    alive = select_to_budget(analysis, scores, "flops", 0.5)
    assert analysis.cost.macs(alive.astype(float)) <= 0.5 * analysis.macs
    pruned = slice_channels(analysis, alive).model
    onnx.checker.check_model(pruned, full_check=True)
    report = verify_models(analysis, pruned)
    assert report.passed, report.to_dict()
    assert onnxmorph.analyze(pruned).macs == pytest.approx(
        analysis.cost.macs(alive.astype(float)))
