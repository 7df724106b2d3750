"""Re-initialise a model's weights as PyTorch initialises a fresh module (`--reinit`).

The control of "Rethinking the value of network pruning" (Liu et al., 2019): train the
pruned *structure* from scratch, to tell whether the learned widths or the inherited weights
carry the accuracy. The graph and every initializer's shape stay as they are; only values
change, drawn from one seeded generator in graph order, so a seed gives the same model.

- Conv / ConvTranspose / Gemm / MatMul weights: `kaiming_uniform_(a=sqrt(5))`, which is
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in as `torch.nn.init._calculate_fan_in_and_fan_out`
  reads the tensor: dim 1 × kernel size for convolutions (for ConvTranspose that is its
  output channels per group, as in PyTorch), the input features for Gemm and MatMul.
- Their biases (Conv/Gemm input 2; a MatMul's `Add` of a constant vector, as PyTorch's
  Linear exports): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
- BatchNormalization: scale 1, bias 0, running mean 0, running var 1. LayerNormalization
  and InstanceNormalization: scale 1, bias 0.
- Everything else (PRelu slopes, embeddings, shape constants) keeps its value; the result
  lists what was re-initialised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxmorph.graph.layers import LayerKind, layer_kind
from onnxmorph.graph.onnx_utils import get_attribute

_NORMS = {"BatchNormalization": (1.0, 0.0, 0.0, 1.0),  # scale, bias, mean, var
          "LayerNormalization": (1.0, 0.0), "InstanceNormalization": (1.0, 0.0)}


@dataclass
class ReinitResult:
    model: onnx.ModelProto
    weights: list[str] = field(default_factory=list)  # Kaiming-uniform
    biases: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)  # set to 1 / 0

    def to_dict(self) -> dict:
        return {"weights": len(self.weights), "biases": len(self.biases),
                "normalisation_parameters": len(self.norms)}


def fan_in(node: onnx.NodeProto, shape: tuple[int, ...]) -> int:
    """PyTorch's fan_in of `node`'s weight of `shape`."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return int(shape[1] * math.prod(shape[2:]))
    if node.op_type == "Gemm" and int(get_attribute(node, "transB", 0)):
        return int(shape[1])  # [out, in]: PyTorch's own Linear layout
    return int(shape[0])  # Gemm without transB and MatMul: [in, out]


def reinitialize(model: onnx.ModelProto, seed: int = 0) -> ReinitResult:
    """A copy of `model` with freshly initialised weights (see the module doc)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    rng = np.random.default_rng(seed)
    result = ReinitResult(out)
    done: set[str] = set()

    def assign(name: str, value: np.ndarray, kind: list[str]) -> None:
        old = inits[name]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(old.data_type)
        old.CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
        done.add(name)
        kind.append(name)

    def float_init(name: str) -> bool:
        init = inits.get(name)
        return (init is not None and name not in done
                and init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                       onnx.TensorProto.DOUBLE))

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in out.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in out.graph.node:
        kind = layer_kind(node)
        if kind is None:
            continue
        if kind.weight is not None:  # graph/layers.py: where each op keeps weight and bias
            weight = node.input[kind.weight] if len(node.input) > kind.weight else ""
            if not float_init(weight):
                continue
            shape = tuple(inits[weight].dims)
            if len(shape) < 2:
                continue
            bound = 1.0 / math.sqrt(max(fan_in(node, shape), 1))
            assign(weight, rng.uniform(-bound, bound, shape), result.weights)
            for bias in _biases(node, kind, consumers):
                # A MatMul's Add counts as its bias only as a vector (not an embedding).
                if float_init(bias) and (node.op_type != "MatMul" or len(inits[bias].dims) == 1):
                    shape = tuple(inits[bias].dims)
                    assign(bias, rng.uniform(-bound, bound, shape), result.biases)
        elif node.op_type in _NORMS:
            for name, value in zip(node.input[1:], _NORMS[node.op_type]):
                if float_init(name):
                    assign(name, np.full(tuple(inits[name].dims), value), result.norms)
    return result


def _biases(node: onnx.NodeProto, kind: LayerKind,
            consumers: dict[str, list[onnx.NodeProto]]) -> list[str]:
    if kind.bias is not None:
        return [node.input[kind.bias]] if len(node.input) > kind.bias and node.input[kind.bias] \
            else []
    if node.op_type != "MatMul":
        return []
    # PyTorch's Linear on a 3-D input exports MatMul then Add(bias).
    users = consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add":
        return [name for name in users[0].input if name != node.output[0]]
    return []
