"""Load pipeline: file → opset 11–21 → constants folded → static shapes for every tensor."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxmorph.errors import OnnxMorphError, UnsupportedModelError
from onnxmorph.graph.fold_constants import fold_constants
from onnxmorph.graph.model_file import read_model_file
from onnxmorph.graph.opset import normalize_opset
from onnxmorph.graph.shapes import (
    infer_static_shapes,
    parse_input_shapes,
    resolve_input_shapes,
)

__all__ = ["LoadedModel", "load_model", "parse_input_shapes"]

_MAX_FOLD_ROUNDS = 4


@dataclass
class LoadedModel:
    """A normalised seed model plus the static shapes the analysis is computed at.

    `model` keeps the seed's graph inputs (dynamic batch stays dynamic); `shapes` holds the
    static shape of every tensor at `input_shapes` (batch 1 unless the user said otherwise).
    """

    model: onnx.ModelProto
    shapes: dict[str, tuple[int, ...]]
    input_shapes: dict[str, tuple[int, ...]]
    source: str | None = None
    initializers: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.initializers:
            self.initializers = {
                init.name: numpy_helper.to_array(init) for init in self.model.graph.initializer
            }


def load_model(
    model: str | os.PathLike | onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> LoadedModel:
    """Load and normalise a seed model; the caller's ModelProto is never modified."""
    source = None
    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        source = str(model)
        proto = read_model_file(model)
    proto = normalize_opset(proto)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UnsupportedModelError(f"the model is not valid ONNX: {first}") from exc
    resolved = resolve_input_shapes(proto, input_shapes or {})
    shapes: dict[str, tuple[int, ...]] = {}
    folded: set[str] = set()
    for _ in range(_MAX_FOLD_ROUNDS):
        shapes = infer_static_shapes(proto, resolved)
        new = fold_constants(proto, shapes)
        if not new:
            break
        folded |= new
    _keep_batch_dynamic(proto, folded, shapes, resolved)
    shapes = infer_static_shapes(proto, resolved)
    _check_outputs_known(proto, shapes)
    return LoadedModel(model=proto, shapes=shapes, input_shapes=resolved, source=source)


def _keep_batch_dynamic(model: onnx.ModelProto, folded: set[str], shapes, resolved) -> None:
    """Reshape targets folded from Shape chains hold the analysis batch size; a dynamic-batch
    model must keep working at any batch (training runs at the loader's), so such an entry
    becomes 0, "copy the input's batch"."""
    dynamic = [i for i in model.graph.input if i.name in resolved
               and i.type.tensor_type.shape.dim
               and not i.type.tensor_type.shape.dim[0].HasField("dim_value")]
    if not dynamic:
        return
    batch = resolved[dynamic[0].name][0]
    inits = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in folded:
            continue
        source = shapes.get(node.input[0])
        target = numpy_helper.to_array(inits[node.input[1]]).copy()
        if source and target.size and source[0] == batch and target[0] == batch:
            target[0] = 0
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(target, node.input[1]))


def _check_outputs_known(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    missing = [o.name for o in model.graph.output if o.name not in shapes]
    if missing:
        raise UnsupportedModelError(
            f"could not infer the shape of output '{missing[0]}'; give every input's shape "
            "with --input-shape NAME=1x3x224x224"
        )


def is_onnxmorph_error(exc: BaseException) -> bool:
    return isinstance(exc, OnnxMorphError)
