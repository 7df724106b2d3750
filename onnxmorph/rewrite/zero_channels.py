"""The seed with removed channels zeroed: what a pruned model must compute exactly."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxmorph.graph.channels import mask_shape
from onnxmorph.graph.handlers.base import Layout


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
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
        ordered.append(node)
        ordered.extend(new_nodes[out] for out in node.output if out in new_nodes)
    del graph.node[:]
    graph.node.extend(ordered)
    return masked
