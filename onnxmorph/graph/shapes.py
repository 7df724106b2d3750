"""Resolve dynamic input dimensions and infer a static shape for every tensor."""

from __future__ import annotations

import math
import re

import numpy as np
import onnx

from onnxmorph.errors import OnnxMorphError, ShapeResolutionError, UnsupportedModelError
from onnxmorph.graph.contrib_ops import set_contrib_shapes
from onnxmorph.graph.isolated import ShapeInferenceWorker, infer_shapes_isolated

_SHAPE_ARG = re.compile(r"^(?P<name>.+)=(?P<dims>\d+(x\d+)*)$")


def parse_input_shapes(specs: list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, ...]]:
    """Parse `NAME=1x3x224x224` strings as given to `--input-shape`."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or ():
        match = _SHAPE_ARG.match(spec.strip())
        if not match:
            raise ShapeResolutionError(
                f"--input-shape '{spec}' is not of the form NAME=1x3x224x224"
            )
        dims = tuple(int(d) for d in match["dims"].split("x"))
        if any(d <= 0 for d in dims):
            raise ShapeResolutionError(f"--input-shape '{spec}' has a dimension that is not > 0")
        shapes[match["name"]] = dims
    return shapes


def clear_negative_dims(model: onnx.ModelProto) -> None:
    """Read a negative `dim_value` (PaddlePaddle writes -1) as an unknown dimension."""
    graph = model.graph
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if not info.type.tensor_type.HasField("shape"):
            continue
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.Clear()


def dynamic_batch_inputs(model: onnx.ModelProto) -> list[str]:
    """Graph inputs whose leading (batch) axis the file leaves open."""
    names = []
    for inp in graph_inputs(model):
        dims = inp.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            names.append(inp.name)
    return names


def dynamic_sequence_axes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Non-batch axes the file leaves open on inputs of rank 2 or 3 (token ids [B, T],
    features [B, T, F]): sequence lengths, which a transformer export computes with."""
    axes: dict[str, list[int]] = {}
    for inp in graph_inputs(model):
        dims = inp.type.tensor_type.shape.dim
        open_axes = [a for a, d in enumerate(dims) if a > 0
                     and not (d.HasField("dim_value") and d.dim_value > 0)]
        if len(dims) in (2, 3) and open_axes:
            axes[inp.name] = open_axes
    return axes


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def resolve_input_shapes(
    model: onnx.ModelProto, given: dict[str, tuple[int, ...]], batch: int = 1
) -> dict[str, tuple[int, ...]]:
    """Static shape of every graph input: from the model, from `given`, or batch for axis 0."""
    inputs = graph_inputs(model)
    unknown = set(given) - {i.name for i in inputs}
    if unknown:
        names = ", ".join(i.name for i in inputs)
        raise ShapeResolutionError(
            f"--input-shape names no model input: {', '.join(sorted(unknown))} "
            f"(the inputs are: {names})"
        )
    resolved: dict[str, tuple[int, ...]] = {}
    for inp in inputs:
        if inp.name in given:
            resolved[inp.name] = _check_given(inp, given[inp.name])
            continue
        if not inp.type.tensor_type.HasField("shape"):
            raise ShapeResolutionError(
                f"input '{inp.name}' has no known rank; give --input-shape {inp.name}=1x3x224x224"
            )
        dims = []
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(dim.dim_value)
            elif axis == 0:
                dims.append(batch)  # a dynamic leading axis is the batch
            else:
                label = dim.dim_param or "?"
                raise ShapeResolutionError(
                    f"input '{inp.name}' has dynamic dimension '{label}' at axis {axis}; "
                    f"give --input-shape {inp.name}=<d0>x<d1>x... with every dimension"
                )
        resolved[inp.name] = tuple(dims)
    return resolved


def _check_given(inp: onnx.ValueInfoProto, dims: tuple[int, ...]) -> tuple[int, ...]:
    declared = inp.type.tensor_type.shape.dim
    if inp.type.tensor_type.HasField("shape") and len(declared) != len(dims):
        raise ShapeResolutionError(
            f"--input-shape for '{inp.name}' has {len(dims)} dimensions but the input has "
            f"{len(declared)}"
        )
    for axis, (dim, value) in enumerate(zip(declared, dims)):
        if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != value:
            raise ShapeResolutionError(
                f"--input-shape for '{inp.name}' sets axis {axis} to {value} but the model "
                f"fixes it at {dim.dim_value}"
            )
    return dims


def with_static_inputs(
    model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs have the given static shapes."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        if inp.name in shapes:
            shape = inp.type.tensor_type.shape
            del shape.dim[:]
            for value in shapes[inp.name]:
                shape.dim.add().dim_value = value
    return fixed


# Initializers larger than this travel to shape inference as typed inputs, not data: values are
# only needed for small shape-like tensors, and serialising weights dominated load time.
_DATA_LIMIT = 4096


def shape_skeleton(
    model: onnx.ModelProto, values: dict[str, np.ndarray] | None = None
) -> onnx.ModelProto:
    """A copy of `model` without the data of large initializers (their type and shape stay).

    `values` are tensors known at the shapes being inferred (a Shape chain that depends on the
    batch): they become initializers, so inference sees through ops it cannot propagate
    (Where, Equal…), while the model itself keeps computing them.
    """
    graph = model.graph
    values = values or {}
    # Exporters' value_info was written at their batch and sizes; only a custom op's (which
    # inference cannot recompute) is worth keeping.
    custom = {out for node in graph.node if node.domain not in ("", "ai.onnx")
              for out in node.output}
    nodes = [n for n in graph.node if not (n.output and all(o in values for o in n.output))]
    skeleton_graph = onnx.helper.make_graph(
        nodes, graph.name, list(graph.input), list(graph.output),
        value_info=[v for v in graph.value_info if v.name in custom],
    )
    for init in graph.initializer:
        if math.prod(init.dims) <= _DATA_LIMIT:
            skeleton_graph.initializer.append(init)
        else:
            skeleton_graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    produced = {o for n in nodes for o in n.output}
    for name, value in values.items():
        if name not in produced:
            skeleton_graph.initializer.append(onnx.numpy_helper.from_array(value, name))
    skeleton = onnx.helper.make_model(skeleton_graph, opset_imports=list(model.opset_import))
    skeleton.ir_version = model.ir_version
    skeleton.functions.extend(model.functions)
    return skeleton


def infer_static_shapes(
    model: onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]],
    values: dict[str, np.ndarray] | None = None,
    worker: ShapeInferenceWorker | None = None,
) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor whose dimensions are all known at `input_shapes` (and `values`).

    Inference runs in `worker`'s process (a one-off one if None), so a crash in onnx's native
    code becomes an UnsupportedModelError.
    """
    model = with_static_inputs(shape_skeleton(model, values), input_shapes)
    infer = worker.infer if worker is not None else infer_shapes_isolated
    inferred = _inferred(infer, model)
    while set_contrib_shapes(model, inferred):  # com.microsoft ops, one more each round
        inferred = _inferred(infer, model)
    shapes: dict[str, tuple[int, ...]] = {}
    graph = inferred.graph
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for name, value in (values or {}).items():
        shapes[name] = tuple(value.shape)
    return shapes


def _inferred(infer, model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return infer(model, strict_mode=True, data_prop=True)
    except OnnxMorphError:
        raise
    except Exception as exc:
        first = " ".join(str(exc).split())[:300]
        raise UnsupportedModelError(f"ONNX shape inference failed on the model: {first}") from exc


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type of every tensor that shape inference knows."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {
        info.name: info.type.tensor_type.elem_type
        for info in list(graph.input) + list(graph.value_info) + list(graph.output)
    }
    types.update({init.name: init.data_type for init in graph.initializer})
    return types
