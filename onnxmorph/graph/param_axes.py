"""Which axis of a per-channel constant runs along which tensor's channels.

Shared by the cost model (parameters shrink with the channels) and the slicer (the constant
is sliced along that axis). Conv/Gemm weights have rules of their own.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxmorph.graph.handlers.base import Layout

# Ops whose inputs 1.. are [C] vectors indexed by the channel of input 0.
CHANNEL_VECTOR_OPS = ("BatchNormalization", "InstanceNormalization")
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def constant_channel_axis(
    node: onnx.NodeProto,
    index: int,
    value: np.ndarray,
    out_layout: Layout | None,
    out_shape: tuple[int, ...] | None,
) -> int | None:
    """Axis of constant input `index` that follows the channels of the node's output 0."""
    if out_layout is None or out_shape is None or len(out_layout.axes) != 1 or index == 0:
        return None
    channels = out_shape[out_layout.axis]
    if node.op_type in CHANNEL_VECTOR_OPS:
        return 0 if value.ndim == 1 and value.shape[0] == channels else None
    if node.op_type in ("Conv", "ConvTranspose"):
        return 0 if index == 2 else None
    if node.op_type in ("Gemm", "MatMul") and index < 2:
        return None
    # Numpy broadcasting aligns trailing axes (Gemm's bias C broadcasts the same way).
    aligned = out_layout.axis - (len(out_shape) - value.ndim)
    if aligned >= 0 and value.shape[aligned] == channels and channels > 1:
        return aligned
    return None
