"""Quantized constants: `DequantizeLinear(int8 constant, scale, zero point)` is a weight.

QDQ models keep their weights as int8 initializers behind a DequantizeLinear. For analysis (shapes,
L1 scores, cost) such a weight is its dequantized value; for slicing it is the int8 tensor plus,
where the scale is per axis, the scale and zero point along that axis. Nothing here writes a
dequantized value back into a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxmorph.graph.onnx_utils import get_attribute, is_default_domain


@dataclass(frozen=True)
class QuantizedConstant:
    node: onnx.NodeProto  # the DequantizeLinear
    axis: int | None  # axis of the quantized tensor its scale runs along (None: per tensor)
    value: np.ndarray  # the dequantized value, for analysis only

    @property
    def quantized(self) -> str:
        return self.node.input[0]

    @property
    def per_axis_inputs(self) -> tuple[int, ...]:
        """Inputs of the DequantizeLinear (scale, zero point) that run along `axis`."""
        if self.axis is None:
            return ()
        return tuple(i for i in (1, 2) if i < len(self.node.input) and self.node.input[i])


def quantized_constants(
    model: onnx.ModelProto, initializers: dict[str, np.ndarray]
) -> dict[str, QuantizedConstant]:
    """DequantizeLinear output name → the quantized constant it reads."""
    found: dict[str, QuantizedConstant] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not is_default_domain(node):
            continue
        inputs = [initializers.get(name) if name else None for name in node.input]
        if any(value is None for value, name in zip(inputs, node.input) if name):
            continue  # reads an activation: a Q/DQ pair on the data path
        if int(get_attribute(node, "block_size", 0)):
            continue  # blocked scales: its consumer sees a run-time weight and stays whole
        found[node.output[0]] = _constant(node, inputs)
    return found


def _constant(node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> QuantizedConstant:
    quantized, scale = inputs[0].astype(np.float32), inputs[1].astype(np.float32)
    zero = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.zeros(scale.shape)
    zero = zero.astype(np.float32)
    axis = None
    if scale.ndim == 1 and scale.size > 1:
        axis = int(get_attribute(node, "axis", 1)) % quantized.ndim
        view = [1] * quantized.ndim
        view[axis] = scale.size
        scale, zero = scale.reshape(view), zero.reshape(view)
    return QuantizedConstant(node=node, axis=axis, value=((quantized - zero) * scale))


def constant_values(loaded) -> dict[str, np.ndarray]:
    """Initializers plus the dequantized value of every quantized constant: what the analysis
    reads as a weight (`loaded` is a LoadedModel)."""
    quantized = quantized_constants(loaded.model, loaded.initializers)
    if not quantized:
        return loaded.initializers
    values = dict(loaded.initializers)
    values.update({name: q.value for name, q in quantized.items()})
    return values
