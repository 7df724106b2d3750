"""morph-net's FLOPs-weighted regularizers as a cost term inside the ONNX Runtime training graph.

Every channel (unit) gets a *regularization value* r_u read off the weights it owns:
- gamma (GammaL1Regularizer): |γ| of the BatchNormalization that scales it;
- group lasso (GroupLassoRegularizer, l1_fraction 0): sqrt(mean(w²)) of the weights that
  produce it, i.e. the group's L2 norm / sqrt(dim).
A unit produced by several sources (the branches of a residual Add) takes their maximum, as
morph-net's default MaxGroupingRegularizer does. The term added to the loss is

    Σ_u w_u · r_u,   w_u = ∂cost/∂alive_u at the current alive structure / norm

which is morph-net's CostCalculator with `is_regularization`: for each bilinear term
coef · in · out it adds coef · (alive_in · reg_out + alive_out · reg_in), so a channel's
weight is the FLOPs it costs given how many channels around it are alive. (morph-net counts a
depthwise conv's group twice, reg_in + reg_out; the derivative counts it once.) The weights
w are fed each step as the `[num_units]` input WEIGHTS_INPUT, recomputed by the caller from
the alive structure; `norm` makes the seed's term 1, so λ means what it means for the gates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxmorph.graph.onnx_utils import default_opset

PREFIX = "onnxmorph_reg"
WEIGHTS_INPUT = f"{PREFIX}_weights"
COST_OUTPUT = "onnxmorph_cost"  # the name the loss graph adds as λ · cost
GROUP_NORM_EPS = 1e-12  # inside the square root: its gradient at an all-zero row is finite


@dataclass(frozen=True)
class RegularizerSource:
    """One initializer whose channels regularize units: `units[i]` is the unit of channel i.

    kind "abs": r = |value| ([C] vector, BN γ). kind "group_norm": r = sqrt(mean(row²)) of
    the value viewed as rows (`perm` transposes the output axis first, then [C, -1])."""

    name: str
    units: np.ndarray
    kind: str
    perm: tuple[int, ...] | None = None

    def values(self, value: np.ndarray) -> np.ndarray:
        """The source's per-channel regularization values (numpy, float64)."""
        value = np.asarray(value, dtype=np.float64)
        if self.kind == "abs":
            return np.abs(value.reshape(-1))
        rows = (value.transpose(self.perm) if self.perm else value).reshape(self.units.size, -1)
        return np.sqrt((rows ** 2).mean(axis=1) + GROUP_NORM_EPS)


def unit_values(sources: list[RegularizerSource], params: dict[str, np.ndarray],
                num_units: int) -> np.ndarray:
    """r_u for every unit: the maximum over its sources (0 for units without one)."""
    values = np.zeros(num_units)
    for source in sources:
        np.maximum.at(values, source.units, source.values(params[source.name]))
    return values


@dataclass
class RegularizedModel:
    model: onnx.ModelProto
    sources: list[RegularizerSource]
    num_units: int

    def values(self, params: dict[str, np.ndarray]) -> np.ndarray:
        return unit_values(self.sources, params, self.num_units)


def insert_regularizer(model: onnx.ModelProto, sources: list[RegularizerSource],
                       num_units: int) -> RegularizedModel:
    """A copy of `model` with the input WEIGHTS_INPUT and the output COST_OUTPUT = Σ w · r."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    nodes = _Nodes(graph, default_opset(copy, 13))
    parts = [nodes.source_values(s) for s in sources]
    # Unit u's value is the max over columns of one Gather each from [all source values, 0]:
    # column k holds u's k-th source, or the trailing 0 when u has fewer.
    joined = nodes.op("Concat", [*parts, nodes.const(np.zeros(1, np.float32), "zero")],
                      "values", axis=0)
    total = sum(s.units.size for s in sources)
    slots: list[list[int]] = [[] for _ in range(num_units)]
    offset = 0
    for source in sources:
        for i, unit in enumerate(source.units.tolist()):
            slots[unit].append(offset + i)
        offset += source.units.size
    depth = max(1, max(len(s) for s in slots))
    columns = []
    for k in range(depth):
        index = np.array([s[k] if k < len(s) else total for s in slots], np.int64)
        columns.append(nodes.op("Gather", [joined, nodes.const(index, f"slot{k}")],
                                f"column{k}", axis=0))
    per_unit = columns[0] if depth == 1 else nodes.op("Max", columns, "unit_values")
    graph.input.append(helper.make_tensor_value_info(WEIGHTS_INPUT, onnx.TensorProto.FLOAT,
                                                     [num_units]))
    weighted = nodes.op("Mul", [per_unit, WEIGHTS_INPUT], "weighted")
    summed = nodes.op("ReduceSum", [weighted, nodes.const(np.array([0], np.int64), "axis")],
                      "sum", keepdims=1)
    graph.node.append(helper.make_node("Identity", [summed], [COST_OUTPUT], name=COST_OUTPUT))
    graph.output.append(helper.make_tensor_value_info(COST_OUTPUT, onnx.TensorProto.FLOAT, [1]))
    return RegularizedModel(copy, list(sources), num_units)


class _Nodes:
    def __init__(self, graph: onnx.GraphProto, opset: int) -> None:
        self.graph, self.opset, self.counter = graph, opset, 0

    def const(self, value: np.ndarray, hint: str) -> str:
        self.counter += 1
        name = f"{PREFIX}/const/{hint}_{self.counter}"
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        self.counter += 1
        out = f"{PREFIX}/{hint}_{self.counter}"
        self.graph.node.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def source_values(self, source: RegularizerSource) -> str:
        if source.kind == "abs":
            flat = self.op("Reshape", [source.name, self.const(np.array([-1], np.int64),
                                                                "flat")], "gamma")
            return self.op("Abs", [flat], "abs_gamma")
        value = source.name
        if source.perm:
            value = self.op("Transpose", [value], "out_first", perm=list(source.perm))
        rows = self.op("Reshape", [value, self.const(np.array([source.units.size, -1], np.int64),
                                                     "rows")], "rows")
        squares = self.op("Mul", [rows, rows], "squares")
        if self.opset >= 18:  # ReduceMean takes its axes as an input from opset 18
            mean = self.op("ReduceMean", [squares, self.const(np.array([1], np.int64), "axis1")],
                           "mean_square", keepdims=0)
        else:
            mean = self.op("ReduceMean", [squares], "mean_square", axes=[1], keepdims=0)
        shifted = self.op("Add", [mean, self.const(np.array([GROUP_NORM_EPS], np.float32),
                                                   "eps")], "shifted")
        return self.op("Sqrt", [shifted], "group_norm")
