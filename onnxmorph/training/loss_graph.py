"""Raw ONNX nodes for the training loss: task loss + lam * cost, reduced to a scalar once.

Emitted as plain nodes from one `Block.build()` (nested onnxblock blocks each run the full
checker). Every term is kept rank-1 `[1]` and only the final total is reduced to a scalar:
rank-0 intermediates broke ORT's Add gradient ("axis must be in [-rank, rank-1]").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LOSS_KINDS = ("cross-entropy", "mse", "distill")
TARGET_INPUT = "onnxmorph_target"
LAM_INPUT = "onnxmorph_lam"
TASK_LOSS = "onnxmorph_task_loss"
COST_TERM = "onnxmorph_cost_term"
TOTAL_LOSS = "onnxmorph_total_loss"


@dataclass(frozen=True)
class LossSpec:
    kind: str
    output_name: str
    cost_output: str | None
    opset: int


class _Nodes:
    def __init__(self, graph: onnx.GraphProto, opset: int) -> None:
        self.graph, self.opset, self.count = graph, opset, 0

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self.count += 1
        out = out or f"onnxmorph_loss/{op_type.lower()}_{self.count}"
        name = f"onnxmorph_loss/{op_type}_{self.count}"
        self.graph.node.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def int64(self, values: list[int], hint: str) -> str:
        self.count += 1
        name = f"onnxmorph_loss/{hint}_{self.count}"
        self.graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def to_rank1(self, x: str, out: str | None = None) -> str:
        """Mean of all elements as a `[1]` tensor (no axes: reduce everything, any opset)."""
        mean = self.op("ReduceMean", [x], keepdims=1)
        return self.op("Reshape", [mean, self.int64([1], "shape1")], out)

    def sum_axis1(self, x: str) -> str:
        if self.opset >= 13:  # ReduceSum takes axes as an input from opset 13
            return self.op("ReduceSum", [x, self.int64([1], "axis1")], keepdims=1)
        return self.op("ReduceSum", [x], axes=[1], keepdims=1)


def _output_info(graph: onnx.GraphProto, name: str) -> onnx.ValueInfoProto:
    for out in graph.output:
        if out.name == name:
            return out
    raise LookupError(f"{name!r} is not a graph output")


def _add_target_input(graph: onnx.GraphProto, spec: LossSpec) -> None:
    info = copy.deepcopy(_output_info(graph, spec.output_name))
    info.name = TARGET_INPUT
    if spec.kind == "cross-entropy":
        # Labels: int64 class indices, the output shape without the class axis (axis 1).
        info.type.tensor_type.elem_type = TensorProto.INT64
        if len(info.type.tensor_type.shape.dim) > 1:
            del info.type.tensor_type.shape.dim[1]
    graph.input.append(info)


def _task_loss(nodes: _Nodes, spec: LossSpec) -> str:
    out, target = spec.output_name, TARGET_INPUT
    if spec.kind == "cross-entropy":
        # ORT's gradient of SoftmaxCrossEntropyLoss reads the optional log-probability output;
        # without it, building the gradient fails on graphs that have no BatchNormalization.
        per_sample = nodes.op("SoftmaxCrossEntropyLoss", [out, target], reduction="none")
        nodes.graph.node[-1].output.append(f"{per_sample}_log_prob")
        return nodes.to_rank1(per_sample, TASK_LOSS)
    if spec.kind == "mse":
        diff = nodes.op("Sub", [out, target])
        return nodes.to_rank1(nodes.op("Mul", [diff, diff]), TASK_LOSS)
    # distill: KL(softmax(teacher) || softmax(student)) over the class axis, T = 1.
    # Chosen over MSE on logits (still available as loss="mse" with teacher logits as target):
    # both matched the teacher equally well on our toy runs, but KL's size does not depend on
    # the logit scale of the model, so lam (balanced against the task loss) means the same
    # thing across models and a budget controller can start from the same lam range.
    log_p_teacher = nodes.op("LogSoftmax", [target], axis=1)
    p_teacher = nodes.op("Softmax", [target], axis=1)
    log_p_student = nodes.op("LogSoftmax", [out], axis=1)
    pointwise = nodes.op("Mul", [p_teacher, nodes.op("Sub", [log_p_teacher, log_p_student])])
    return nodes.to_rank1(nodes.sum_axis1(pointwise), TASK_LOSS)


def add_loss_nodes(graph: onnx.GraphProto, spec: LossSpec) -> tuple[str, list[str]]:
    """Append target/lam inputs and loss nodes to `graph`.

    Returns the scalar loss name and the additional outputs, in the order the training and
    eval models will emit them after the loss: task loss `[1]`, cost `[1]` (when a cost
    output is given), then the task output itself.
    """
    if spec.kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss {spec.kind!r}; expected one of {', '.join(LOSS_KINDS)}")
    nodes = _Nodes(graph, spec.opset)
    _add_target_input(graph, spec)
    task = _task_loss(nodes, spec)
    extra = [task]
    total = task
    if spec.cost_output is not None:
        graph.input.append(helper.make_tensor_value_info(LAM_INPUT, TensorProto.FLOAT, [1]))
        cost = nodes.op("Reshape", [spec.cost_output, nodes.int64([1], "shape1")], COST_TERM)
        total = nodes.op("Add", [task, nodes.op("Mul", [LAM_INPUT, cost])])
        extra.append(cost)
    loss = nodes.op("ReduceSum", [total], TOTAL_LOSS, keepdims=0)
    extra.append(spec.output_name)
    return loss, extra
