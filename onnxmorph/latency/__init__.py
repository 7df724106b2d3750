"""Latency models of the deployment runtime: measured per-layer tables and the roofline."""

from onnxmorph.latency.expr import LatencyExpr, latency_expr
from onnxmorph.latency.model import LATENCY_MODELS, latency_model, measured_table

__all__ = ["LATENCY_MODELS", "LatencyExpr", "latency_expr", "latency_model", "measured_table"]
