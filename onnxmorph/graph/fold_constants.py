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

from onnxmorph.graph.onnx_utils import (
    get_attribute,
    is_default_domain,
    opset_versions,
    remove_attribute,
)

# Only ops that are pure functions of their inputs are folded: never random or stateful ops,
# and never QuantizeLinear/DequantizeLinear, whose int8 weights must stay quantized.
FOLDABLE = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "Cast", "CastLike", "Ceil", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Div", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor",
    "Gather", "GatherElements", "GatherND", "Greater", "GreaterOrEqual", "Identity", "Less",
    "LessOrEqual", "Log", "MatMul", "Max", "Min", "Mod", "Mul", "Neg", "NonZero", "Not", "Or",
    "Pow", "Range", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "Reshape", "Shape", "Sign", "Size", "Slice", "Split", "Sqrt", "Squeeze", "Sub",
    "Tile", "Transpose", "Unsqueeze", "Where", "Xor",
})


def fold_constants(
    model: onnx.ModelProto,
    static_shapes: dict[str, tuple[int, ...]] | None = None,
    other_batch_shapes: dict[str, tuple[int, ...]] | None = None,
    batch_dependent: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> set[str]:
    """Fold constant nodes of `model` in place; return the names of the new initializers.

    With `other_batch_shapes` (the shapes at a second batch size) a value that differs between
    the two batches depends on the batch and is not folded, so the model keeps working at any
    batch; a Reshape target computed from it is folded with the batch entry written as 0
    ("copy this axis") or -1 ("infer"), which holds at every batch. `batch_dependent`
    receives such values (name → value at each batch) so shape inference can use them.
    """
    graph = model.graph
    opset = opset_versions(model)
    known: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer
    }
    other = dict(known) if other_batch_shapes is not None else None
    outputs = {o.name for o in graph.output}
    kept_nodes: list[onnx.NodeProto] = []
    new_inits: list[str] = []
    for node in graph.node:
        values = _evaluate(node, known, opset, static_shapes or {})
        if values is not None and other is not None:
            alternative = _evaluate(node, other, opset, other_batch_shapes)
            if alternative is None:
                values = None
            elif not all(_same(a, b) for a, b in zip(values, alternative)):
                _remember(node, values, known)
                _remember(node, alternative, other)
                if batch_dependent is not None:
                    batch_dependent.update(
                        (name, (a, b)) for name, a, b in zip(node.output, values, alternative)
                        if name)
                values = None
        if values is None or any(name in outputs for name in node.output):
            if other is not None and node.op_type == "Reshape":
                _batch_free_target(node, known, other, static_shapes, other_batch_shapes,
                                   new_inits)
            kept_nodes.append(node)
            continue
        _remember(node, values, known)
        if other is not None:
            _remember(node, values, other)
        new_inits.extend(name for name in node.output if name)
    if batch_dependent is not None:  # a value can become unused when a Reshape no longer reads it
        used = {name for node in kept_nodes for name in node.input}
        for name in [n for n in batch_dependent if n not in used]:
            del batch_dependent[name]
    if not new_inits:
        return set()
    del graph.node[:]
    graph.node.extend(kept_nodes)
    for name in new_inits:
        _add_initializer(graph, name, np.asarray(known[name]))
    remove_dead_nodes(graph)
    remove_unused_initializers(graph)
    return set(new_inits)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def _remember(node: onnx.NodeProto, values: list[np.ndarray], known: dict) -> None:
    for name, value in zip(node.output, values):
        if name:
            known[name] = value


def _batch_free_target(node, known, other, shapes, other_shapes, new_inits) -> None:
    """Replace a batch-dependent Reshape target by a constant that holds at every batch."""
    target, alternative = known.get(node.input[1]), other.get(node.input[1])
    source, other_source = shapes.get(node.input[0]), other_shapes.get(node.input[0])
    if target is None or alternative is None or source is None or other_source is None:
        return
    allowzero = get_attribute(node, "allowzero", 0)
    if target.shape != alternative.shape or _same(target, alternative) \
            or (allowzero and (0 in target.tolist() or 0 in alternative.tolist())):
        return
    fixed = target.copy()
    for axis in np.flatnonzero(target != alternative).tolist():
        if axis < len(source) and source[axis] == target[axis] \
                and other_source[axis] == alternative[axis]:
            fixed[axis] = 0  # copy the input's dimension: the batch stays the batch
    varying = np.flatnonzero(fixed != alternative).tolist()
    varying = [a for a in varying if fixed[a] != 0]
    if len(varying) == 1 and -1 not in fixed.tolist():
        fixed[varying[0]] = -1  # the batch merged into one axis: the only one left to infer
    elif varying:
        return
    if allowzero:  # the dynamo exporter sets it; without zeros in the target it means nothing
        remove_attribute(node, "allowzero")
    name = f"{node.input[1]}__any_batch_{len(new_inits)}"
    known[name] = other[name] = fixed
    node.input[1] = name
    new_inits.append(name)


def _add_initializer(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    # Writing raw bytes into a new message avoids building and then copying a large TensorProto.
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    tensor.dims.extend(value.shape)
    tensor.raw_data = np.ascontiguousarray(value).tobytes()


def _evaluate(node, known, opset, static_shapes) -> list[np.ndarray] | None:
    if not is_default_domain(node) or node.op_type not in FOLDABLE:
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
        results = ReferenceEvaluator(_single_node_model(node, feeds, opset)).run(None, feeds)
    except Exception:
        return None  # leave it to the runtime; a handler will treat it as an ordinary op
    return [np.asarray(r) for r in results]


def _single_node_model(node, feeds, opset) -> onnx.ModelProto:
    """`node` as a model: the evaluator then runs the op version the model imports (given a bare
    node it picks the newest, and Unsqueeze-11's `axes` attribute fails as Unsqueeze-13)."""
    inputs = [onnx.helper.make_tensor_value_info(
        name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), None)
        for name, value in feeds.items()]
    outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
    graph = onnx.helper.make_graph([node], "fold", inputs, outputs)
    return onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", opset.get("", 13))])


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


def remove_dead_nodes(graph: onnx.GraphProto) -> None:
    """Drop foldable nodes whose outputs nothing reads (a Shape chain a folded target replaced).

    One pass from the last node back: ONNX lists producers before consumers.
    """
    used = {o.name for o in graph.output} | _subgraph_inputs(graph)
    dead = []
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if (is_default_domain(node) and node.op_type in FOLDABLE
                and not any(name in used for name in node.output if name)):
            dead.append(index)
        else:
            used.update(node.input)
    for index in dead:  # descending, so earlier indices stay valid
        del graph.node[index]


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
        if node.op_type not in ("If", "Loop", "Scan") and is_default_domain(node):
            continue  # only control flow carries subgraphs in the default domain
        for attr in node.attribute:
            for sub in list(attr.g.node if attr.HasField("g") else []) + [
                n for g in attr.graphs for n in g.node
            ]:
                names.update(sub.input)
    return names
