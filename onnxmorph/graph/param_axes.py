"""Kept for existing imports: per-channel constants are described by role in graph/layers.py."""

from onnxmorph.graph.layers import LAYER_KINDS, Role, constant_channel_axis, weight_layer_ops

CHANNEL_VECTOR_OPS = tuple(
    k.op_type for k in LAYER_KINDS.values()
    if k.weight is None and all(r is Role.VECTOR for r in k.per_channel.values())
)
WEIGHT_OPS = weight_layer_ops()

__all__ = ["CHANNEL_VECTOR_OPS", "WEIGHT_OPS", "constant_channel_axis"]
