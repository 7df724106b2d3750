"""Bring every model to an opset the handlers understand (11–21)."""

from __future__ import annotations

import onnx
from onnx import version_converter

from onnxmorph.errors import UnsupportedModelError
from onnxmorph.graph.onnx_utils import default_opset

MIN_OPSET = 11
MAX_OPSET = 21
# Old models are lifted to 13, where Split/Squeeze/Unsqueeze take their axes as inputs, the form
# newer exporters write, so handlers see one modern spelling.
CONVERT_TO = 13
# onnxruntime 1.19.2 loads IR version 10 at most.
MAX_IR_VERSION = 10


def required_default_opset(model: onnx.ModelProto) -> int:
    version = default_opset(model)
    if version is None:
        raise UnsupportedModelError("the model imports no default ONNX opset; re-export it")
    return version


def normalize_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return `model` with opset 11–21 and an IR version onnxruntime loads."""
    version = required_default_opset(model)
    if version > MAX_OPSET:
        raise UnsupportedModelError(
            f"opset {version} is newer than the supported {MIN_OPSET}–{MAX_OPSET}; "
            f"re-export the model with opset {MAX_OPSET} or lower"
        )
    if version < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, CONVERT_TO)
        except Exception as exc:
            raise UnsupportedModelError(
                f"opset {version} is older than {MIN_OPSET} and could not be converted to "
                f"{CONVERT_TO} ({exc}); re-export the model with a newer opset"
            ) from exc
    # IR < 4 requires every initializer to be a graph input; newer IR lets us drop that.
    model.ir_version = min(max(model.ir_version, 7), MAX_IR_VERSION)
    _drop_initializer_inputs(model.graph)
    return model


def _drop_initializer_inputs(graph: onnx.GraphProto) -> None:
    names = {init.name for init in graph.initializer}
    kept = [inp for inp in graph.input if inp.name not in names]
    if len(kept) != len(graph.input):
        del graph.input[:]
        graph.input.extend(kept)
