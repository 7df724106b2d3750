"""Turn weights computed by constant subgraphs into plain initializers.

Paddle exports keep weights in `Constant` nodes, the onnx wheel's light models build them with
`ConstantOfShape`, and PyTorch exports alias initializers through `Identity`. Handlers and the
slicer only look at initializers, so every node whose inputs are all known is evaluated once.
`Shape` of a tensor with a static shape is known too, which folds the Shape → Gather → Concat
chains that compute Reshape targets.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxmorph.graph.onnx_utils import get_attribute, is_default_domain, opset_versions

# Ops whose result is not a function of their inputs: never fold them.
_NONDETERMINISTIC = {
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
    "Bernoulli", "Dropout",
}
# Folding DequantizeLinear would silently turn a quantized weight into a float one.
_QUANTIZATION = {"QuantizeLinear", "DequantizeLinear"}


def fold_constants(
    model: onnx.ModelProto, static_shapes: dict[str, tuple[int, ...]] | None = None
) -> set[str]:
    """Fold constant nodes of `model` in place; return the names of the new initializers."""
    graph = model.graph
    opset = opset_versions(model)
    known: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer
    }
    outputs = {o.name for o in graph.output}
    kept_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in graph.node:
        values = _evaluate(node, known, opset, static_shapes or {})
        if values is None or any(name in outputs for name in node.output):
            kept_nodes.append(node)
            continue
        for name, value in zip(node.output, values):
            if name:
                known[name] = value
                new_inits.append(name)
    if not new_inits:
        return set()
    del graph.node[:]
    graph.node.extend(kept_nodes)
    for name in new_inits:
        _add_initializer(graph, name, np.asarray(known[name]))
    remove_unused_initializers(graph)
    return set(new_inits)


def _add_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    # Writing raw bytes into a new message avoids building and then copying a large TensorProto.
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    tensor.dims.extend(value.shape)
    tensor.raw_data = np.ascontiguousarray(value).tobytes()


def _evaluate(node, known, opset, static_shapes) -> list[np.ndarray] | None:
    if not is_default_domain(node) or node.op_type in _NONDETERMINISTIC | _QUANTIZATION:
        return None
    if node.op_type == "Shape":
        return _fold_shape(node, static_shapes)
    if any(name and name not in known for name in node.input):
        return None
    if node.op_type == "Identity":
        return [known[node.input[0]].copy()]
    if node.op_type == "ConstantOfShape":  # the light models' weights: big, so skip the evaluator
        return [_constant_of_shape(node, known[node.input[0]])]
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for attr in node.attribute):
        return None
    feeds = {name: known[name] for name in node.input if name}
    try:
        evaluator = ReferenceEvaluator(node, opsets={"": opset.get("", 13)})
        results = evaluator.run(None, feeds)
    except Exception:
        return None  # leave it to the runtime; a handler will treat it as an ordinary op
    return [np.asarray(r) for r in results]


def _constant_of_shape(node: onnx.NodeProto, shape: np.ndarray) -> np.ndarray:
    value = get_attribute(node, "value")
    fill = np.zeros(1, np.float32) if value is None else numpy_helper.to_array(value).reshape(-1)
    return np.full(tuple(int(d) for d in shape), fill[0], dtype=fill.dtype)


def _fold_shape(node, static_shapes) -> list[np.ndarray] | None:
    shape = static_shapes.get(node.input[0])
    if shape is None:
        return None
    start, end = get_attribute(node, "start"), get_attribute(node, "end")
    return [np.array(shape[start:end], dtype=np.int64)]


def remove_unused_initializers(graph: onnx.GraphProto) -> None:
    """Drop initializers no node, subgraph or graph output reads."""
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    used |= _subgraph_inputs(graph)
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name not in used:
            del graph.initializer[index]


def _subgraph_inputs(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in list(attr.g.node if attr.HasField("g") else []) + [
                n for g in attr.graphs for n in g.node
            ]:
                names.update(sub.input)
    return names
