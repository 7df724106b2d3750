"""`onnxmorph profile`: measure every weight layer's latency on a coarse width grid.

Each layer runs alone as a one-node ONNX model at its real spatial size, for a few input and
output channel counts (multiples of the runtime's channel block where the seed's are);
interpolation fills the rest. Layers with the same configuration share their measurements.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from onnxmorph.graph.analysis import Analysis
from onnxmorph.latency.layers import LayerSpec, single_layer_model, weight_layers
from onnxmorph.latency.measure import make_session, random_feeds, time_session
from onnxmorph.latency.runtime import channel_block
from onnxmorph.latency.table import Grid, LatencyTable

FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # below 1/4: extended linearly to 0
GRID_NAME = "fractions-1/4,1/2,3/4,1"
_WORK_PER_RUN = 2e6  # MACs: smaller layers run as several copies in one model


def grid_counts(full: int, variable: bool, step: int) -> list[int]:
    """Channel counts to measure: fractions of the seed's, in multiples of `step`."""
    if not variable or full <= step:
        return [full]
    counts = {min(full, max(step, int(round(f * full / step)) * step)) for f in FRACTIONS}
    return sorted(counts | {full})


def layer_step(spec: LayerSpec, full: int, block: int) -> int:
    step = block if full % block == 0 else 1
    if spec.groups > 1 and not spec.depthwise:  # grouped: every group keeps equal width
        step = math.lcm(step, spec.groups)
    return step


def profile_layers(analysis: Analysis, *, key: dict, batch: int = 1, threads: int | None = None,
                   runtime: str = "ort-cpu",
                   progress: Callable[[int, int], None] | None = None) -> LatencyTable:
    began = time.perf_counter()
    block = channel_block(runtime)
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
        rows = [[_measure(spec, cin, cout, batch, threads) for cout in grid_out]
                for cin in grid_in]
        measurements += len(grid_in) * len(grid_out)
        configs[config] = Grid(grid_in, grid_out, rows)
        if progress:
            progress(index + 1, len(unique))
    info = {"seconds": round(time.perf_counter() - began, 2), "layers": len(specs),
            "configs": len(unique), "measurements": measurements, "block": block}
    return LatencyTable(key=key, layers=layers, configs=configs, info=info)


def _measure(spec: LayerSpec, cin: int, cout: int, batch: int, threads: int | None) -> float:
    cin_used = cout if spec.depthwise else cin
    macs = spec.macs_coef * (cout if spec.depthwise else cin_used * cout)
    macs *= batch / max(spec.input_shape[0], 1)
    copies = int(min(16, max(1, _WORK_PER_RUN // max(macs, 1.0))))
    session = make_session(single_layer_model(spec, cin_used, cout, batch, copies), threads)
    return time_session(session, random_feeds(session, None)) / copies
