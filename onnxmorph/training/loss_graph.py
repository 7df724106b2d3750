"""Raw ONNX nodes for the training loss: task loss + lam * cost, reduced to a scalar once.

Task losses (`LOSS_KINDS`): `cross-entropy` on integer labels; `mse` on float targets;
`distill`, KL(softmax(t/T) || softmax(s/T)) * T^2 to the teacher's logits t over the class
axis (T = 1 unless asked); `distill-mse`, MSE to the teacher's outputs (outputs that are not
class scores); `ce+distill`, (1 - a) * cross-entropy + a * T^2 * KL at temperature T, fed
the labels and the teacher's logits (input `onnxmorph_teacher`). T^2 keeps the KL term's
gradient the size of the cross-entropy's as T grows (Hinton et al., 2015).

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

LOSS_KINDS = ("cross-entropy", "mse", "distill", "distill-mse", "ce+distill")
LABEL_LOSSES = ("cross-entropy", "ce+distill")  # losses whose target is int64 class indices
TARGET_INPUT = "onnxmorph_target"
TEACHER_INPUT = "onnxmorph_teacher"  # the teacher's outputs, for ce+distill
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
    temperature: float = 1.0  # of the KL term (distill, ce+distill)
    distill_weight: float = 0.5  # a of ce+distill

class _Nodes:
    def __init__(self, graph: onnx.GraphProto, opset: int) -> None:
        self.graph, self.opset, self.count = graph, opset, 0

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self.count += 1
        out = out or f"onnxmorph_loss/{op_type.lower()}_{self.count}"
        name = f"onnxmorph_loss/{op_type}_{self.count}"
        self.graph.node.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def float1(self, value: float, hint: str) -> str:
        """A `[1]` float constant (rank 0 broke ORT's gradients, see the module doc)."""
        self.count += 1
        name = f"onnxmorph_loss/{hint}_{self.count}"
        self.graph.initializer.append(numpy_helper.from_array(np.array([value], np.float32),
                                                              name))
        return name

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
    if spec.kind in LABEL_LOSSES:
        # Labels: int64 class indices, the output shape without the class axis (axis 1).
        info.type.tensor_type.elem_type = TensorProto.INT64
        if len(info.type.tensor_type.shape.dim) > 1:
            del info.type.tensor_type.shape.dim[1]
    graph.input.append(info)
    if spec.kind == "ce+distill":
        teacher = copy.deepcopy(_output_info(graph, spec.output_name))
        teacher.name = TEACHER_INPUT
        graph.input.append(teacher)


def _cross_entropy(nodes: _Nodes, out: str, labels: str, name: str | None = None) -> str:
    # ORT's gradient of SoftmaxCrossEntropyLoss reads the optional log-probability output;
    # without it, building the gradient fails on graphs that have no BatchNormalization.
    per_sample = nodes.op("SoftmaxCrossEntropyLoss", [out, labels], reduction="none")
    nodes.graph.node[-1].output.append(f"{per_sample}_log_prob")
    return nodes.to_rank1(per_sample, name)


def _kl(nodes: _Nodes, out: str, teacher: str, temperature: float,
        name: str | None = None) -> str:
    """T^2 * mean over samples (and positions) of KL(softmax(t/T) || softmax(s/T)), axis 1."""
    if temperature != 1.0:
        inverse = nodes.float1(1.0 / temperature, "inv_temperature")
        out, teacher = nodes.op("Mul", [out, inverse]), nodes.op("Mul", [teacher, inverse])
    log_p_teacher = nodes.op("LogSoftmax", [teacher], axis=1)
    p_teacher = nodes.op("Softmax", [teacher], axis=1)
    log_p_student = nodes.op("LogSoftmax", [out], axis=1)
    pointwise = nodes.op("Mul", [p_teacher, nodes.op("Sub", [log_p_teacher, log_p_student])])
    kl = nodes.to_rank1(nodes.sum_axis1(pointwise), None if temperature != 1.0 else name)
    if temperature == 1.0:
        return kl
    return nodes.op("Mul", [kl, nodes.float1(temperature * temperature, "t_squared")], name)


def _task_loss(nodes: _Nodes, spec: LossSpec) -> str:
    out, target = spec.output_name, TARGET_INPUT
    if spec.kind == "cross-entropy":
        return _cross_entropy(nodes, out, target, TASK_LOSS)
    if spec.kind in ("mse", "distill-mse"):
        diff = nodes.op("Sub", [out, target])
        return nodes.to_rank1(nodes.op("Mul", [diff, diff]), TASK_LOSS)
    if spec.kind == "distill":
        # KL rather than MSE on logits (still available as distill-mse): both matched the
        # teacher equally well on our toy runs, but KL's size does not depend on the logit
        # scale of the model, so lam (balanced against the task loss) means the same thing
        # across models and a budget controller can start from the same lam range.
        return _kl(nodes, out, target, spec.temperature, TASK_LOSS)
    weight = spec.distill_weight
    ce = nodes.op("Mul", [_cross_entropy(nodes, out, target), nodes.float1(1 - weight, "ce_w")])
    kl = nodes.op("Mul", [_kl(nodes, out, TEACHER_INPUT, spec.temperature),
                          nodes.float1(weight, "kl_w")])
    return nodes.op("Add", [ce, kl], TASK_LOSS)


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
