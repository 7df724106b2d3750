"""Atomic file writes: a crash or an error never leaves a half-written output behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import onnx

from onnxmorph.errors import OnnxMorphError


def check_output_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.parent.resolve().is_dir():
        raise OnnxMorphError(f"output folder '{path.parent}' does not exist; create it first")
    if path.is_dir():
        raise OnnxMorphError(f"output path '{path}' is a folder; name a file")
    return path


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    write_atomic(path, model.SerializeToString())


def save_json(obj, path: str | os.PathLike) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def sidecar(path: str | os.PathLike, suffix: str) -> Path:
    """`out/model.onnx` → `out/model.<suffix>`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{suffix}")
