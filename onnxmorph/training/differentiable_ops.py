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

from onnxmorph.graph.contrib_ops import TRAINABLE_CONTRIB, is_contrib
from onnxmorph.graph.onnx_utils import default_opset, get_attribute

CONST_PREFIX = "onnxmorph_diff"

# Ops measured to have no gradient with onnxruntime-training-cpu 1.19.2 (one training step per
# op, tests/training/test_differentiable_table.py keeps the rewrites honest): the gradient
# builder is missing, or exists but has no CPU kernel (ResizeGrad, ConvTransposeGrad), or
# refuses the attributes (Pad in reflect/edge/wrap mode). Max/Min with several inputs, Clip
# without or with tensor bounds, Pow, Sqrt, Abs and AveragePool train as they are.
NON_DIFFERENTIABLE_OPS = frozenset(
    {
        "HardSigmoid", "HardSwish", "PRelu", "Elu", "Selu", "Softplus", "Mish", "GlobalMaxPool",
        "ReduceMax", "InstanceNormalization", "Upsample", "Einsum", "Sign", "ConvTranspose",
        "Resize", "Sum", "LRN", "Softsign", "Celu", "ThresholdedRelu", "ReduceSumSquare",
        "Dropout",
    }
)  # fmt: skip
# Pad trains in constant mode only.
_PAD_MODES_WITHOUT_GRADIENT = ("reflect", "edge", "wrap")


class _Emitter:
    """Collects the nodes and constants that replace one node, with unique names."""

    def __init__(self, node: onnx.NodeProto, opset: int, taken: set[str],
                 shapes: dict[str, tuple[int, ...]] | None = None,
                 inits: dict[str, onnx.TensorProto] | None = None) -> None:
        self.node = node
        self.shapes = shapes or {}
        self.consumed: set[str] = set()  # tensors some node or graph output reads
        self.inits_by_name = inits or {}
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

    def tensor(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        shape = self.shapes.get(name)
        return shape if shape is not None and all(d > 0 for d in shape) else None

    def constant_input(self, index: int) -> np.ndarray | None:
        """Value of input `index` when it is an initializer (None if absent or computed)."""
        if len(self.node.input) <= index or not self.node.input[index]:
            return None
        init = self.inits_by_name.get(self.node.input[index])
        return numpy_helper.to_array(init) if init is not None else None

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


def _softplus_core(e: _Emitter, out: str | None) -> str:
    # Stable form Relu(x) + Log(1 + Exp(-|x|)); the naive Log(1+Exp(x)) overflows for x > 88.
    x = e.node.input[0]
    tail = e.op("Exp", [e.op("Neg", [e.op("Abs", [x])])])
    log1p = e.op("Log", [e.op("Add", [tail, e.const(1.0, "one")])])
    return e.op("Add", [e.op("Relu", [x]), log1p], out)


def _softplus(e: _Emitter) -> None:
    _softplus_core(e, e.node.output[0])


def _mish(e: _Emitter) -> None:
    x = e.node.input[0]
    e.op("Mul", [x, e.op("Tanh", [_softplus_core(e, None)])], e.node.output[0])


def _softsign(e: _Emitter) -> None:
    x = e.node.input[0]
    denominator = e.op("Add", [e.op("Abs", [x]), e.const(1.0, "one")])
    e.op("Div", [x, denominator], e.node.output[0])


def _celu(e: _Emitter) -> None:
    # Celu(x) = Relu(x) + alpha * (Exp(min(x, 0) / alpha) - 1)
    x, alpha = e.node.input[0], get_attribute(e.node, "alpha", 1.0)
    scaled = e.op("Div", [e.neg_relu_neg(x), e.const(alpha, "alpha")])
    expm1 = e.op("Sub", [e.op("Exp", [scaled]), e.const(1.0, "one")])
    neg_part = e.op("Mul", [expm1, e.const(alpha, "alpha")])
    e.op("Add", [e.op("Relu", [x]), neg_part], e.node.output[0])


def _sum(e: _Emitter) -> None:
    # n-ary Sum has no gradient builder; a chain of binary Adds broadcasts the same way.
    inputs = list(e.node.input)
    if len(inputs) == 1:
        e.op("Identity", inputs, e.node.output[0])
        return
    total = inputs[0]
    for i, name in enumerate(inputs[1:], start=2):
        total = e.op("Add", [total, name], e.node.output[0] if i == len(inputs) else None)


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


_SIMPLE: dict[str, Callable[[_Emitter], None]] = {
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "PRelu": _prelu,
    "Softplus": _softplus,
    "Elu": _elu,
    "Selu": _selu,
    "Mish": _mish,
    "Softsign": _softsign,
    "Celu": _celu,
    "Sum": _sum,
}


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shape of every tensor shape inference can size (dynamic dims are -1)."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    infos = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for vi in infos:
        if vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else -1
                                    for d in vi.type.tensor_type.shape.dim)
    return shapes


def _rewrites() -> dict[str, Callable[[_Emitter], bool]]:
    from onnxmorph.training.differentiable_rewrites import SHAPED

    table: dict[str, Callable[[_Emitter], bool]] = {}
    for op, simple in _SIMPLE.items():
        table[op] = lambda e, simple=simple: simple(e) is None
    table.update(SHAPED)
    return table


def make_differentiable(
    model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None
) -> onnx.ModelProto:
    """Return a copy of `model` with every op of `REWRITTEN_OPS` that has a differentiable
    equivalent replaced by it (see the table in `_rewrites`).

    Rewrites that need a static size (LRN channels, Pad and Resize index maps, ReduceMax) read
    `shapes` (default: ONNX shape inference on `model`) and leave the node alone when the size
    is dynamic; `non_differentiable_nodes` then names it. Subgraphs are not rewritten.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    opset = default_opset(out, 0)
    taken = {i.name for i in graph.initializer} | {n.name for n in graph.node}
    taken |= {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    table = _rewrites()
    inits = {i.name: i for i in graph.initializer}
    consumed = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        rewrite = table.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rewrite is None:
            new_nodes.append(node)
            continue
        if shapes is None:
            shapes = tensor_shapes(model)
        emitter = _Emitter(node, opset, taken, shapes, inits)
        emitter.consumed = consumed
        if not rewrite(emitter):
            new_nodes.append(node)
            continue
        new_nodes.extend(emitter.nodes)
        graph.initializer.extend(emitter.inits)
    del graph.node[:]
    graph.node.extend(new_nodes)
    _expose_layer_norm_statistics(graph, taken)
    return out


def _expose_layer_norm_statistics(graph: onnx.GraphProto, taken: set[str]) -> None:
    """ORT builds LayerNormalization's gradient from its optional Mean and InvStdDev outputs;
    exported models leave them out, so the training copy names them (nothing reads them)."""
    for node in graph.node:
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx"):
            continue
        while len(node.output) < 3:
            node.output.append("")
        for index in (1, 2):
            if not node.output[index]:
                name, suffix = f"{node.output[0]}__{CONST_PREFIX}_stat", 0
                while f"{name}{suffix}" in taken:
                    suffix += 1
                taken.add(f"{name}{suffix}")
                node.output[index] = f"{name}{suffix}"


def _lacks_gradient(node: onnx.NodeProto) -> bool:
    if is_contrib(node):  # the one list of contrib ops with a gradient (graph/contrib_ops.py)
        return node.op_type not in TRAINABLE_CONTRIB
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Pad":
        mode = get_attribute(node, "mode", b"constant")
        return (mode.decode() if isinstance(mode, bytes) else mode) in _PAD_MODES_WITHOUT_GRADIENT
    return node.op_type in NON_DIFFERENTIABLE_OPS


def non_differentiable_nodes(model: onnx.ModelProto) -> list[str]:
    """Names (or op types) of top-level nodes whose op has no CPU gradient."""
    return [f"{n.name or '<unnamed>'} ({n.op_type})" for n in model.graph.node
            if _lacks_gradient(n)]
