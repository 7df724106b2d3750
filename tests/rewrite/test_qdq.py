"""QDQ models keep their quantization: int8 weights behind DequantizeLinear are analysed with
their dequantized value but sliced in int8 form, with their per-channel scales and zero points;
activation QuantizeLinear/DequantizeLinear pairs pass channels through."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxmorph
from onnxmorph.errors import OnnxMorphError
from onnxmorph.graph import analyze
from onnxmorph.graph.layers import LAYER_KINDS
from onnxmorph.rewrite import slice_channels, zero_removed_channels
from onnxmorph.rewrite.grow import grow_channels
from tests.onnx_builders import GraphBuilder, group_of
from tests.rewrite._oracles import assert_matches_zeroed_seed
from tests.rewrite._support import assert_close, keep_masks

ACT_SCALE = 0.05


def _qdq(b: GraphBuilder, x: str, per_channel: int = 0) -> str:
    """Activation Q/DQ: per tensor, or per channel along axis 1 with `per_channel` scales."""
    if per_channel:
        scale = b.const(b.rng.uniform(0.02, 0.08, per_channel))
        zero = b.const(np.zeros(per_channel), dtype=np.int8)
        q = b.node("QuantizeLinear", [x, scale, zero], axis=1)
        return b.node("DequantizeLinear", [q, scale, zero], axis=1)
    scale, zero = b.const(ACT_SCALE), b.const(0, dtype=np.int8)
    return b.node("DequantizeLinear", [b.node("QuantizeLinear", [x, scale, zero]), scale, zero])


def _qconv(b: GraphBuilder, x: str, cin: int, cout: int, name: str) -> str:
    """Conv with per-channel int8 weights and an int32 bias, each behind a DequantizeLinear."""
    weight = b.rng.normal(0, np.sqrt(2 / (9 * cin)), (cout, cin, 3, 3))
    w_scale = np.abs(weight).reshape(cout, -1).max(axis=1) / 127
    w_q = np.round(weight / w_scale[:, None, None, None]).astype(np.int8)
    b_scale = (ACT_SCALE * w_scale).astype(np.float32)
    b_q = np.round(b.rng.normal(0, 0.1, cout) / b_scale).astype(np.int32)
    w = b.node("DequantizeLinear", [b.const(w_q, f"{name}.Wq", dtype=np.int8),
                                    b.const(w_scale, f"{name}.Ws"),
                                    b.const(np.zeros(cout), f"{name}.Wz", dtype=np.int8)],
               name=f"{name}.W", axis=0)
    bias = b.node("DequantizeLinear", [b.const(b_q, f"{name}.Bq", dtype=np.int32),
                                       b.const(b_scale, f"{name}.Bs"),
                                       b.const(np.zeros(cout), f"{name}.Bz", dtype=np.int32)],
                  name=f"{name}.B", axis=0)
    return b.node("Conv", [x, w, bias], name=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def qdq_chain() -> onnx.ModelProto:
    b = GraphBuilder(seed=3, opset=13)
    x = _qdq(b, b.input("x", ["N", 3, 8, 8]))
    h = _qdq(b, b.relu(_qconv(b, x, 3, 16, "conv1")))
    h = _qdq(b, b.relu(_qconv(b, h, 16, 16, "conv2")), per_channel=16)
    return b.model([_qconv(b, h, 16, 4, "head")])


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Plain float arithmetic after DequantizeLinear in both models: fused int8 kernels would
    # requantize, and the reference (with its zeroing Muls) would not fuse the same way.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def test_quantized_weights_are_layers_for_analysis():
    analysis = analyze(qdq_chain())
    conv1, conv2 = group_of(analysis, "conv1"), group_of(analysis, "conv2")
    assert conv1.prunable and conv2.prunable and conv1 is not conv2
    assert conv1.channels == conv2.channels == 16 and "conv1" in conv1.layers
    by_layer = analysis.cost.macs.by_layer()
    assert by_layer["conv1"] == 64 * 9 * 3 * 16 and by_layer["conv2"] == 64 * 9 * 16 * 16
    assert by_layer["head"] == 64 * 9 * 16 * 4
    # The model still holds its int8 weights: nothing was folded into float.
    dtypes = {i.name: i.data_type for i in analysis.loaded.model.graph.initializer}
    assert dtypes["conv2.Wq"] == onnx.TensorProto.INT8
    assert "conv2.W" not in dtypes


def test_qdq_chain_l1_prune_keeps_int8_and_matches_zeroed_seed():
    seed = qdq_chain()
    result = onnxmorph.prune(seed, method="l1", budget=0.5)
    pruned, analysis = result.model, result.analysis
    onnx.checker.check_model(pruned, full_check=True)
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    kept1 = int(result.alive[group_of(analysis, "conv1").units].sum())
    kept2 = int(result.alive[group_of(analysis, "conv2").units].sum())
    assert kept1 < 16 and kept2 < 16
    for name, (cout, cin) in {"conv1": (kept1, 3), "conv2": (kept2, kept1),
                              "head": (4, kept2)}.items():
        assert inits[f"{name}.Wq"].dtype == np.int8 and inits[f"{name}.Wq"].shape[:2] == (
            cout, cin)
        assert inits[f"{name}.Ws"].shape == (cout,) and inits[f"{name}.Wz"].shape == (cout,)
        assert inits[f"{name}.Bq"].dtype == np.int32 and inits[f"{name}.Bq"].shape == (cout,)
        assert inits[f"{name}.Bs"].shape == (cout,)
    assert not any(v.dtype == np.float32 and v.ndim == 4 for v in inits.values())
    # The per-channel activation scale after conv2 lost the removed channels too.
    assert sum(v.shape == (kept2,) and v.dtype == np.float32 for v in inits.values()) >= 2
    # The cost model predicts the pruned model's cost.
    again = analyze(pruned)
    assert again.macs == pytest.approx(analysis.cost.macs(result.alive.astype(float)))
    assert again.params == pytest.approx(analysis.cost.params(result.alive.astype(float)))
    assert_matches_zeroed_seed(result, seed, "x", (3, 8, 8), runner=_run)


def _shared_weight_model(tied: bool) -> onnx.ModelProto:
    """One DequantizeLinear weight read by two convs, whose outputs are added (tied channels)
    or concatenated (independent channels)."""
    b = GraphBuilder(seed=1, opset=13)
    x = b.input("x", [1, 3, 8, 8])
    w_q = b.const(b.rng.integers(-100, 100, (8, 3, 3, 3)), "Wq", dtype=np.int8)
    w = b.node("DequantizeLinear", [w_q, b.const(np.full(8, 0.01), "Ws"),
                                    b.const(np.zeros(8), "Wz", dtype=np.int8)], name="W", axis=0)
    left = b.node("Conv", [x, w], name="left", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    right = b.node("Conv", [x, w], name="right", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    merged = b.add(left, right) if tied else b.concat([left, right])
    return b.model([b.conv(b.relu(merged), 4, name="head")])


def test_shared_quantized_weight_sliced_alike_stays_shared():
    analysis = analyze(_shared_weight_model(tied=True))
    alive = analysis.all_alive().astype(bool)
    alive[group_of(analysis, "left").units[:4]] = False
    pruned = slice_channels(analysis, alive).model
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    assert inits["Wq"].shape == (4, 3, 3, 3) and inits["Wq"].dtype == np.int8
    assert inits["Ws"].shape == (4,)
    assert sum(n.op_type == "DequantizeLinear" for n in pruned.graph.node) == 1


def test_shared_quantized_weight_sliced_differently_is_refused_in_one_line():
    analysis = analyze(_shared_weight_model(tied=False))
    alive = analysis.all_alive().astype(bool)
    alive[group_of(analysis, "left").units[:4]] = False
    with pytest.raises(OnnxMorphError, match="shared DequantizeLinear") as info:
        slice_channels(analysis, alive)
    assert "\n" not in str(info.value)


def test_registry_knows_quantize_ops_are_not_layers():
    assert "DequantizeLinear" not in LAYER_KINDS and "QuantizeLinear" not in LAYER_KINDS


def test_quantized_layers_do_not_grow_silently():
    analysis = analyze(qdq_chain())
    group = group_of(analysis, "conv1")
    grown = grow_channels(analysis, {group.id: 4})
    assert grown.added == {} and "quantized" in grown.skipped[group.id]


def _qweight(b: GraphBuilder, value: np.ndarray, axis: int, name: str) -> str:
    scale = np.abs(value).max(axis=1 - axis) / 127
    view = (1, -1) if axis == 1 else (-1, 1)
    q = np.round(value / scale.reshape(view)).astype(np.int8)
    return b.node("DequantizeLinear", [b.const(q, f"{name}q", dtype=np.int8),
                                       b.const(scale, f"{name}s"),
                                       b.const(np.zeros(scale.size), f"{name}z", dtype=np.int8)],
                  name=name, axis=axis)


@pytest.mark.parametrize("op", ["Gemm", "Gemm-transB", "MatMul"])
def test_quantized_linear_layers_slice_in_int8(op):
    """Linear layers with per-output-channel int8 weights (axis 1 of [K, N], axis 0 of [N, K])."""
    b = GraphBuilder(seed=5, opset=13)
    x = b.input("x", [2, 12])
    trans_b = op == "Gemm-transB"
    value = b.rng.normal(0, 0.4, (16, 12) if trans_b else (12, 16))
    w = _qweight(b, value, 0 if trans_b else 1, "fc.W")
    if op == "MatMul":
        h = b.node("MatMul", [_qdq(b, x), w], name="fc")
    else:
        h = b.node("Gemm", [_qdq(b, x), w, b.const(b.rng.normal(0, 0.1, 16))], name="fc",
                   transB=int(trans_b))
    head = _qweight(b, b.rng.normal(0, 0.4, (16, 3)), 1, "head.W")
    seed = b.model([b.node("MatMul", [_qdq(b, b.relu(h)), head], name="head")])
    analysis = analyze(seed)
    assert group_of(analysis, "fc").prunable
    alive = analysis.all_alive().astype(bool)
    alive[group_of(analysis, "fc").units[::2]] = False
    pruned = slice_channels(analysis, alive).model
    onnx.checker.check_model(pruned, full_check=True)
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    assert inits["fc.Wq"].dtype == np.int8
    assert inits["fc.Wq"].shape == ((8, 12) if trans_b else (12, 8))
    assert inits["fc.Ws"].shape == inits["fc.Wz"].shape == (8,)
    assert inits["head.Wq"].shape == (8, 3) and inits["head.Ws"].shape == (3,)
    again = analyze(pruned)
    assert again.macs == pytest.approx(analysis.cost.macs(alive.astype(float)))
    assert again.params == pytest.approx(analysis.cost.params(alive.astype(float)))
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 12)).astype(np.float32)}
    zeroed = zero_removed_channels(seed, analysis.channels.layouts, analysis.loaded.shapes,
                                   keep_masks(analysis, alive))
    assert_close(_run(pruned, feeds), _run(zeroed, feeds), op)
