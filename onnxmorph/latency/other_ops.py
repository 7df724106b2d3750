"""The ops between the weight layers (BatchNormalization, activations, Add, pools, Concat,
Transpose, …): priced too, so that a predicted latency never leaves work out silently.

Each such op is timed once per table, alone, at its seed shape and the deployment batch,
and priced at a structure as seed time × (alive / seed channels of its output): its work is
elementwise or data movement, linear in the elements. Ops that onnxruntime's CPU provider
fuses into the Conv before them cost nothing (ConvBNFusion, ConvActivationFusion, and the
NCHWc Conv's "sum" input for a residual Add or two-input Sum followed by its activation).
An op without a blocked (NCHWc) kernel next to a Conv also pays a layout change on each
such side, priced as one more pass of the op over its tensor. An op that cannot be timed
alone is *unpriced* and named in the report, never counted as free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.quantized import constant_values

# onnxruntime folds these into the Conv that produces their input (activation kinds of
# FusedConv / the NCHWc Conv's `activation` attribute).
FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid")
# Ops with NCHWc kernels (nchwc_transformer.cc): no layout change around them.
BLOCKED_OPS = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Add",
               "Sum", "Concat", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu",
               "BatchNormalization", "Resize", "Upsample")


@dataclass(frozen=True)
class OtherOp:
    name: str
    node: onnx.NodeProto
    tensor: str  # the output whose alive channels scale the op's work
    channels: int  # seed channels of `tensor`
    fused_into: str | None  # the Conv onnxruntime folds this op into (then it costs 0)
    layout_changes: int  # NCHW <-> NCHWc reorders the op causes (0, 1 or 2)

    def price(self, ms: float) -> dict:
        """The op's entry in a latency table (LatencyTable.ops), `ms` at the seed's widths."""
        return {"ms": ms, "channels": self.channels, "fused_into": self.fused_into,
                "layout_changes": self.layout_changes}


def other_ops(analysis: Analysis, weight_layers: set[str]) -> list[OtherOp]:
    """Every op with an activation output that is not one of `weight_layers`, in graph
    order. Shape computations (outputs without channels) are left out: integer arithmetic
    on a few values, no work that pruning changes."""
    graph = analysis.loaded.model.graph
    layouts = analysis.channels.layouts
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def single_use(tensor: str) -> bool:
        return len(consumers.get(tensor, [])) == 1 and tensor not in outputs

    # tensor → (Conv it comes from, whether an activation is already fused into that Conv)
    chain: dict[str, tuple[str, bool]] = {}
    found: list[OtherOp] = []
    for node in graph.node:
        name = node.name or node.output[0]
        if not node.output or not node.output[0]:
            continue
        out = node.output[0]
        if name in weight_layers:
            if node.op_type == "Conv":
                chain[out] = (name, False)
            continue
        layout = layouts.get(out)
        if layout is None:
            continue
        fused = _fused_into(node, chain, single_use)
        if fused is not None:
            conv, activated = fused
            chain[out] = (conv, activated or node.op_type in FUSED_ACTIVATIONS)
        changes = 0
        rank = len(analysis.loaded.shapes.get(out, ()))
        if fused is None and node.op_type not in BLOCKED_OPS and rank == 4:
            changes += any(i in chain for i in node.input)
            changes += any(c.op_type == "Conv" for c in consumers.get(out, []))
        found.append(OtherOp(name=name, node=node, tensor=out, channels=int(layout.ids.size),
                             fused_into=None if fused is None else fused[0],
                             layout_changes=int(changes)))
    return found


def _fused_into(node: onnx.NodeProto, chain: dict, single_use) -> tuple[str, bool] | None:
    if node.op_type == "BatchNormalization" or node.op_type in FUSED_ACTIVATIONS:
        source = chain.get(node.input[0])
        if source is None or not single_use(node.input[0]):
            return None
        if source[1]:  # one activation per Conv; a BN after an activation stays too
            return None
        return source
    if node.op_type in ("Add", "Sum") and len(node.input) == 2:
        for tensor in node.input:
            source = chain.get(tensor)
            if source is not None and not source[1] and single_use(tensor):
                return source
    return None


def single_op_model(op: OtherOp, analysis: Analysis, batch: int,
                    types: dict[str, int] | None = None,
                    values: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The op alone: its activation inputs as graph inputs (batch dimension set to `batch`),
    its constant inputs as initializers; `types`: element types (element_types), `values`:
    the model's constants (constant_values), both computed once by callers of many ops."""
    loaded = analysis.loaded
    values = constant_values(loaded) if values is None else values
    types = element_types(analysis) if types is None else types
    seed_batch = analysis_batch(analysis)
    inputs, initializers, seen = [], [], set()
    for name in op.node.input:
        if not name or name in seen:
            continue
        seen.add(name)
        if name in values:
            initializers.append(onnx.numpy_helper.from_array(np.asarray(values[name]), name))
            continue
        shape = list(loaded.shapes[name])
        if shape and shape[0] == seed_batch and len(shape) > 1:
            shape[0] = batch
        inputs.append(helper.make_tensor_value_info(
            name, types.get(name, onnx.TensorProto.FLOAT), shape))
    node = onnx.NodeProto()
    node.CopyFrom(op.node)
    # Outputs without a type: onnxruntime infers them (custom-domain ops that ONNX cannot).
    outputs = [onnx.ValueInfoProto(name=o) for o in node.output if o]
    graph = helper.make_graph([node], "op", inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=list(loaded.model.opset_import),
                             ir_version=loaded.model.ir_version)


def op_config_key(op: OtherOp, analysis: Analysis, batch: int) -> str:
    """Ops with equal keys take equal time: they share one measurement."""
    import json

    shapes = analysis.loaded.shapes
    attrs = sorted((a.name, str(helper.get_attribute_value(a))) for a in op.node.attribute)
    return json.dumps([op.node.op_type, op.node.domain, attrs,
                       [list(shapes.get(i, ())) for i in op.node.input], batch])


def roofline_op_ms(op: OtherOp, analysis: Analysis, batch: int, bandwidth: float,
                   values: dict[str, np.ndarray] | None = None) -> float:
    """Memory-bound: float32 activation inputs read and the output written once (`values`:
    the model's constants, as single_op_model's)."""
    shapes = analysis.loaded.shapes
    values = constant_values(analysis.loaded) if values is None else values
    scale = batch / max(analysis_batch(analysis), 1)
    elements = sum(math.prod(shapes.get(i, ())) for i in op.node.input
                   if i and i not in values and i in shapes)
    elements += math.prod(shapes.get(op.tensor, ()))
    return 4 * elements * scale * (1 + op.layout_changes) / bandwidth * 1e3


def analysis_batch(analysis: Analysis) -> int:
    shapes = list(analysis.loaded.input_shapes.values())
    return int(shapes[0][0]) if shapes and shapes[0] else 1


def element_types(analysis: Analysis) -> dict[str, int]:
    """Element type of every tensor (bool masks, int64 indices are not float), by ONNX type
    inference in a worker process; what the model declares if that fails."""
    from onnxmorph.graph.isolated import infer_shapes_isolated

    try:
        return _declared_types(infer_shapes_isolated(analysis.loaded.model))
    except Exception:  # noqa: BLE001 - a crash or refusal of inference: fewer known types
        return _declared_types(analysis.loaded.model)


def _declared_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    return {v.name: v.type.tensor_type.elem_type
            for v in (*graph.input, *graph.value_info, *graph.output)
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}
