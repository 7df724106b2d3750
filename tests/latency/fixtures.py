"""A tiny conv net (plain, depthwise, 1x1, Gemm) and a synthetic latency table for it."""

from __future__ import annotations

import numpy as np

from onnxmorph.latency.layers import weight_layers
from onnxmorph.latency.other_ops import other_ops
from onnxmorph.latency.profile import grid_counts
from onnxmorph.latency.table import Grid, LatencyTable
from tests.onnx_builders import GraphBuilder


def tiny_model(dynamic_batch: bool = False):
    b = GraphBuilder(seed=3)
    x = b.input("x", ["N" if dynamic_batch else 1, 3, 12, 12])
    h = b.relu(b.conv(x, 16))
    h = b.relu(b.conv(h, 16, group=16))  # depthwise
    h = b.relu(b.conv(h, 24, k=1))
    y = b.gemm(b.flatten(b.gap(h)), 10)
    return b.model([y])


def synthetic_latency(cin: float, cout: float) -> float:
    """Not bilinear (so interpolation matters), rising in both counts."""
    return 0.02 + 1e-3 * cin * cout ** 1.3 + 4e-3 * np.sqrt(cout)


def synthetic_op_ms(channels: int) -> float:
    return 0.01 + 2e-3 * channels


def synthetic_table(analysis, key: dict | None = None, ops: bool = False,
                    step: int = 8) -> LatencyTable:
    """Weight layers priced by synthetic_latency; with `ops`, the other ops by
    synthetic_op_ms of their seed channels (else the table prices weight layers only).
    `step`: the grid's channel step (1 prices the few channels of a tiny net)."""
    layers, configs = {}, {}
    for spec in weight_layers(analysis):
        grid_in = [spec.in_full] if spec.depthwise else grid_counts(spec.in_full,
                                                                    spec.in_variable, step)
        grid_out = grid_counts(spec.out_full, spec.out_variable, step)
        values = [[synthetic_latency(cout if spec.depthwise else cin, cout) for cout in grid_out]
                  for cin in grid_in]
        layers[spec.name] = spec.name
        configs[spec.name] = Grid(grid_in, grid_out, values)
    prices = None
    if ops:
        prices = {op.name: {"ms": 0.0 if op.fused_into else synthetic_op_ms(op.channels),
                            "channels": op.channels, "fused_into": op.fused_into,
                            "layout_changes": op.layout_changes}
                  for op in other_ops(analysis, set(layers))}
    return LatencyTable(key=key or {"model": "synthetic"}, layers=layers, configs=configs,
                        ops=prices)
