"""Where measured latency tables are kept, and what makes one reusable."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx

from onnxmorph.latency.runtime import machine_id


def cache_dir() -> Path:
    """The user cache folder for latency tables ($XDG_CACHE_HOME respected)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onnxmorph" / "latency"


def model_hash(model: onnx.ModelProto, input_shapes: dict | None = None) -> str:
    digest = hashlib.sha256(model.SerializeToString(deterministic=True))
    digest.update(json.dumps(sorted((input_shapes or {}).items()), default=list).encode())
    return digest.hexdigest()[:24]


def table_key(model: onnx.ModelProto, input_shapes: dict | None, runtime: str,
              threads: int | None, batch: int, grid: str) -> dict:
    """Everything a measured table depends on; equal keys may share one table."""
    import onnxruntime

    return {"model": model_hash(model, input_shapes), "machine": machine_id(),
            "runtime": runtime, "runtime_version": onnxruntime.__version__,
            "threads": threads or 0, "batch": batch, "grid": grid}


def cache_path(key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"{name}.json"
