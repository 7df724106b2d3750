"""Groups that lose every channel: remove the layers that only feed them where that is exact.

When every channel of a group is removed, a layer that reads only those channels (a residual
branch's last conv) computes its bias and nothing else: a per-channel constant. If that
constant flows through per-channel ops (batch norm, activations) straight into a residual Add,
the whole branch is replaced by the constant and the shortcut is left. Where the branch does
not end that way, the group keeps its best channel instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.fold_constants import remove_unused_initializers
from onnxmorph.graph.handlers.elementwise import UNARY_OPS
from onnxmorph.graph.layers import layer_kind, weight_layer_ops
from onnxmorph.graph.onnx_utils import default_opset, get_attribute

_LAYERS = weight_layer_ops()
_PER_CHANNEL = ("BatchNormalization", *UNARY_OPS)
_MERGES = ("Add", "Sum")


@dataclass
class DeadBranch:
    merge: onnx.NodeProto  # the residual Add that receives the branch
    branch_output: str  # the Add input the constant replaces
    constant: np.ndarray  # its value, over the seed's channels, broadcastable


def plan_dead_branches(
    analysis: Analysis, alive: np.ndarray, scores: np.ndarray | None = None
) -> tuple[list[DeadBranch], np.ndarray]:
    """Branches to replace by constants, and `alive` with the best channel revived wherever a
    layer reads only removed channels and its branch cannot be removed exactly."""
    alive = alive.copy()
    graph = analysis.loaded.model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    while True:  # reviving a channel can make another branch possible or needed
        branches, revived = _plan_once(analysis, alive, consumers, scores)
        if revived is None:
            return branches, alive
        alive[revived] = True


def _plan_once(analysis, alive, consumers, scores) -> tuple[list[DeadBranch], int | None]:
    """Branches for every layer that reads only removed channels, or a unit to revive."""
    layouts = analysis.channels.layouts
    outputs = {o.name for o in analysis.loaded.model.graph.output}
    branches: list[DeadBranch] = []
    replaced: dict[str, set[str]] = {}  # merge output → its inputs already replaced
    for node in analysis.loaded.model.graph.node:
        source = layouts.get(node.input[0]) if node.input else None
        result = layouts.get(node.output[0])
        if (node.op_type not in _LAYERS or source is None or alive[source.ids].any()
                or (result is not None and not alive[result.ids].any())):
            continue  # reads live channels, or is itself inside the removed region
        branch = _branch(node, analysis, consumers, outputs, alive)
        merge = branch.merge.output[0] if branch else ""
        taken = replaced.setdefault(merge, set())
        # A merge must keep one real input: it carries the batch and spatial shape.
        if branch is None or len(taken | {branch.branch_output}) >= len(branch.merge.input):
            units = np.unique(source.ids)
            ranking = scores[units] if scores is not None else -units.astype(np.float64)
            return [], int(units[int(np.argmax(ranking))])
        taken.add(branch.branch_output)
        branches.append(branch)
    return branches, None


def _branch(layer, analysis, consumers, outputs, alive) -> DeadBranch | None:
    chain: list[onnx.NodeProto] = []
    current = layer.output[0]
    while True:
        users = consumers.get(current, [])
        if current in outputs or len(users) != 1:
            return None
        user = users[0]
        if user.op_type in _MERGES and _other_inputs_live(user, current, analysis, alive):
            break
        if user.op_type not in _PER_CHANNEL or user.input[0] != current:
            return None
        chain.append(user)
        current = user.output[0]
    start = _layer_bias(layer, analysis)
    if start is None:
        return None
    return DeadBranch(merge=user, branch_output=current,
                      constant=_evaluate(layer.output[0], start, chain, current, analysis))


def _other_inputs_live(merge, branch, analysis, alive) -> bool:
    layouts = analysis.channels.layouts
    others = [n for n in merge.input if n != branch]
    return bool(others) and all(n in layouts and alive[layouts[n].ids].any() for n in others)


def _layer_bias(layer, analysis) -> np.ndarray | None:
    """The layer's output for an all-zero input (its bias), broadcastable over its output."""
    shape = analysis.loaded.shapes.get(layer.output[0])
    kind = layer_kind(layer)
    if shape is None or kind is None:
        return None
    axis = kind.activation_axis(len(shape))
    channels = shape[axis]
    values = analysis.loaded.initializers
    bias_name = None
    if kind.bias is not None and len(layer.input) > kind.bias and layer.input[kind.bias]:
        bias_name = layer.input[kind.bias]
    if bias_name is None:
        bias = np.zeros(channels, np.float32)
    elif bias_name not in values:
        return None  # a quantized or run-time bias: keep a channel instead
    else:
        bias = np.broadcast_to(values[bias_name], (channels,)).astype(np.float32)
        bias = bias * float(get_attribute(layer, "beta", 1.0))  # Gemm's beta (1 elsewhere)
    view = [1] * len(shape)
    view[axis] = channels
    return bias.reshape(view)


def _evaluate(start_name, start, chain, end, analysis) -> np.ndarray:
    if not chain:
        return start
    values = analysis.loaded.initializers
    needed = {n for node in chain for n in node.input if n in values}
    graph = helper.make_graph(
        list(chain), "branch",
        [helper.make_tensor_value_info(start_name, onnx.TensorProto.FLOAT, list(start.shape))],
        [helper.make_tensor_value_info(end, onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(values[n], n) for n in needed],
    )
    opset = default_opset(analysis.loaded.model, 13)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return np.asarray(ReferenceEvaluator(model).run(None, {start_name: start})[0])


def remove_unused_nodes(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nobody reads, repeatedly, then unused initializers."""
    keep_names = {o.name for o in graph.output}
    while True:
        used = keep_names | {n for node in graph.node for n in node.input}
        dead = [i for i, node in enumerate(graph.node)
                if not any(out in used for out in node.output if out)]
        if not dead:
            break
        for index in reversed(dead):
            del graph.node[index]
    remove_unused_initializers(graph)
