"""`onnxmorph profile`: measure every weight layer's latency on a coarse width grid, and
every other op once (other_ops.py).

Each layer runs alone as a one-node ONNX model at its real spatial size, for a few input and
output channel counts (multiples of the runtime's channel block where the seed's are);
interpolation fills the rest. Layers with the same configuration share their measurements.
A configuration's grid points are timed in interleaved rounds and keep their fastest run, so
load on a shared machine lands on single runs, not on whole points; the table records the
load average before and after, and warns when it was above the core count.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import onnx
from onnx import helper

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.quantized import constant_values
from onnxmorph.latency.layers import LayerSpec, single_layer_model, weight_layers
from onnxmorph.latency.measure import (
    busy_warning,
    load_average,
    make_session,
    random_feeds,
    time_fastest,
)
from onnxmorph.latency.other_ops import (
    analysis_batch,
    element_types,
    op_config_key,
    other_ops,
    single_op_model,
)
from onnxmorph.latency.runtime import channel_block
from onnxmorph.latency.table import Grid, LatencyTable

FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # below 1/4: extended linearly to 0
# In the cache key: a table made by an older profiler (no prices for other ops) is not reused.
GRID_NAME = "fractions-1/4,1/2,3/4,1+ops"
_WORK_PER_RUN = 2e6  # MACs: smaller layers run as several copies in one model
_OPS_PER_ROUND = 32  # sessions of other ops open (and interleaved) at once


def grid_counts(full: int, variable: bool, step: int) -> list[int]:
    """Channel counts to measure: fractions of the seed's, in multiples of `step`."""
    if not variable or full <= step:
        return [full]
    counts = {min(full, max(step, int(round(f * full / step)) * step)) for f in FRACTIONS}
    return sorted(counts | {full})


def layer_step(spec: LayerSpec, full: int, block: int) -> int:
    # A layer of one block is cut finer by --round-to auto (SelectionRules.step), so its
    # grid must be finer too: one point would price it as constant, as if it never shrank.
    step = block if full % block == 0 and full > block else 1
    if spec.groups > 1 and not spec.depthwise:  # grouped: every group keeps equal width
        step = math.lcm(step, spec.groups)
    return step


def profile_layers(analysis: Analysis, *, key: dict, batch: int = 1, threads: int | None = None,
                   runtime: str = "ort-cpu",
                   progress: Callable[[int, int], None] | None = None) -> LatencyTable:
    began = time.perf_counter()
    loads = [load_average()]
    block = channel_block(runtime)
    # Every timed one-node model pays a session.run's overhead, which a whole model pays
    # once: it is measured alone, taken off each timing and priced once (expr.RUN_OVERHEAD).
    overhead = run_overhead(threads)
    specs = weight_layers(analysis)
    layers: dict[str, str] = {}
    unique: dict[str, LayerSpec] = {}
    for spec in specs:
        config = spec.config_key(batch)
        layers[spec.name] = config
        unique.setdefault(config, spec)
    configs: dict[str, Grid] = {}
    measurements = 0
    for index, (config, spec) in enumerate(unique.items()):
        grid_in = ([spec.in_full] if spec.depthwise else
                   grid_counts(spec.in_full, spec.in_variable, layer_step(spec, spec.in_full,
                                                                          block)))
        grid_out = grid_counts(spec.out_full, spec.out_variable,
                               layer_step(spec, spec.out_full, block))
        points = [(cin, cout) for cin in grid_in for cout in grid_out]
        times = iter(_measure_grid(spec, points, batch, threads, overhead))
        configs[config] = Grid(grid_in, grid_out, [[next(times) for _ in grid_out]
                                                   for _ in grid_in])
        measurements += len(points)
        if progress:
            progress(index + 1, len(unique) + 1)
    ops, unpriced = profile_other_ops(analysis, {s.name for s in specs}, batch, threads,
                                      overhead)
    if progress:
        progress(len(unique) + 1, len(unique) + 1)
    loads.append(load_average())
    info = {"seconds": round(time.perf_counter() - began, 2), "layers": len(specs),
            "configs": len(unique), "measurements": measurements, "block": block,
            "other_ops": len(ops), "unpriced_ops": len(unpriced),
            "load_average": {"start": loads[0], "end": loads[-1]},
            "cpu_count": os.cpu_count()}
    warning = busy_warning(loads)
    if warning:
        info["warning"] = warning
    return LatencyTable(key=key, layers=layers, configs=configs, info=info, ops=ops,
                        unpriced=unpriced, overhead_ms=overhead)


def run_overhead(threads: int | None) -> float:
    """ms of one session.run of a one-element Relu: what every inference pays besides its
    ops (input/output binding, scheduling), which matters for models of a few ms."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["Y"])], "overhead",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    session = make_session(model, threads)
    return time_fastest([(session, random_feeds(session, None))], min_rounds=20)[0]


def _measure_grid(spec: LayerSpec, points: list[tuple[int, int]], batch: int,
                  threads: int | None, overhead: float = 0.0) -> list[float]:
    """ms per (cin, cout): one session per point, timed in interleaved rounds."""
    runs, copies = [], []
    for cin, cout in points:
        cin_used = cout if spec.depthwise else cin
        macs = spec.macs_coef * (cout if spec.depthwise else cin_used * cout)
        macs *= batch / max(spec.input_shape[0], 1)
        count = int(min(16, max(1, _WORK_PER_RUN // max(macs, 1.0))))
        session = make_session(single_layer_model(spec, cin_used, cout, batch, count), threads)
        runs.append((session, random_feeds(session, None)))
        copies.append(count)
    return [_net(t, overhead) / c for t, c in zip(time_fastest(runs), copies)]


def _net(ms: float, overhead: float) -> float:
    """A timing less the run overhead, never below a tenth of itself (noise in either)."""
    return max(ms - overhead, 0.1 * ms)


def profile_other_ops(analysis: Analysis, weight_names: set[str], batch: int,
                      threads: int | None,
                      overhead: float = 0.0) -> tuple[dict[str, dict], dict[str, str]]:
    """(prices, unpriced) of every op other than the weight layers, at the seed's widths."""
    ops = other_ops(analysis, weight_names)
    types = element_types(analysis) if ops else {}
    values = constant_values(analysis.loaded) if ops else {}
    keys = {op.name: op_config_key(op, analysis, batch) for op in ops}
    unique: dict[str, object] = {}  # config → the op timed for it
    for op in ops:
        if op.fused_into is None:
            unique.setdefault(keys[op.name], op)
    times: dict[str, float] = {}
    failed: dict[str, str] = {}
    configs = list(unique)
    # Sessions are made per chunk and dropped after it: their inputs at batch 32 can be
    # hundreds of MB each.
    for start in range(0, len(configs), _OPS_PER_ROUND):
        runs = {}
        for config in configs[start:start + _OPS_PER_ROUND]:
            try:
                runs[config] = _op_run(unique[config], analysis, batch, threads, types,
                                       values)
            except Exception as exc:  # noqa: BLE001 - say why in the report
                failed[config] = ("cannot run alone in onnxruntime: "
                                  + str(exc).splitlines()[0][:200])
        measured = time_fastest([run[:2] for run in runs.values()]) if runs else []
        times.update({c: _net(t, overhead) * runs[c][2] for c, t in zip(runs, measured)})
    prices: dict[str, dict] = {}
    unpriced: dict[str, str] = {}
    for op in ops:
        config = keys[op.name]
        if config in failed:
            unpriced[op.name] = failed[config]
            continue
        ms = 0.0 if op.fused_into is not None else times[config] * (1 + op.layout_changes)
        prices[op.name] = op.price(ms)
    return prices, unpriced


def _op_run(op, analysis: Analysis, batch: int, threads: int | None, types: dict,
            values: dict):
    """(session, feeds, scale): at `batch`, else at the analysis' batch scaled by the ratio
    (e.g. a Reshape target baked at batch 1); the first error if neither runs."""
    try:
        return (*_op_session(op, analysis, batch, threads, types, values), 1.0)
    except Exception as first:  # noqa: BLE001
        seed_batch = max(1, analysis_batch(analysis))
        if seed_batch == batch:
            raise
        try:
            return (*_op_session(op, analysis, seed_batch, threads, types, values),
                    batch / seed_batch)
        except Exception:  # noqa: BLE001
            raise first from None


def _op_session(op, analysis: Analysis, batch: int, threads: int | None, types: dict,
                values: dict):
    session = make_session(single_op_model(op, analysis, batch, types, values), threads)
    feeds = random_feeds(session, None)
    session.run(None, feeds)  # fails here rather than while timing
    return session, feeds
