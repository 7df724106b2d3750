"""Roofline latency (morph-net's latency regularizer): per layer
max(FLOPs / peak compute, bytes moved / memory bandwidth), no measurement needed.

FLOPs are 2 × the cost model's MACs; bytes are the float32 input, output and weight tensors.
The other ops (other_ops.py) are memory-bound: their activations read and written once.
Tabulated on a fine width grid, it goes through the same interpolation as a measured table.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from onnxmorph.errors import OnnxMorphError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.quantized import constant_values
from onnxmorph.latency.layers import LayerSpec, weight_layers
from onnxmorph.latency.other_ops import other_ops, roofline_op_ms
from onnxmorph.latency.runtime import cpu_flags
from onnxmorph.latency.table import Grid, LatencyTable

# (peak FLOP/s, memory bytes/s), float32, from the vendors' data sheets; morph-net's
# resource_function.py uses the same two numbers per platform.
DEVICES = {
    "p100": (9.3e12, 732e9),
    "v100": (15.7e12, 900e9),
    "t4": (8.1e12, 320e9),
    "a100": (19.5e12, 1555e9),
    "h100": (67e12, 3350e9),
}
ROOFLINE_STEPS = 16  # widths tabulated per axis


def device_constants(device: str = "cpu", threads: int | None = None) -> tuple[float, float]:
    """(peak FLOP/s, bytes/s) of a named device; "cpu" estimates this machine's."""
    if device == "cpu":
        return _cpu_peak(threads), _memory_bandwidth()
    if device not in DEVICES:
        raise OnnxMorphError(f"unknown roofline device '{device}'; use cpu or one of "
                             f"{', '.join(DEVICES)}")
    return DEVICES[device]


def roofline_table(analysis: Analysis, *, device: str = "cpu", batch: int = 1,
                   threads: int | None = None) -> LatencyTable:
    peak, bandwidth = device_constants(device, threads)
    layers, configs = {}, {}
    specs = weight_layers(analysis)
    for spec in specs:
        config = spec.config_key(batch)
        layers[spec.name] = config
        if config in configs:
            continue
        grid_in = [spec.in_full] if spec.depthwise or not spec.in_variable else _grid(spec.in_full)
        grid_out = _grid(spec.out_full) if spec.out_variable else [spec.out_full]
        configs[config] = Grid(grid_in, grid_out, [
            [roofline_ms(spec, cin, cout, batch, peak, bandwidth) for cout in grid_out]
            for cin in grid_in])
    priced = other_ops(analysis, {s.name for s in specs})
    values = constant_values(analysis.loaded) if priced else {}
    ops = {op.name: op.price(0.0 if op.fused_into else roofline_op_ms(op, analysis, batch,
                                                                      bandwidth, values))
           for op in priced}
    key = {"model": "roofline", "device": device, "batch": batch}
    info = {"peak_flops": peak, "bandwidth_bytes": bandwidth, "device": device}
    return LatencyTable(key=key, layers=layers, configs=configs, info=info, ops=ops)


def roofline_ms(spec: LayerSpec, cin: float, cout: float, batch: int, peak: float,
                bandwidth: float) -> float:
    scale = batch / max(spec.input_shape[0], 1)
    macs = spec.macs_coef * (cout if spec.depthwise else cin * cout) * scale
    cin = cout if spec.depthwise else cin
    in_elements = math.prod(spec.input_shape) / spec.in_full * cin * scale
    out_elements = math.prod(spec.output_shape) / spec.out_full * cout * scale
    weight = math.prod(spec.weight_shape) / (spec.out_full if spec.depthwise
                                             else spec.in_full * spec.out_full)
    weights = weight * (cout if spec.depthwise else cin * cout)
    seconds = max(2 * macs / peak, 4 * (in_elements + out_elements + weights) / bandwidth)
    return seconds * 1e3


def _grid(full: int) -> list[int]:
    return sorted({max(1, int(round(full * i / ROOFLINE_STEPS)))
                   for i in range(1, ROOFLINE_STEPS + 1)})


def _cpu_peak(threads: int | None) -> float:
    flags = cpu_flags()
    per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 16 if "avx" in flags else 8
    return (threads or os.cpu_count() or 1) * _cpu_hz() * per_cycle


def _cpu_hz() -> float:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) * 1e6
    except (OSError, ValueError):
        pass
    return 2.5e9


def _memory_bandwidth() -> float:
    """Bytes per second of a large copy (read + write), best of three."""
    source = np.ones(8 * 1024 * 1024, dtype=np.float32)  # 32 MiB: past the caches
    target = np.empty_like(source)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best
