"""Read an ONNX file safely: clear errors for missing, non-ONNX, truncated or unsafe files."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from onnxmorph.errors import ModelLoadError


def read_model_file(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse `path` into a ModelProto, loading external data only from inside its folder."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file '{path}' does not exist")
    if not path.is_file():
        raise ModelLoadError(f"'{path}' is not a file; pass the path of an .onnx model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types for garbage input
        raise ModelLoadError(
            f"'{path}' is not a readable ONNX model ({type(exc).__name__}); "
            "check that the file is complete and really is .onnx"
        ) from exc
    if not model.graph.node:
        raise ModelLoadError(
            f"'{path}' holds no graph nodes: it is empty, truncated or not an ONNX model"
        )
    _load_external_data(model, path.parent)
    return model


def _load_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    base = base_dir.resolve()
    tensors = [
        t for t in external_data_helper._get_all_tensors(model)
        if external_data_helper.uses_external_data(t)
    ]
    for tensor in tensors:
        info = external_data_helper.ExternalDataInfo(tensor)
        target = (base / info.location).resolve()
        # A location like ../../etc/passwd would read files the user never meant to share.
        if base != target and base not in target.parents:
            raise ModelLoadError(
                f"external data '{info.location}' of tensor '{tensor.name}' lies outside the "
                f"model's folder '{base}'; move the data file next to the model"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"external data file '{info.location}' of tensor '{tensor.name}' is missing; "
                f"put it in '{base}'"
            )
    if tensors:
        try:
            external_data_helper.load_external_data_for_model(model, str(base))
        except Exception as exc:
            raise ModelLoadError(f"could not read external data next to the model: {exc}") from exc
