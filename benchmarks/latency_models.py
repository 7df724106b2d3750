"""Benchmark models for bench_latency.py: ResNet-50 from the onnx wheel's light model with
random weights (its weights are ConstantOfShape constants), with a dynamic batch."""

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


__all__ = ["random_resnet50"]
