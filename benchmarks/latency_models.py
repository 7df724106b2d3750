"""Benchmark models for bench_latency.py: ResNet-50 from the onnx wheel's light model with
random weights (its weights are ConstantOfShape constants), and MobileNetV2 (torchvision's
layout: Conv-BN-ReLU6, inverted residuals, 1280-wide head, 1000 classes) built directly with
random weights at 224x224; both with a dynamic batch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend/test/data/light"


def random_resnet50(path: Path, seed: int = 0) -> Path:
    """light_resnet50 with He-initialised convs, unit BatchNorm statistics, batch dim 'N'."""
    if path.exists():
        return path
    model = onnx.load(str(LIGHT / "light_resnet50.onnx"))
    graph, rng = model.graph, np.random.default_rng(seed)
    shapes = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        name, shape = node.output[0], tuple(int(d) for d in shapes[node.input[0]])
        graph.initializer.append(numpy_helper.from_array(_value(name, shape, rng), name))
    del graph.node[:]
    graph.node.extend(kept)
    for node in graph.node:  # the classifier's Reshape: keep the batch, flatten the rest
        if node.op_type == "Reshape":
            target = np.array([-1, 2048], np.int64)
            for init in graph.initializer:
                if init.name == node.input[1]:
                    init.CopyFrom(numpy_helper.from_array(target, init.name))
    used = {i for n in graph.node for i in n.input}
    live = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    inputs = [i for i in graph.input if i.name in used and i.name not in shapes]
    del graph.input[:]
    graph.input.extend(inputs)
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del graph.value_info[:]
    model.ir_version = max(model.ir_version, 7)  # initializers need not be graph inputs
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if len(shape) >= 2:  # conv / fc weight
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if name.endswith("_riv_0"):
        return np.ones(shape, np.float32)
    if name.endswith("_s_0"):
        return rng.uniform(0.5, 1.0, shape).astype(np.float32)
    return (rng.standard_normal(shape) * 0.05).astype(np.float32)


# torchvision's mobilenet_v2: (expansion t, output channels c, repeats n, first stride s)
MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]


def random_mobilenetv2(path: Path, seed: int = 0, size: int = 224) -> Path:
    """MobileNetV2 1.0 with He-initialised convs and BatchNorm (eval statistics), opset 13."""
    if path.exists():
        return path
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    counter = iter(range(10_000))

    def const(value: np.ndarray, hint: str) -> str:
        name = f"{hint}_{next(counter)}"
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv_bn(x: str, cin: int, cout: int, k: int, stride: int, group: int,
                relu6: bool) -> str:
        fan_in = cin // group * k * k
        w = rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
        y = f"conv_{next(counter)}"
        nodes.append(helper.make_node("Conv", [x, const(w, "W")], [y], name=y,
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4, group=group))
        z = f"bn_{next(counter)}"
        nodes.append(helper.make_node(
            "BatchNormalization", [y, const(rng.uniform(0.5, 1.0, cout), "s"),
                                   const(rng.standard_normal(cout) * 0.05, "b"),
                                   const(rng.standard_normal(cout) * 0.05, "m"),
                                   const(np.ones(cout), "v")], [z], name=z))
        if not relu6:
            return z
        out = f"relu6_{next(counter)}"
        nodes.append(helper.make_node("Clip", [z, const(np.float32(0), "lo"),
                                               const(np.float32(6), "hi")], [out], name=out))
        return out

    x, cin = conv_bn("input", 3, 32, 3, 2, 1, True), 32
    for t, c, n, s in MOBILENET_V2:
        for i in range(n):
            stride, hidden = (s if i == 0 else 1), cin * t
            h = conv_bn(x, cin, hidden, 1, 1, 1, True) if t != 1 else x
            h = conv_bn(h, hidden, hidden, 3, stride, hidden, True)
            h = conv_bn(h, hidden, c, 1, 1, 1, False)
            if stride == 1 and cin == c:
                out = f"add_{next(counter)}"
                nodes.append(helper.make_node("Add", [h, x], [out], name=out))
                h = out
            x, cin = h, c
    x = conv_bn(x, cin, 1280, 1, 1, 1, True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flat", axis=1))
    w = rng.standard_normal((1000, 1280)) * np.sqrt(1.0 / 1280)
    nodes.append(helper.make_node("Gemm", ["flat", const(w, "fc_W"),
                                           const(np.zeros(1000), "fc_B")], ["logits"],
                                  name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              ir_version=7)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


__all__ = ["random_mobilenetv2", "random_resnet50"]
