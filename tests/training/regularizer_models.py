"""Tiny hand-built nets for the morph-net regularizer tests, with their data loaders.

x[N,2,6,6] → conv1 (4, 3×3) → BN1 → Relu "a" ─┬→ conv2 (4, 1×1) → BN2 ─┐
                                              └→ conv3 (4, 1×1) → BN3 ─┴→ Add → Relu → GAP
→ Flatten → MatMul w1 [4, 5] → Relu → MatMul w2 [5, 3] → "logits".
Groups: conv1's 4 units; the residual Add's 4 units (sources BN2 and BN3, or conv2 and conv3);
the hidden MatMul's 5 units (weight [K, N]: output channels on axis 1). `batchnorm=False`
drops the three BNs (a net for group lasso only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_LOADER = '''
import numpy as np
_arrays = np.load({npz!r})
def train_batches():
    for i in range(4):
        yield _arrays[f"x{{i}}"], _arrays[f"y{{i}}"]
def eval_batches():
    return train_batches()
'''


def regularizer_net(batchnorm: bool = True, seed: int = 0,
                    gamma_scale: float = 1.0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {
        "conv1.W": rng.normal(0, 0.4, (4, 2, 3, 3)), "conv2.W": rng.normal(0, 0.5, (4, 4, 1, 1)),
        "conv3.W": rng.normal(0, 0.5, (4, 4, 1, 1)), "w1": rng.normal(0, 0.5, (4, 5)),
        "w2": rng.normal(0, 0.5, (5, 3)),
    }
    nodes = [helper.make_node("Conv", ["x", "conv1.W"], ["c1"], pads=[1, 1, 1, 1], name="conv1")]
    previous = "c1"
    for index, conv in ((1, None), (2, "conv2"), (3, "conv3")):
        if conv is not None:
            nodes.append(helper.make_node("Conv", ["a", f"{conv}.W"], [f"c{index}"], name=conv))
        if batchnorm:
            for part, value in (("scale", gamma_scale * rng.uniform(0.5, 1.5, 4)),
                                ("bias", rng.normal(0, 0.1, 4)), ("mean", np.zeros(4)),
                                ("var", np.ones(4))):
                inits[f"bn{index}.{part}"] = value
            nodes.append(helper.make_node(
                "BatchNormalization", [f"c{index}", *(f"bn{index}.{p}" for p in
                                                      ("scale", "bias", "mean", "var"))],
                [f"n{index}"], name=f"bn{index}"))
            previous = f"n{index}"
        else:
            previous = f"c{index}"
        if index == 1:
            nodes.append(helper.make_node("Relu", [previous], ["a"], name="relu1"))
    branches = ["n2", "n3"] if batchnorm else ["c2", "c3"]
    nodes += [
        helper.make_node("Add", branches, ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["rs"], name="relu_s"),
        helper.make_node("GlobalAveragePool", ["rs"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["rh"], name="relu_h"),
        helper.make_node("MatMul", ["rh", "w2"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "regularizer_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_net_and_loader(folder: Path, **kwargs) -> tuple[Path, Path]:
    """The net saved as `net.onnx` and a loader of 4 batches of 8 labelled images."""
    rng = np.random.default_rng(3)
    arrays = {}
    for i in range(4):
        arrays[f"x{i}"] = rng.normal(0, 1, (8, 2, 6, 6)).astype(np.float32)
        arrays[f"y{i}"] = rng.integers(0, 3, 8).astype(np.int64)
    np.savez(folder / "data.npz", **arrays)
    loader = folder / "loader.py"
    loader.write_text(_LOADER.format(npz=str(folder / "data.npz")))
    path = folder / "net.onnx"
    onnx.save(regularizer_net(**kwargs), path)
    return path, loader
