"""Real exports load: -1 dims, Shape-chain Reshape targets, a symbolic batch, crash-proof shape
inference. Pruned models must compute the seed with removed channels zeroed at batch 1 AND 3."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxmorph
from onnxmorph.cli.main import cli
from onnxmorph.errors import UnsupportedModelError
from onnxmorph.graph import isolated, load_model
from onnxmorph.rewrite.slice_model import removed_channels
from onnxmorph.rewrite.verify import _keep_masks
from onnxmorph.rewrite.zero_channels import zero_removed_channels

DATA = Path(__file__).resolve().parents[1] / "data"
RNG = np.random.default_rng(0)


def _run(model, feeds):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _feeds(input_shapes, batch):
    rng = np.random.default_rng(batch)
    return {k: rng.standard_normal((batch, *v[1:])).astype(np.float32)
            for k, v in input_shapes.items()}


def assert_prunes_exactly(seed, input_shapes=None, batches=(1, 3)):
    """L1 at 0.5; the pruned model equals the seed with removed channels zeroed at each batch,
    and the loaded (folded) seed equals the file's seed."""
    result = onnxmorph.prune(seed, method="l1", budget=0.5, input_shapes=input_shapes)
    analysis = result.analysis
    onnx.checker.check_model(result.model, full_check=True)
    reference = zero_removed_channels(
        analysis.loaded.model, analysis.channels.layouts, analysis.loaded.shapes,
        _keep_masks(analysis, removed_channels(result.model)))
    for batch in batches:
        feeds = _feeds(analysis.loaded.input_shapes, batch)
        original = _run(seed, feeds)
        for want, folded, zeroed, pruned in zip(original, _run(analysis.loaded.model, feeds),
                                               _run(reference, feeds), _run(result.model, feeds)):
            assert want.shape[0] == batch and pruned.shape == want.shape
            np.testing.assert_allclose(folded, want, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(pruned, zeroed, rtol=1e-4, atol=1e-4)
    assert result.costs["ratio"]["macs"] < 0.9
    return result


def _init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _weight(name, shape):
    return _init(name, RNG.standard_normal(shape) * 0.5)


def _model(nodes, x_dims, out_dims, inits, value_info=()):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)], inits,
        value_info=list(value_info))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _shape_slice(src, out, start, end, tag):
    """Shape(src)[start:end] as torch and Paddle export it."""
    return [helper.make_node("Shape", [src], [f"{tag}_shape"]),
            helper.make_node("Slice", [f"{tag}_shape", f"{tag}_s", f"{tag}_e"], [out]),
            ], [_init(f"{tag}_s", [start], np.int64), _init(f"{tag}_e", [end], np.int64)]


def paddle_style_model() -> onnx.ModelProto:
    """Conv-BN-ReLU → GAP → Reshape(Concat(Shape[0:1], [-1])) → MatMul; dims written as -1."""
    chain, consts = _shape_slice("p", "n", 0, 1, "b")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        *chain,
        helper.make_node("Concat", ["n", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["p", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["y"]),
    ]
    inits = [_weight("w1", [8, 3, 3, 3]), _weight("b1", [8]), _weight("w2", [12, 8, 3, 3]),
             _weight("fc", [12, 5]), _init("minus1", [-1], np.int64), *consts]
    info = [helper.make_tensor_value_info("c1", TensorProto.FLOAT, [-1, 8, -1, -1]),
            helper.make_tensor_value_info("flat", TensorProto.FLOAT, [-1, 12])]
    return _model(nodes, [-1, 3, -1, -1], [-1, 5], inits, info)


def test_paddle_style_minus_one_dims_with_input_shape(tmp_path):
    path = tmp_path / "paddle.onnx"
    onnx.save(paddle_style_model(), path)
    before = path.read_bytes()
    refused = CliRunner().invoke(cli, ["analyze", str(path)])
    assert refused.exit_code == 2 and "--input-shape" in refused.output
    result = CliRunner().invoke(cli, ["analyze", str(path), "--input-shape", "x=1x3x8x8",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert path.read_bytes() == before
    assert_prunes_exactly(str(path), {"x": (1, 3, 8, 8)})


def shuffle_model() -> onnx.ModelProto:
    """torchvision's channel_shuffle: view(n, 2, c // 2, h, w) with every size read by Shape."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Shape", ["r"], ["s"])]
    inits = [_weight("w1", [8, 3, 3, 3]), _weight("w2", [6, 8, 1, 1]),
             _init("two", 2, np.int64), _init("axes", [0], np.int64),
             _init("g2", [2], np.int64), _init("m1", [-1], np.int64)]
    dims = []
    for axis in range(4):
        inits.append(_init(f"i{axis}", axis, np.int64))
        nodes.append(helper.make_node("Gather", ["s", f"i{axis}"], [f"d{axis}"], axis=0))
        dims.append(f"d{axis}")
    nodes += [helper.make_node("Div", ["d1", "two"], ["half"])]
    parts = []
    for name in (dims[0], "half", dims[2], dims[3]):
        nodes.append(helper.make_node("Unsqueeze", [name, "axes"], [f"u_{name}"]))
        parts.append(f"u_{name}")
    nodes += [
        helper.make_node("Concat", [parts[0], "g2", *parts[1:]], ["t5"], axis=0),
        helper.make_node("Reshape", ["r", "t5"], ["five"]),
        helper.make_node("Transpose", ["five"], ["swapped"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Concat", [parts[0], "m1", parts[2], parts[3]], ["t4"], axis=0),
        helper.make_node("Reshape", ["swapped", "t4"], ["shuffled"]),
        helper.make_node("Conv", ["shuffled", "w2"], ["y"]),
    ]
    return _model(nodes, ["batch", 3, 6, 6], ["batch", 6, 6, 6], inits)


def test_channel_shuffle_from_shape_chains_prunes_at_any_batch():
    result = assert_prunes_exactly(shuffle_model())
    assert result.analysis.channels.prunable_groups()


def cls_token_model() -> onnx.ModelProto:
    """ViT's Expand(cls_token, Concat(Shape(x)[0:1], [1, C])) concatenated to the tokens."""
    chain, consts = _shape_slice("x", "n", 0, 1, "b")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        *chain,
        helper.make_node("Concat", ["n", "minus1", "c8"], ["tokens_shape"], axis=0),
        helper.make_node("Transpose", ["r"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "tokens_shape"], ["tokens"]),
        helper.make_node("Concat", ["n", "one", "c8"], ["cls_shape"], axis=0),
        helper.make_node("Expand", ["cls", "cls_shape"], ["cls_b"]),
        helper.make_node("Concat", ["cls_b", "tokens"], ["seq"], axis=1),
        helper.make_node("ReduceMean", ["seq"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["y"]),
    ]
    inits = [_weight("w1", [8, 3, 1, 1]), _weight("cls", [1, 1, 8]), _weight("head", [8, 4]),
             _init("minus1", [-1], np.int64), _init("c8", [8], np.int64),
             _init("one", [1], np.int64), *consts]
    return _model(nodes, ["N", 3, 4, 4], ["N", 4], inits)


def test_cls_token_expand_keeps_the_batch_symbolic():
    seed = cls_token_model()
    loaded = load_model(seed)
    assert "Expand" in [n.op_type for n in loaded.model.graph.node]
    for batch in (1, 3):
        feeds = _feeds(loaded.input_shapes, batch)
        (want,), (got,) = _run(seed, feeds), _run(loaded.model, feeds)
        assert got.shape == (batch, 4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_reshape_that_flattens_the_batch_is_not_rewritten_as_copy():
    # Reshape(x, [1, -1]) at batch 1 looks like "copy the batch"; it must still merge it.
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]),
             helper.make_node("Reshape", ["a", "t"], ["y"])]
    model = _model(nodes, ["N", 3, 2, 2], [1, "M"],
                   [_weight("w", [4, 3, 1, 1]), _init("t", [1, -1], np.int64)])
    loaded = load_model(model)
    feeds = _feeds(loaded.input_shapes, 3)
    assert _run(loaded.model, feeds)[0].shape == (1, 48)


@pytest.mark.skipif(not (DATA / "tv_shufflenet_tiny_op13.onnx").exists(), reason="fixture")
def test_real_torchvision_shufflenet_export_prunes_at_batch_1_and_3():
    assert_prunes_exactly(str(DATA / "tv_shufflenet_tiny_op13.onnx"))


def test_real_torchvision_vit_export_loads_with_symbolic_batch_and_counts_attention():
    path = str(DATA / "tv_vit_tiny_op14.onnx")
    analysis = onnxmorph.analyze(path)
    assert analysis.uncounted == []
    for batch in (1, 3):
        feeds = _feeds(analysis.loaded.input_shapes, batch)
        np.testing.assert_allclose(_run(analysis.loaded.model, feeds)[0], _run(path, feeds)[0],
                                   rtol=1e-5, atol=1e-5)
    # 16 tokens + cls = 17, 2 heads of 8: QKᵀ and AV each 2·17·17·8 multiply-adds
    attention = 2 * (2 * 17 * 17 * 8)
    matmuls = [n for n in analysis.loaded.model.graph.node if n.op_type == "MatMul"
               and n.input[1] not in analysis.loaded.initializers]
    assert len(matmuls) == 2
    counted = analysis.cost.macs.by_layer()
    assert sum(counted[n.name or n.output[0]] for n in matmuls) == attention


def _crash(payload, options):
    os.kill(os.getpid(), signal.SIGFPE)


def test_a_crash_in_native_shape_inference_is_an_error_not_a_dead_process(monkeypatch):
    monkeypatch.setattr(isolated, "_infer", _crash)
    with pytest.raises(UnsupportedModelError, match="crashed"):
        load_model(shuffle_model())


def test_folding_evaluates_the_opset_the_model_imports():
    # Unsqueeze-11 takes axes as an attribute; evaluated as Unsqueeze-13 it would not fold
    # and the Reshape after it would keep an unknown shape.
    from onnxmorph.graph.fold_constants import fold_constants

    nodes = [helper.make_node("Unsqueeze", ["c"], ["u"], axes=[0]),
             helper.make_node("Concat", ["u", "rest"], ["t"], axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"])]
    model = _model(nodes, [2, 6], [2, 3, 2],
                   [_init("c", 2, np.int64), _init("rest", [3, 2], np.int64)])
    model.opset_import[0].version = 11
    assert "t" in fold_constants(model)
    assert [n.op_type for n in model.graph.node] == ["Reshape"]
