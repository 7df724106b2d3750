"""MACs of every op that is not a weight layer: an explicit rule per op type, never a silent 0.

cost.py counts the weight layers (Conv, Gemm, MatMul with a weight) as functions of the alive
channels. Every other node comes here, once: ops that multiply two activations (attention's
QKᵀ and AV as MatMul or Einsum) or a weight the loader could not see (a Conv whose weight is a
graph input) are counted from their static shapes as constants; ops declared in NO_MACS cost
nothing by definition; anything else — a custom-domain op, an op without a rule, a computing
op whose shapes are unknown — is *uncounted* and listed, and analyze/prune refuse it unless
the user allows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import onnx

from onnxmorph.errors import UnsupportedModelError
from onnxmorph.graph.onnx_utils import get_attribute, is_default_domain

# Ops without multiply-accumulates by the MorphNet convention (only products of activations with
# weights or activations count): elementwise maths, activations, pooling, normalisation,
# reductions and data movement.
NO_MACS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BitShift Cast CastLike Ceil Celu Clip Compress Concat Constant ConstantOfShape Cos Cosh CumSum
DepthToSpace DequantizeLinear Div Dropout DynamicQuantizeLinear Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GroupNormalization HardSigmoid HardSwish Hardmax Identity
InstanceNormalization IsInf IsNaN LRN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax LpNormalization LpPool Max MaxPool MaxRoiPool MaxUnpool Mean MeanVarianceNormalization
Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad Pow QuantizeLinear Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign Round Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose
Trilu Unique Unsqueeze Upsample Where Xor
""".split())


class UncountedCostError(UnsupportedModelError):
    """Some node's MACs cannot be known; --allow-uncounted lists such nodes instead."""


@dataclass(frozen=True)
class Uncounted:
    node: str
    op_type: str
    reason: str

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "reason": self.reason}


def count_other_op(builder, node: onnx.NodeProto) -> None:
    """Add the MACs of `node` (not counted as a weight layer) to `builder`, or list it."""
    name = node.name or node.output[0]
    if not is_default_domain(node):
        builder.uncounted.append(Uncounted(name, node.op_type,
                                           f"custom-domain op ({node.domain})"))
        return
    if node.op_type in NO_MACS:
        return
    rule = _MAC_RULES.get(node.op_type)
    if rule is None:
        builder.uncounted.append(Uncounted(name, node.op_type, "no cost rule for this op"))
        return
    shapes = [builder.loaded.shapes.get(n) if n else None for n in node.input]
    out = builder.loaded.shapes.get(node.output[0])
    macs = rule(node, shapes, out)
    if macs is None:
        builder.uncounted.append(Uncounted(name, node.op_type, "shape could not be inferred"))
    elif macs:
        builder.add("macs", name, macs, builder.constant_form())


def check_counted(uncounted: list[Uncounted], allow: bool) -> None:
    """Refuse a cost with uncounted nodes unless the user allowed it."""
    if uncounted and not allow:
        first = uncounted[0]
        more = f" (and {len(uncounted) - 1} more)" if len(uncounted) > 1 else ""
        raise UncountedCostError(
            f"the MACs of {first.op_type} node '{first.node}' cannot be counted "
            f"({first.reason}){more}; pass --allow-uncounted to go on and list them"
        )


Shape = tuple[int, ...]
Rule = Callable[[onnx.NodeProto, list, "Shape | None"], "float | None"]


def _matmul(node, shapes, out) -> float | None:
    a = shapes[0]
    if a is None or out is None:
        return None
    return math.prod(out) * a[-1]  # one multiply-add per output element per reduced index


def _gemm(node, shapes, out) -> float | None:
    a = shapes[0]
    if a is None or out is None:
        return None
    return math.prod(out) * (a[0] if get_attribute(node, "transA", 0) else a[1])


def _conv_at(weight_index: int) -> Rule:
    def conv(node, shapes, out) -> float | None:
        x, w = shapes[0], shapes[weight_index]
        if x is None or w is None or out is None:
            return None
        if node.op_type == "ConvTranspose":  # [C_in, C_out/g, k…]: work per input pixel
            return math.prod(x) * math.prod(w[1:])
        return math.prod(out) * math.prod(w[1:])  # [C_out, C_in/g, k…]: per output element
    return conv


def _einsum(node, shapes, out) -> float | None:
    # onnx infers only Einsum's rank, so the sizes come from the equation and the inputs.
    if any(s is None for s in shapes):
        return None
    inputs, _, output = get_attribute(node, "equation").decode().replace(" ", "").partition("->")
    operands = inputs.split(",")
    if len(operands) == 1:
        return 0.0  # a transpose, trace or sum: no products
    if len(operands) > 2 or any("..." in o and not o.startswith("...") for o in operands):
        return None  # the order of contraction is onnxruntime's; a middle "..." is rare
    if not output:  # implicit form: labels that occur once, in alphabetical order
        letters = inputs.replace(",", "").replace("...", "")
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    sizes: dict[str, int] = {}
    batch: list[int] = []  # the broadcast dimensions "..." stands for
    for labels, shape in zip(operands, shapes):
        named = labels.replace("...", "")
        ellipsis = shape[:len(shape) - len(named)] if "..." in labels else ()
        batch = [max(a, b) for a, b in zip(_pad(batch, len(ellipsis)), _pad(ellipsis, len(batch)))]
        for label, dim in zip(named, shape[len(ellipsis):]):
            sizes[label] = max(sizes.get(label, 1), dim)  # a size-1 label broadcasts
    # every (batch, label…) combination is one multiply-add
    return math.prod(batch) * math.prod(sizes.values())


def _pad(dims, length: int) -> list[int]:
    return [1] * (length - len(dims)) + list(dims)


_MAC_RULES: dict[str, Rule] = {
    "MatMul": _matmul, "MatMulInteger": _matmul, "QLinearMatMul": _matmul, "Gemm": _gemm,
    "Einsum": _einsum,
    "Conv": _conv_at(1), "ConvTranspose": _conv_at(1), "ConvInteger": _conv_at(1),
    "QLinearConv": _conv_at(3),
}
