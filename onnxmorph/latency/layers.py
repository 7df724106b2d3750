"""The layers a latency model prices: the cost model's weight layers and their seed widths.

Each Conv/ConvTranspose/Gemm/MatMul-with-a-weight the cost model counts has one MAC term
`coef · L[in] · L[out]` (depthwise: `coef · L[out]`); those linear forms L are the layer's
alive input and output channel counts, so a latency model reuses them instead of
re-describing the ops.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.cost import CostExpr
from onnxmorph.graph.onnx_utils import get_attribute
from onnxmorph.graph.quantized import constant_values

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerSpec:
    name: str
    op_type: str
    attributes: tuple[onnx.AttributeProto, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    has_bias: bool
    form_in: int  # index of the alive-input-channels form; -1 for a depthwise conv
    form_out: int
    in_full: int  # seed channel counts
    out_full: int
    in_variable: bool  # whether pruning can change the count
    out_variable: bool
    groups: int
    macs_coef: float  # MACs = macs_coef · in · out (depthwise: · out)

    @property
    def depthwise(self) -> bool:
        return self.form_in < 0

    def config_key(self, batch: int) -> str:
        """Layers with equal keys cost the same at equal widths: they share measurements."""
        attrs = sorted((a.name, str(helper.get_attribute_value(a))) for a in self.attributes)
        return json.dumps([self.op_type, attrs, self.input_shape[2:] if self._conv else [],
                           self.input_shape[0] if self._conv else list(self.input_shape[:-1]),
                           self.weight_shape[2:] if self._conv else [], self.has_bias,
                           self.in_full, self.out_full, self.depthwise, self.groups,
                           self.in_variable, self.out_variable, batch])

    @property
    def _conv(self) -> bool:
        return self.op_type in ("Conv", "ConvTranspose")


def weight_layers(analysis: Analysis, expr: CostExpr | None = None) -> list[LayerSpec]:
    """Every weight layer of the MACs cost model, in graph order."""
    expr = expr or analysis.cost.macs
    full = expr.forms(np.ones(expr.num_units))
    # A count can change only if the form counts channels of a prunable group.
    prunable = np.zeros(expr.num_units, dtype=bool)
    for group in analysis.channels.prunable_groups():
        prunable[group.units] = True
    variable = np.zeros(full.size, dtype=bool)
    variable[np.unique(expr.form_rows[prunable[expr.form_units]])] = True
    terms = {layer: i for i, layer in enumerate(expr.layers)}
    loaded, specs = analysis.loaded, []
    values = constant_values(loaded)  # a quantized weight is timed as its float layer
    for node in loaded.model.graph.node:
        name = node.name or node.output[0]
        # An attention MatMul (activation × activation) has a MAC term but no weight: it is
        # priced with the other ops (other_ops.py), by its alive heads.
        if node.op_type not in LAYER_OPS or name not in terms or node.input[1] not in values:
            continue
        term = terms[name]
        first, second = int(expr.first[term]), int(expr.second[term])
        form_in, form_out = (first, second) if second >= 0 else (-1, first)
        out_full = int(round(full[form_out]))
        in_full = int(round(full[form_in])) if form_in >= 0 else out_full
        specs.append(LayerSpec(
            name=name, op_type=node.op_type, attributes=tuple(node.attribute),
            input_shape=tuple(loaded.shapes[node.input[0]]),
            output_shape=tuple(loaded.shapes[node.output[0]]),
            weight_shape=tuple(values[node.input[1]].shape),
            has_bias=len(node.input) > 2 and bool(node.input[2]),
            form_in=form_in, form_out=form_out, in_full=in_full, out_full=out_full,
            in_variable=bool(form_in >= 0 and variable[form_in]),
            out_variable=bool(variable[form_out]),
            groups=int(get_attribute(node, "group", 1)),
            macs_coef=float(expr.coef[term]),
        ))
    return specs


def single_layer_model(spec: LayerSpec, cin: int, cout: int, batch: int,
                       copies: int = 1) -> onnx.ModelProto:
    """`copies` independent copies of the layer at `cin`/`cout` channels on one input."""
    if spec.depthwise:
        cin = cout
    rng = np.random.default_rng(0)
    groups = cout if spec.depthwise else spec.groups
    x_shape, w_shape, y_shape = _shapes(spec, cin, cout, batch)
    initializers = [helper.make_tensor("W", onnx.TensorProto.FLOAT, w_shape,
                                       rng.standard_normal(math.prod(w_shape)).astype(np.float32))]
    inputs = ["X", "W"]
    if spec.has_bias:
        bias = cout if spec.op_type != "Gemm" else y_shape[-1]
        initializers.append(helper.make_tensor("B", onnx.TensorProto.FLOAT, [bias],
                                               np.zeros(bias, np.float32)))
        inputs.append("B")
    attributes = [a for a in spec.attributes if a.name != "group"]
    nodes, outputs = [], []
    for copy in range(copies):
        node = helper.make_node(spec.op_type, inputs, [f"Y{copy}"], name=f"layer{copy}")
        node.attribute.extend(attributes)
        if spec.op_type in ("Conv", "ConvTranspose"):
            node.attribute.append(helper.make_attribute("group", groups))
        nodes.append(node)
        outputs.append(helper.make_tensor_value_info(f"Y{copy}", onnx.TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, x_shape)],
        outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _shapes(spec: LayerSpec, cin: int, cout: int, batch: int):
    seed_batch = max(spec.input_shape[0], 1)
    if spec.op_type in ("Conv", "ConvTranspose"):
        groups = cout if spec.depthwise else spec.groups
        x_shape = [batch, cin, *spec.input_shape[2:]]
        kernel = list(spec.weight_shape[2:])
        if spec.op_type == "Conv":
            w_shape = [cout, cin // groups, *kernel]
        else:
            w_shape = [cin, cout // groups, *kernel]
        return x_shape, w_shape, [batch, cout]
    x_shape = list(spec.input_shape)
    x_shape[0] = max(1, x_shape[0] * batch // seed_batch) if len(x_shape) > 1 else x_shape[0]
    trans_a = int(_attr(spec, "transA", 0))
    trans_b = int(_attr(spec, "transB", 0))
    x_shape[0 if (spec.op_type == "Gemm" and trans_a) else -1] = cin
    w_shape = [cout, cin] if trans_b else [cin, cout]
    return x_shape, w_shape, [cout]


def _attr(spec: LayerSpec, name: str, default):
    for attribute in spec.attributes:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default
