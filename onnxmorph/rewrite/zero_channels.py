"""The seed with removed channels zeroed: what a pruned model must compute exactly.

A LayerNormalization over removed channels (--prune-embedding) is the one place where zeros
are not enough: the pruned model normalises over the kept channels only, while the seed's
mean and variance would count the zeros. There the reference normalises over the kept
channels too (a masked LayerNorm at full width), which is what the pruned model promises;
a ReduceMean over removed channels (a decomposed LayerNorm's mean and variance) likewise
becomes the mean over the kept ones.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxmorph.graph.channels import mask_shape
from onnxmorph.graph.handlers.base import Layout
from onnxmorph.graph.onnx_utils import get_attribute, is_default_domain


def zero_removed_channels(
    model: onnx.ModelProto,
    layouts: dict[str, Layout],
    shapes: dict[str, tuple[int, ...]],
    keep: dict[str, np.ndarray],
) -> onnx.ModelProto:
    """A copy of `model` in which every channel that `keep` drops is multiplied by zero."""
    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    graph = masked.graph
    renamed: dict[str, str] = {}
    new_nodes: dict[str, onnx.NodeProto] = {}
    # Quantized (integer) tensors cannot be multiplied by a float mask; zeroing the float tensor
    # a QuantizeLinear reads zeroes its DequantizeLinear output too (DQ(Q(0)) == 0).
    quantized = {n.output[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    for name, mask in keep.items():
        if mask.all() or name in quantized:
            continue
        layout = layouts[name]
        values = mask.astype(np.float32).reshape(mask_shape(layout, len(shapes[name])))
        const_name, out_name = f"{name}__zero_mask", f"{name}__zeroed"
        graph.initializer.append(numpy_helper.from_array(values, const_name))
        new_nodes[name] = helper.make_node("Mul", [name, const_name], [out_name],
                                           name=f"{name}__zero")
        renamed[name] = out_name
    ordered: list[onnx.NodeProto] = []
    for inp in graph.input:
        if inp.name in new_nodes:
            ordered.append(new_nodes[inp.name])
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    axes_inputs = _int_constants(graph)
    for node in graph.node:
        original_input = node.input[0] if node.input else ""
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
        mask = keep.get(original_input)
        layout, shape = layouts.get(original_input), shapes.get(original_input)
        if _normalises_removed(node, mask, layout, shape, used):
            ordered.extend(_masked_layer_norm(node, mask, graph))
        elif _averages_removed(node, mask, layout, shape, axes_inputs):
            ordered.extend(_masked_mean(node, mask, graph))
        else:
            ordered.append(node)
        ordered.extend(new_nodes[out] for out in node.output if out in new_nodes)
    del graph.node[:]
    graph.node.extend(ordered)
    return masked


def _normalises_removed(node: onnx.NodeProto, mask: np.ndarray | None, layout: Layout | None,
                        shape: tuple[int, ...] | None, used: set[str]) -> bool:
    """A LayerNormalization over the last axis alone whose input lost channels there (and
    whose mean/inv-std outputs nobody reads)."""
    if node.op_type != "LayerNormalization" or not is_default_domain(node):
        return False
    if mask is None or mask.all() or layout is None or shape is None:
        return False
    axis = get_attribute(node, "axis", -1)
    last = len(shape) - 1
    return (layout.axes == (last,) and axis in (-1, last)
            and not any(name in used for name in node.output[1:] if name))


def _masked_layer_norm(node: onnx.NodeProto, mask: np.ndarray,
                       graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """y = (x - mean_k) / sqrt(var_k + eps) * scale + bias, mean and variance over the kept
    channels k only (the removed ones are zeroed after it, as every removed channel is)."""
    prefix = f"{node.output[0]}__masked_ln"
    keep = mask.astype(np.float32).ravel()
    eps = get_attribute(node, "epsilon", 1e-5)
    for suffix, value in (("mask", keep), ("count", np.array(keep.sum(), np.float32)),
                          ("axes", np.array([-1], np.int64)), ("eps", np.array(eps, np.float32))):
        graph.initializer.append(numpy_helper.from_array(value, f"{prefix}_{suffix}"))
    x, c = node.input[0], lambda suffix: f"{prefix}_{suffix}"
    steps = [
        ("Mul", [x, c("mask")], "xm"), ("ReduceSum", ["xm", c("axes")], "sum"),
        ("Div", ["sum", c("count")], "mean"), ("Sub", [x, "mean"], "diff"),
        ("Mul", ["diff", c("mask")], "centred"), ("Mul", ["centred", "centred"], "square"),
        ("ReduceSum", ["square", c("axes")], "sqsum"), ("Div", ["sqsum", c("count")], "var"),
        ("Add", ["var", c("eps")], "vareps"), ("Sqrt", ["vareps"], "std"),
        ("Div", ["centred", "std"], "normed"), ("Mul", ["normed", node.input[1]], "scaled"),
    ]
    nodes = []
    local = {name for _, _, name in steps}
    for op, inputs, out in steps:
        inputs = [c(i) if i in local else i for i in inputs]
        nodes.append(helper.make_node(op, inputs, [c(out)], name=c(out)))
    result = c("scaled")
    if len(node.input) > 2 and node.input[2]:
        nodes.append(helper.make_node("Add", [result, node.input[2]], [c("biased")],
                                      name=c("biased")))
        result = c("biased")
    nodes.append(helper.make_node("Identity", [result], [node.output[0]], name=c("out")))
    return nodes


def _averages_removed(node: onnx.NodeProto, mask: np.ndarray | None, layout: Layout | None,
                      shape: tuple[int, ...] | None, axes_inputs: dict[str, list[int]]) -> bool:
    """A ReduceMean over exactly the last axis, whose input lost channels there."""
    if node.op_type != "ReduceMean" or not is_default_domain(node):
        return False
    if mask is None or mask.all() or layout is None or shape is None:
        return False
    last = len(shape) - 1
    axes = get_attribute(node, "axes")
    if axes is None and len(node.input) > 1:
        axes = axes_inputs.get(node.input[1])  # opset 18: axes as a constant input
    if axes is None:
        return False  # every axis: not a mean over the channels alone
    return layout.axes == (last,) and [a % len(shape) for a in axes] == [last]


def _masked_mean(node: onnx.NodeProto, mask: np.ndarray,
                 graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The mean over the kept channels: the node's own ReduceMean of x · mask (any opset's
    form), times channels / kept."""
    prefix = f"{node.output[0]}__masked_mean"
    keep = mask.astype(np.float32).ravel()
    graph.initializer.append(numpy_helper.from_array(keep, f"{prefix}_mask"))
    graph.initializer.append(numpy_helper.from_array(
        np.array(keep.size / keep.sum(), np.float32), f"{prefix}_scale"))
    mean = onnx.NodeProto()
    mean.CopyFrom(node)
    mean.input[0], mean.output[0] = f"{prefix}_x", f"{prefix}_all"
    mean.name = f"{prefix}_all"
    return [
        helper.make_node("Mul", [node.input[0], f"{prefix}_mask"], [f"{prefix}_x"],
                         name=f"{prefix}_x"),
        mean,
        helper.make_node("Mul", [f"{prefix}_all", f"{prefix}_scale"], [node.output[0]],
                         name=f"{prefix}_scaled"),
    ]


def _int_constants(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """int64 vectors of initializers and Constant nodes (ReduceMean's axes at opset 18)."""
    tensors = [(i.name, i) for i in graph.initializer]
    tensors += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    return {name: numpy_helper.to_array(t).ravel().tolist() for name, t in tensors
            if t.data_type == onnx.TensorProto.INT64 and len(t.dims) <= 1}
