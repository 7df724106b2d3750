"""Cost model: MACs and parameter count as functions of which units (channels) are alive.

Following morph-net, each layer's cost is a product of two *linear forms* — the number of
alive input channels and the number of alive output channels — times a constant: bilinear for
a plain conv, linear for a depthwise conv. With `alive` a vector of 0/1 (or gate
probabilities) over units, the same expression gives the exact cost of a sliced model or the
expected cost of a gated one, so training can differentiate it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnx

from onnxmorph.graph.attention_cost import activation_matmul_cost
from onnxmorph.graph.channels import ChannelAnalysis
from onnxmorph.graph.layers import constant_channel_axis, layer_kind
from onnxmorph.graph.load import LoadedModel
from onnxmorph.graph.op_costs import Uncounted, count_other_op
from onnxmorph.graph.quantized import QuantizedConstant, constant_values, quantized_constants

TARGETS = ("flops", "params")
LATENCY_TARGET = "latency"  # needs a latency model attached (onnxmorph.latency)


class CostFunction(Protocol):
    """What the learning methods read off a cost target: CostExpr (flops, params) or
    onnxmorph.latency's LatencyExpr (latency, priced by the same forms)."""

    num_units: int

    def __call__(self, alive: np.ndarray | None = None) -> float: ...

    def derivative(self, alive: np.ndarray) -> np.ndarray: ...


@dataclass
class CostExpr:
    """cost(alive) = Σ_k coef_k · L[a_k] · L[b_k]  (b_k = -1 means a linear term)
    where L[f] = offset_f + Σ_u count_{f,u} · alive_u."""

    num_units: int
    form_rows: np.ndarray  # triplets (form, unit, count) of every linear form
    form_units: np.ndarray
    form_counts: np.ndarray
    form_offsets: np.ndarray
    coef: np.ndarray
    first: np.ndarray
    second: np.ndarray
    layers: list[str] = field(default_factory=list)  # layer name of every term

    def forms(self, alive: np.ndarray) -> np.ndarray:
        weights = self.form_counts * np.asarray(alive, dtype=np.float64)[self.form_units]
        sums = np.bincount(self.form_rows, weights=weights, minlength=self.form_offsets.size)
        return self.form_offsets + sums

    def terms(self, alive: np.ndarray) -> np.ndarray:
        values = self.forms(alive)
        second = np.where(self.second >= 0, values[np.maximum(self.second, 0)], 1.0)
        return self.coef * values[self.first] * second

    def __call__(self, alive: np.ndarray | None = None) -> float:
        if alive is None:
            alive = np.ones(self.num_units)
        return float(self.terms(alive).sum())

    def derivative(self, alive: np.ndarray) -> np.ndarray:
        """∂cost/∂alive_u at `alive` (0/1 or fractional): what one more channel of unit u
        costs given the channels alive around it — Σ over the bilinear terms coef · L_a · L_b
        of coef times the partner form, times u's count in the form. The per-unit weight of
        morph-net's regularizers and of GDP's proximal step."""
        return self.chain(self.form_derivative(alive))

    def form_derivative(self, alive: np.ndarray) -> np.ndarray:
        """∂cost/∂L_f for every linear form f at `alive`."""
        forms = self.forms(alive)
        linear = self.second < 0
        partner = np.where(linear, 1.0, forms[np.maximum(self.second, 0)])
        per_form = np.bincount(self.first, weights=self.coef * partner, minlength=forms.size)
        per_form += np.bincount(self.second[~linear],
                                weights=(self.coef * forms[self.first])[~linear],
                                minlength=forms.size)
        return per_form

    def chain(self, per_form: np.ndarray) -> np.ndarray:
        """Per-form derivatives ∂c/∂L_f → per-unit ∂c/∂alive_u (the forms are linear)."""
        return np.bincount(self.form_units, weights=self.form_counts * per_form[self.form_rows],
                           minlength=self.num_units)

    def by_layer(self, alive: np.ndarray | None = None) -> dict[str, float]:
        alive = np.ones(self.num_units) if alive is None else alive
        totals: dict[str, float] = {}
        for layer, value in zip(self.layers, self.terms(alive).tolist()):
            totals[layer] = totals.get(layer, 0.0) + value
        return totals

    def dense_forms(self) -> np.ndarray:
        """[num_units, num_forms] matrix M with L = offsets + alive @ M (for ONNX graphs)."""
        matrix = np.zeros((self.num_units, self.form_offsets.size), dtype=np.float64)
        np.add.at(matrix, (self.form_units, self.form_rows), self.form_counts)
        return matrix


@dataclass
class CostModel:
    macs: CostExpr
    params: CostExpr
    uncounted: list[Uncounted] = field(default_factory=list)  # nodes whose MACs are unknown
    # A LatencyExpr (same call interface) attached for target "latency"; graph/ stays free
    # of the runtime, so onnxmorph.latency builds it and sets it here.
    latency: Any = None

    def expr(self, target: str) -> CostExpr:
        if target == "flops":
            return self.macs
        if target == "params":
            return self.params
        if target == LATENCY_TARGET:
            if self.latency is None:
                raise ValueError("unknown cost target 'latency' until a latency model is "
                                 "attached (onnxmorph.latency.latency_model)")
            return self.latency
        raise ValueError(f"unknown cost target '{target}'; use one of {', '.join(TARGETS)}")


def build_cost_model(loaded: LoadedModel, channels: ChannelAnalysis) -> CostModel:
    return _Builder(loaded, channels).build()


class _Builder:
    def __init__(self, loaded: LoadedModel, channels: ChannelAnalysis) -> None:
        self.loaded, self.channels = loaded, channels
        self.form_index: dict[str, int] = {}
        self.rows: list[np.ndarray] = []
        self.units: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.offsets: list[float] = []
        self.terms = {"macs": [], "params": []}
        self.uncounted: list[Uncounted] = []
        self.values = constant_values(loaded)  # initializers and dequantized weights
        self.quantized = quantized_constants(loaded.model, loaded.initializers)
        # Constants whose parameters are already counted; a quantized constant's own inputs
        # (int8 values, scale, zero point) are counted by the layer that reads it.
        self.counted: set[str] = {n for q in self.quantized.values() for n in q.node.input}

    def form(self, tensor: str, axis_size: int) -> int:
        """Index of the linear form 'alive channels of `tensor`' (a constant if unknown)."""
        if tensor in self.form_index:
            return self.form_index[tensor]
        index = len(self.offsets)
        layout = self.channels.layouts.get(tensor)
        if layout is None or tensor in self.loaded.initializers:
            self.offsets.append(float(axis_size))
        else:
            units, counts = np.unique(layout.ids, return_counts=True)
            self.rows.append(np.full(units.size, index))
            self.units.append(units)
            self.counts.append(counts.astype(np.float64))
            self.offsets.append(0.0)
        self.form_index[tensor] = index
        return index

    def fixed_form(self, size: int) -> int:
        """A linear form that is the constant `size` (an axis that has no channels)."""
        key = f"#fixed{size}"
        if key not in self.form_index:
            self.form_index[key] = len(self.offsets)
            self.offsets.append(float(size))
        return self.form_index[key]

    def constant_form(self) -> int:
        if "" not in self.form_index:
            self.form_index[""] = len(self.offsets)
            self.offsets.append(1.0)
        return self.form_index[""]

    def add(self, kind: str, layer: str, coef: float, first: int, second: int = -1) -> None:
        self.terms[kind].append((layer, float(coef), first, second))

    def build(self) -> CostModel:
        for node in self.loaded.model.graph.node:
            # Attention MatMuls are counted per head by their own rule; any other op once by
            # op_costs, which also records what it cannot count.
            if not (_weight_layer(self, node) or activation_matmul_cost(self, node)):
                count_other_op(self, node)
            self._per_channel_params(node)
        return CostModel(macs=self._expr("macs"), params=self._expr("params"),
                         uncounted=self.uncounted)

    def _per_channel_params(self, node: onnx.NodeProto) -> None:
        """Constants other than weights: per-channel ones (by role) shrink with the output."""
        out = node.output[0]
        out_shape = self.loaded.shapes.get(out)
        layout = self.channels.layouts.get(out)
        for index, name in enumerate(node.input):
            value = self.values.get(name)
            if value is None or name in self.counted or value.dtype.kind != "f":
                continue
            self.counted.add(name)
            layer = node.name or out
            axis = constant_channel_axis(node, index, value, layout, out_shape)
            form = None if axis is None else self.form(out, value.shape[axis])
            if form is None:
                self.add("params", layer, value.size, self.constant_form())
            else:
                self.add("params", layer, value.size / value.shape[axis], form)
            self.quantization_params(layer, name, {} if axis is None else {axis: form})

    def quantization_params(self, layer: str, name: str, forms: dict[int, int]) -> None:
        """Scale and zero point of a quantized constant: per channel along its sliced axis."""
        quantized: QuantizedConstant | None = self.quantized.get(name)
        if quantized is None:
            return
        for index in (1, 2):
            if index >= len(quantized.node.input) or not quantized.node.input[index]:
                continue
            size = self.loaded.initializers[quantized.node.input[index]].size
            if quantized.axis in forms and index in quantized.per_axis_inputs:
                self.add("params", layer, 1.0, forms[quantized.axis])
            else:
                self.add("params", layer, size, self.constant_form())

    def _expr(self, kind: str) -> CostExpr:
        terms = self.terms[kind]
        empty = np.zeros(0, dtype=np.int64)
        return CostExpr(
            num_units=self.channels.num_units,
            form_rows=np.concatenate(self.rows) if self.rows else empty,
            form_units=np.concatenate(self.units) if self.units else empty,
            form_counts=np.concatenate(self.counts) if self.counts else np.zeros(0),
            form_offsets=np.asarray(self.offsets, dtype=np.float64),
            coef=np.asarray([t[1] for t in terms], dtype=np.float64),
            first=np.asarray([t[2] for t in terms], dtype=np.int64),
            second=np.asarray([t[3] for t in terms], dtype=np.int64),
            layers=[t[0] for t in terms],
        )


def _weight_layer(builder: _Builder, node: onnx.NodeProto) -> bool:
    """MACs and weight parameters of a layer, bilinear in its alive inputs and outputs."""
    kind = layer_kind(node)
    if kind is None or kind.weight is None or len(node.input) <= kind.weight:
        return False
    weight_name = node.input[kind.weight]
    weight = builder.values.get(weight_name)
    x_shape = builder.loaded.shapes.get(node.input[kind.activation])
    y_shape = builder.loaded.shapes.get(node.output[0])
    layout = kind.weight_layout(node, weight.shape) if weight is not None else None
    if layout is None or x_shape is None or y_shape is None:
        return False
    x_axis, y_axis = kind.activation_axis(len(x_shape)), kind.activation_axis(len(y_shape))
    # A transposed conv does its multiply-adds per input pixel, a conv per output pixel.
    where = x_shape if kind.positions == "input" else y_shape
    positions = math.prod(where) // where[kind.activation_axis(len(where))]
    name = node.name or node.output[0]
    f_in = builder.form(node.input[kind.activation], x_shape[x_axis])
    in_layout = builder.channels.layouts.get(node.input[kind.activation])
    if in_layout is not None and in_layout.axes != (x_axis,):  # channels on another axis
        f_in = builder.fixed_form(x_shape[x_axis])
    f_out = builder.form(node.output[0], y_shape[y_axis])
    shared = weight_name in builder.counted  # a weight two layers share is stored once
    if layout.depthwise:  # linear in the alive channels
        builder.add("macs", name, positions * layout.kernel, f_out)
        if not shared:
            builder.add("params", name, layout.kernel, f_out)
    else:
        coef = layout.kernel / layout.groups
        builder.add("macs", name, positions * coef, f_in, f_out)
        if not shared:
            builder.add("params", name, coef, f_in, f_out)
    if not shared:
        builder.counted.add(weight_name)
        forms = {layout.out_axis: f_out, layout.in_axis: f_in}
        if layout.groups > 1:
            forms.pop(layout.grouped_axis)
        builder.quantization_params(name, weight_name, forms)
    return True
