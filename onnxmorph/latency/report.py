"""Predicted and measured latency of a pruned model against its seed, for the report."""

from __future__ import annotations

import numpy as np
import onnx

from onnxmorph.graph.analysis import Analysis
from onnxmorph.latency.expr import LatencyExpr
from onnxmorph.latency.measure import time_interleaved


def latency_report(analysis: Analysis, alive: np.ndarray, pruned: onnx.ModelProto, *,
                   expr: LatencyExpr | None = None, measure: bool = True,
                   threads: int | None = None, batch: int = 1, runs: int = 10) -> dict:
    """Predicted (weight layers, from `expr`) and measured (whole model, seed and pruned run
    interleaved in onnxruntime) latency; ideal speed-up = 1 / MACs ratio."""
    weights = np.asarray(alive, dtype=np.float64)
    macs_ratio = analysis.cost.macs(weights) / max(analysis.cost.macs(), 1e-30)
    report: dict = {"ideal_speedup": 1.0 / macs_ratio if macs_ratio > 0 else None}
    if expr is not None:
        seed_ms, pruned_ms = expr(), expr(weights)
        seed_split, pruned_split = expr.split(), expr.split(weights)
        report["predicted"] = {
            "seed_ms": seed_ms, "pruned_ms": pruned_ms,
            "ratio": pruned_ms / seed_ms if seed_ms else 1.0,
            "weight_layers_ms": [seed_split[0], pruned_split[0]],
            "other_ops_ms": [seed_split[1], pruned_split[1]],
            "covers": "weight layers (Conv, Gemm, MatMul) and every other op with channels "
                      "(those fused into a Conv at 0 ms), except unpriced_ops; not shape "
                      "computations",
            "fused_ops": len(expr.fused),
            "unpriced_ops": list(expr.unpriced),
            "model": expr.source.get("key", {}).get("model"),
        }
        if expr.source.get("info", {}).get("warning"):
            report["predicted"]["table_warning"] = expr.source["info"]["warning"]
    if measure:
        shapes = {k: tuple(v) for k, v in analysis.loaded.input_shapes.items()}
        try:
            seed_t, pruned_t = time_interleaved([analysis.loaded.model, pruned], batch=batch,
                                                threads=threads, runs=runs, shapes=shapes)
        except Exception as exc:  # noqa: BLE001 - say why, never fail the pruning over it
            report["measured"] = {"error": str(exc).splitlines()[0][:300]}
            return report
        report["measured"] = {
            "seed_ms": seed_t.median_ms, "pruned_ms": pruned_t.median_ms,
            "ratio": pruned_t.median_ms / seed_t.median_ms,
            "speedup": seed_t.median_ms / pruned_t.median_ms,
            "seed_iqr_ms": [seed_t.q1_ms, seed_t.q3_ms],
            "pruned_iqr_ms": [pruned_t.q1_ms, pruned_t.q3_ms],
            "runs": runs, "batch": batch, "threads": threads or "onnxruntime default",
        }
        if report["ideal_speedup"]:
            report["measured"]["realised_over_ideal"] = (report["measured"]["speedup"]
                                                        / report["ideal_speedup"])
    return report
