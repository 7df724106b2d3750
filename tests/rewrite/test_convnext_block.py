"""A ConvNeXt-style block, built by hand: depthwise 7x7 → Transpose to NHWC → LayerNorm (the op
at opset 17, the ReduceMean/Sub/Pow/Sqrt/Div form at opset 14) → Linear 4x (MatMul + Add) →
GELU (Erf form, or the opset-20 Gelu op) → Linear → layer scale Mul(gamma, x) → Transpose back
→ residual Add. The MLP's hidden units are the prunable group; L1 at 0.5 writes a model that
computes what the seed computes with those units zeroed, at batch 1 and 3."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxmorph
from onnxmorph.graph import analyze
from onnxmorph.rewrite.grow import grow_channels
from tests.onnx_builders import GraphBuilder, group_of
from tests.rewrite._oracles import assert_matches_zeroed_seed
from tests.rewrite._support import assert_close, run

C, HW = 16, 8  # channels, height = width


def _layer_norm(b: GraphBuilder, x: str, decomposed: bool) -> str:
    scale = b.const(b.rng.uniform(0.5, 1.5, C), "ln.scale")
    bias = b.const(b.rng.normal(0, 0.1, C), "ln.bias")
    if not decomposed:
        return b.node("LayerNormalization", [x, scale, bias], name="ln", axis=-1, epsilon=1e-6)
    # The form PyTorch exports below opset 17 (ReduceMean takes `axes` as an attribute < 18).
    mean = b.node("ReduceMean", [x], name="ln.mean", axes=[-1])
    centred = b.node("Sub", [x, mean], name="ln.sub")
    square = b.node("Pow", [centred, b.const(2.0)], name="ln.pow")
    var = b.node("ReduceMean", [square], name="ln.var", axes=[-1])
    std = b.node("Sqrt", [b.node("Add", [var, b.const(1e-6)], name="ln.eps")], name="ln.sqrt")
    normed = b.node("Div", [centred, std], name="ln.div")
    return b.node("Add", [b.node("Mul", [normed, scale], name="ln.mul"), bias], name="ln")


def _gelu(b: GraphBuilder, x: str, op: bool) -> str:
    if op:
        return b.node("Gelu", [x], name="gelu")
    erf = b.node("Erf", [b.node("Div", [x, b.const(np.sqrt(2.0))], name="gelu.div")])
    return b.node("Mul", [b.node("Mul", [x, b.node("Add", [erf, b.const(1.0)])]),
                          b.const(0.5)], name="gelu")


def _linear(b: GraphBuilder, x: str, n_in: int, n_out: int, name: str) -> str:
    w = b.const(b.rng.normal(0, np.sqrt(2 / n_in), (n_in, n_out)), f"{name}.W")
    y = b.node("MatMul", [x, w], name=name)
    return b.node("Add", [b.const(b.rng.normal(0, 0.1, n_out), f"{name}.B"), y],
                  name=f"{name}.bias")  # bias first: the operand order some exporters write


def convnext_block(opset: int, gelu_op: bool = False) -> onnx.ModelProto:
    b = GraphBuilder(seed=opset, opset=opset)
    x = b.input("x", ["N", 3, HW, HW])
    stem = b.conv(x, C, k=1, name="stem")
    dw = b.conv(stem, C, k=7, group=C, name="dw")
    t = b.transpose(dw, [0, 2, 3, 1], name="to_nhwc")
    h = _linear(b, _layer_norm(b, t, decomposed=opset < 17), C, 4 * C, "fc1")
    h = _linear(b, _gelu(b, h, gelu_op), 4 * C, C, "fc2")
    gamma = b.const(b.rng.uniform(0.5, 1.5, C), "gamma")
    scaled = b.node("Mul", [gamma, h], name="layer_scale")
    back = b.transpose(scaled, [0, 3, 1, 2], name="to_nchw")
    out = b.add(stem, back, name="residual")
    return b.model([b.conv(out, 10, k=1, name="head")])


CASES = [(14, False), (17, False), (20, True)]


@pytest.mark.parametrize("opset, gelu_op", CASES)
def test_convnext_block_groups_and_macs(opset, gelu_op):
    analysis = analyze(convnext_block(opset, gelu_op))
    hidden = group_of(analysis, "fc1")
    assert hidden.prunable, hidden.reason
    assert hidden.channels == 4 * C and group_of(analysis, "gelu") is hidden
    # The residual stream is normalised over its channels: it stays.
    stream = group_of(analysis, "dw")
    assert group_of(analysis, "fc2") is stream and not stream.prunable
    assert stream.reason.startswith("ReduceMean" if opset < 17 else "LayerNormalization")
    assert [g for g in analysis.groups if g.prunable] == [hidden]
    pixels = HW * HW
    by_layer = analysis.cost.macs.by_layer()
    assert by_layer["stem"] == pixels * 3 * C
    assert by_layer["dw"] == pixels * C * 49
    assert by_layer["fc1"] == pixels * C * 4 * C
    assert by_layer["fc2"] == pixels * 4 * C * C
    assert by_layer["head"] == pixels * C * 10
    # Parameters: every weight, bias, LN scale/shift, the layer scale and the scalar constants
    # of the decomposed LayerNorm (exponent, epsilon) and of the Erf GELU (√2, 1, 0.5).
    scalars = (2 if opset < 17 else 0) + (0 if gelu_op else 3)
    params = (3 * C + C) + (49 * C + C) + 2 * C + (C * 4 * C + 4 * C) + (4 * C * C + C) + C \
        + (C * 10 + 10) + scalars
    assert analysis.params == params
    alive = analysis.all_alive()
    alive[hidden.units] = 0
    assert analysis.cost.macs(alive) == pytest.approx(analysis.macs - 8 * pixels * C * C)


@pytest.mark.parametrize("opset, gelu_op", CASES)
def test_convnext_block_l1_prune_matches_zeroed_seed(opset, gelu_op):
    seed = convnext_block(opset, gelu_op)
    result = onnxmorph.prune(seed, method="l1", budget=0.5)
    pruned = result.model
    onnx.checker.check_model(pruned, full_check=True)
    analysis = result.analysis
    hidden = group_of(analysis, "fc1")
    kept = int(result.alive[hidden.units].sum())
    assert 0 < kept < 4 * C
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in pruned.graph.initializer}
    fc1 = next(n for n in pruned.graph.node if n.name == "fc1")
    fc2 = next(n for n in pruned.graph.node if n.name == "fc2")
    assert inits[fc1.input[1]].shape == (C, kept)
    assert inits[fc2.input[1]].shape == (kept, C)
    assert analyze(pruned).macs <= 0.5 * analysis.macs + 1e-6
    assert_matches_zeroed_seed(result, seed, "x", (3, HW, HW))


@pytest.mark.parametrize("opset", [14, 17])
def test_convnext_block_hidden_units_grow_without_changing_the_function(opset):
    seed = convnext_block(opset)
    analysis = analyze(seed)
    hidden = group_of(analysis, "fc1")
    grown = grow_channels(analysis, {hidden.id: 8})
    assert grown.added == {hidden.id: 8} and not grown.skipped
    onnx.checker.check_model(grown.model, full_check=True)
    assert group_of(analyze(grown.model), "fc1").channels == 4 * C + 8
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, HW, HW)).astype(np.float32)}
    assert_close(run(grown.model, feeds), run(seed, feeds), "grown vs seed")
