"""Pick the latency model the user asked for: a measured table (cached) or the roofline."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from onnxmorph.errors import OnnxMorphError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.latency.cache import cache_path, table_key
from onnxmorph.latency.expr import LatencyExpr, latency_expr
from onnxmorph.latency.profile import GRID_NAME, profile_layers
from onnxmorph.latency.roofline import roofline_table
from onnxmorph.latency.runtime import RUNTIMES
from onnxmorph.latency.table import LatencyTable, LatencyTableError

LATENCY_MODELS = ("table", "roofline")


def measured_table(analysis: Analysis, *, runtime: str = "ort-cpu", threads: int | None = None,
                   batch: int = 1, table_path: str | os.PathLike | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   remeasure: bool = False) -> tuple[LatencyTable, Path, bool]:
    """(table, its file, whether it was measured now): `table_path` if it exists, else the
    cached table for this model/machine/runtime/threads/batch, else measured and saved."""
    if runtime not in RUNTIMES:
        raise OnnxMorphError(f"unknown runtime '{runtime}'; use one of {', '.join(RUNTIMES)}")
    if batch < 1 or (threads is not None and threads < 1):
        raise OnnxMorphError("--batch and --threads must be at least 1")
    if batch != 1:  # 1 is the default: a fixed-batch model keeps today's behaviour
        check_batch(analysis, batch)
    loaded = analysis.loaded
    key = table_key(loaded.model, loaded.input_shapes, runtime, threads, batch, GRID_NAME)
    path = Path(table_path) if table_path else cache_path(key)
    if path.exists() and not remeasure:
        table = LatencyTable.load(path)
        if table_path is None and table.key != key:
            raise LatencyTableError(f"cached latency table '{path}' has another key; delete it")
        return table, path, False
    table = profile_layers(analysis, key=key, batch=batch, threads=threads, runtime=runtime,
                           progress=progress)
    return table, table.save(path), True


def check_batch(analysis: Analysis, batch: int) -> None:
    """A batch other than the model's needs a dynamic batch dimension: a fixed one cannot
    run at another (and a table made at it would price a model that cannot be deployed)."""
    for value in analysis.loaded.model.graph.input:
        if value.name in analysis.loaded.initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value != batch:
            raise OnnxMorphError(f"--batch {batch}: input '{value.name}' has a fixed batch of "
                                 f"{dims[0].dim_value}")


def latency_model(analysis: Analysis, *, kind: str = "table", runtime: str = "ort-cpu",
                  threads: int | None = None, batch: int = 1,
                  table_path: str | os.PathLike | None = None, device: str = "cpu",
                  ) -> LatencyExpr:
    if kind == "table":
        table, _, _ = measured_table(analysis, runtime=runtime, threads=threads, batch=batch,
                                     table_path=table_path)
    elif kind == "roofline":
        table = roofline_table(analysis, device=device, batch=batch, threads=threads)
    else:
        raise OnnxMorphError(f"unknown latency model '{kind}'; use one of "
                             f"{', '.join(LATENCY_MODELS)}")
    return latency_expr(analysis, table)
