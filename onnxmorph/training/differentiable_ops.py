"""Rewrite ops that have no CPU gradient in ORT 1.19.2 into equivalent differentiable ops.

Used on the TRAINING copy of a model only: the inference model keeps its fused ops. Each
rewrite computes the same values as the original op (tests compare them numerically).
Constants are rank-1 `[1]` tensors except Clip bounds, which ONNX requires to be scalars;
they get the `onnxmorph_diff` prefix so the trainable-parameter search can skip them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxmorph.graph.onnx_utils import default_opset, get_attribute

CONST_PREFIX = "onnxmorph_diff"

# Ops measured to have no gradient on CPU (see ORT_TRAINING_NOTES.md and our own probes).
NON_DIFFERENTIABLE_OPS = frozenset(
    {
        "HardSigmoid", "HardSwish", "PRelu", "Elu", "Selu", "Softplus", "Mish", "GlobalMaxPool",
        "ReduceMax", "InstanceNormalization", "Upsample", "Einsum", "Sign", "ConvTranspose",
        "Resize",
    }
)  # fmt: skip


class _Emitter:
    """Collects the nodes and constants that replace one node, with unique names."""

    def __init__(self, node: onnx.NodeProto, opset: int, taken: set[str]) -> None:
        self.node = node
        self.opset = opset
        self.taken = taken
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._base = f"{CONST_PREFIX}/{node.name or node.op_type}"

    def name(self, hint: str) -> str:
        candidate, i = f"{self._base}/{hint}", 0
        while candidate in self.taken:
            i += 1
            candidate = f"{self._base}/{hint}_{i}"
        self.taken.add(candidate)
        return candidate

    def const(self, value: float, hint: str, scalar: bool = False) -> str:
        arr = np.array(value if scalar else [value], dtype=np.float32)
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs)
        )
        return out

    def clip(self, x: str, lo: float, hi: float, out: str | None = None) -> str:
        if self.opset < 11:  # Clip bounds were attributes before opset 11
            return self.op("Clip", [x], out, min=lo, max=hi)
        lo_name = self.const(lo, "clip_min", scalar=True)
        hi_name = self.const(hi, "clip_max", scalar=True)
        return self.op("Clip", [x, lo_name, hi_name], out)

    def neg_relu_neg(self, x: str) -> str:
        """min(x, 0) written as -Relu(-x): Min has no CPU gradient with a constant."""
        return self.op("Neg", [self.op("Relu", [self.op("Neg", [x])])])




def _hard_sigmoid(e: _Emitter) -> None:
    n = e.node
    scaled = e.op("Mul", [n.input[0], e.const(get_attribute(n, "alpha", 0.2), "alpha")])
    shifted = e.op("Add", [scaled, e.const(get_attribute(n, "beta", 0.5), "beta")])
    e.clip(shifted, 0.0, 1.0, n.output[0])


def _hard_swish(e: _Emitter) -> None:
    x = e.node.input[0]
    gate = e.clip(e.op("Add", [x, e.const(3.0, "three")]), 0.0, 6.0)
    e.op("Div", [e.op("Mul", [x, gate]), e.const(6.0, "six")], e.node.output[0])


def _prelu(e: _Emitter) -> None:
    # PRelu(x) = Relu(x) - slope * Relu(-x); Mul broadcasts slope exactly as PRelu does.
    x, slope = e.node.input[0], e.node.input[1]
    neg_part = e.op("Mul", [slope, e.op("Relu", [e.op("Neg", [x])])])
    e.op("Sub", [e.op("Relu", [x]), neg_part], e.node.output[0])


def _softplus(e: _Emitter) -> None:
    # Stable form Relu(x) + Log(1 + Exp(-|x|)); the naive Log(1+Exp(x)) overflows for x > 88.
    x = e.node.input[0]
    tail = e.op("Exp", [e.op("Neg", [e.op("Abs", [x])])])
    log1p = e.op("Log", [e.op("Add", [tail, e.const(1.0, "one")])])
    e.op("Add", [e.op("Relu", [x]), log1p], e.node.output[0])


def _elu_core(e: _Emitter, alpha: float, out: str | None) -> str:
    # Elu(x) = Relu(x) + alpha * (Exp(min(x, 0)) - 1)
    x = e.node.input[0]
    expm1 = e.op("Sub", [e.op("Exp", [e.neg_relu_neg(x)]), e.const(1.0, "one")])
    neg_part = e.op("Mul", [expm1, e.const(alpha, "alpha")])
    return e.op("Add", [e.op("Relu", [x]), neg_part], out)


def _elu(e: _Emitter) -> None:
    _elu_core(e, get_attribute(e.node, "alpha", 1.0), e.node.output[0])


def _selu(e: _Emitter) -> None:
    alpha = get_attribute(e.node, "alpha", 1.67326319217681884765625)
    gamma = get_attribute(e.node, "gamma", 1.05070102214813232421875)
    e.op("Mul", [_elu_core(e, alpha, None), e.const(gamma, "gamma")], e.node.output[0])


def _global_max_pool(e: _Emitter, spatial: list[int] | None) -> bool:
    if not spatial or any(d <= 0 for d in spatial):
        return False  # dynamic spatial size: leave it; the artifact builder reports it clearly
    e.op("MaxPool", [e.node.input[0]], e.node.output[0], kernel_shape=spatial)
    return True


_SIMPLE: dict[str, Callable[[_Emitter], None]] = {
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "PRelu": _prelu,
    "Softplus": _softplus,
    "Elu": _elu,
    "Selu": _selu,
}


def _spatial_dims(model: onnx.ModelProto) -> dict[str, list[int] | None]:
    """Static spatial dims (everything after N, C) of every tensor shape inference knows."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    dims: dict[str, list[int] | None] = {}
    for vi in infos:
        shape = vi.type.tensor_type.shape
        if len(shape.dim) < 3:
            dims[vi.name] = None
            continue
        sizes = [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim[2:]]
        dims[vi.name] = sizes
    return dims




def make_differentiable(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of `model` with HardSigmoid, HardSwish, PRelu, Softplus, Elu, Selu and
    (static-shape) GlobalMaxPool replaced by ops that have CPU gradients.

    Ops in subgraphs (If/Loop bodies) are not rewritten. Ops that cannot be rewritten stay.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    opset = default_opset(out, 0)
    taken = {i.name for i in graph.initializer} | {n.name for n in graph.node}
    taken |= {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    spatial = None
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        emitter = _Emitter(node, opset, taken)
        if node.op_type in _SIMPLE:
            _SIMPLE[node.op_type](emitter)
        elif node.op_type == "GlobalMaxPool":
            spatial = spatial if spatial is not None else _spatial_dims(model)
            if not _global_max_pool(emitter, spatial.get(node.input[0])):
                new_nodes.append(node)
                continue
        else:
            new_nodes.append(node)
            continue
        new_nodes.extend(emitter.nodes)
        graph.initializer.extend(emitter.inits)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return out


def non_differentiable_nodes(model: onnx.ModelProto) -> list[str]:
    """Names (or op types) of top-level nodes whose op has no CPU gradient."""
    return [
        f"{n.name or '<unnamed>'} ({n.op_type})"
        for n in model.graph.node
        if n.op_type in NON_DIFFERENTIABLE_OPS and n.domain in ("", "ai.onnx")
    ]
