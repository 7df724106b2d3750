"""Load pipeline: file → opset 11–21 → constants folded → static shapes for every tensor."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxmorph.errors import UnsupportedModelError
from onnxmorph.graph.fold_constants import fold_constants
from onnxmorph.graph.isolated import ShapeInferenceWorker
from onnxmorph.graph.model_file import read_model_file
from onnxmorph.graph.opset import normalize_opset
from onnxmorph.graph.shapes import (
    clear_negative_dims,
    dynamic_batch_inputs,
    dynamic_sequence_axes,
    infer_static_shapes,
    parse_input_shapes,
    resolve_input_shapes,
)

__all__ = ["LoadedModel", "load_model", "parse_input_shapes"]

# Each round folds the Shape chains whose input shapes the previous round made known (a
# channel shuffle per block); a model needs about as many rounds as it has such blocks.
_MAX_FOLD_ROUNDS = 200
# The second batch size at which values are computed to tell batch-dependent ones apart.
_OTHER_BATCH_STEP = 2


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
    try:
        return _normalized(proto, input_shapes, source)
    except UnicodeDecodeError as exc:
        # protobuf parses strings lazily: a damaged name fails wherever it is first read.
        raise UnsupportedModelError(
            f"the model holds a name that is not UTF-8 text ({exc.reason} at byte "
            f"{exc.start}); the file is damaged — re-export the model") from exc


def _normalized(proto: onnx.ModelProto, input_shapes, source: str | None) -> LoadedModel:
    proto = normalize_opset(proto)
    clear_negative_dims(proto)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, TypeError) as exc:
        # Damaged names can make the checker raise TypeError, not ValidationError.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(f"the model is not valid ONNX: {first}") from exc
    _check_text_fields(proto)
    _check_initializer_data(proto)
    resolved = resolve_input_shapes(proto, input_shapes or {})
    shapes = _fold_until_stable(proto, resolved)
    _check_outputs_known(proto, shapes)
    return LoadedModel(model=proto, shapes=shapes, input_shapes=resolved, source=source)


def _check_text_fields(message) -> None:
    """protobuf hands a string field that is not UTF-8 back as bytes, which fails far away."""
    for descriptor, value in message.ListFields():
        if descriptor.type == descriptor.TYPE_MESSAGE:
            for item in _values(descriptor, value):
                _check_text_fields(item)
        elif descriptor.type == descriptor.TYPE_STRING:
            for item in _values(descriptor, value):
                if isinstance(item, bytes):
                    where = f"{descriptor.containing_type.name}.{descriptor.name}"
                    raise UnsupportedModelError(
                        f"the model holds a {where} that is not UTF-8 text ({item[:40]!r}); "
                        "the file is damaged — re-export the model")


def _values(field, value) -> list:
    repeated = (field.is_repeated if hasattr(field, "is_repeated")  # protobuf >= 5
                else field.label == field.LABEL_REPEATED)
    return list(value) if repeated else [value]


def _check_initializer_data(proto: onnx.ModelProto) -> None:
    """The checker accepts an initializer whose data does not fill its dims; numpy does not."""
    for init in proto.graph.initializer:
        try:
            numpy_helper.to_array(init)
        except Exception as exc:
            raise UnsupportedModelError(
                f"initializer '{init.name}' does not hold the data its dims {list(init.dims)} "
                "need; the file is damaged or was written wrongly — re-export the model") from exc


def _fold_until_stable(proto: onnx.ModelProto, resolved) -> dict[str, tuple[int, ...]]:
    """Alternate shape inference and constant folding until nothing new folds.

    Values are computed at the analysis batch and at a second one: what differs depends on
    the batch and stays computed at run time, so the model still runs at any batch size.
    A dynamic sequence length stays dynamic the same way (values also computed one token
    shorter), unless the model computes at one length only (a TorchScript export of
    nn.MultiheadAttention bakes the key length in): then it is folded at the given length.
    """
    if dynamic_sequence_axes(proto):
        trial = onnx.ModelProto()
        trial.CopyFrom(proto)
        shapes = _fold_rounds(trial, resolved, vary_sequences=True)
        if shapes is not None:
            proto.CopyFrom(trial)
            return shapes
    return _fold_rounds(proto, resolved, vary_sequences=False)


def _fold_rounds(proto: onnx.ModelProto, resolved,
                 vary_sequences: bool) -> dict[str, tuple[int, ...]] | None:
    dynamic = set(dynamic_batch_inputs(proto))
    other = {name: (dims[0] + _OTHER_BATCH_STEP, *dims[1:]) if name in dynamic else dims
             for name, dims in resolved.items()}
    if vary_sequences:
        sequences = dynamic_sequence_axes(proto)
        other = {name: tuple(d - 1 if a in sequences.get(name, ()) and d > 1 else d
                             for a, d in enumerate(dims)) for name, dims in other.items()}
    batch_dependent: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with ShapeInferenceWorker() as worker:
        for _ in range(_MAX_FOLD_ROUNDS):
            shapes = infer_static_shapes(proto, resolved, _at(batch_dependent, 0), worker)
            other_shapes = None
            if dynamic or vary_sequences:
                other_shapes = _shapes_or_none(proto, other, _at(batch_dependent, 1), worker)
                if other_shapes is None and vary_sequences:
                    return None
            known = set(batch_dependent)
            # Batch-dependent values found this round (Range(0, batch)) let inference see
            # further: infer once more with them before stopping.
            if not fold_constants(proto, shapes, other_shapes, batch_dependent) \
                    and set(batch_dependent) <= known:
                return shapes
        return infer_static_shapes(proto, resolved, _at(batch_dependent, 0), worker)


def _at(batch_dependent: dict, which: int) -> dict[str, np.ndarray]:
    return {name: pair[which] for name, pair in batch_dependent.items()}


def _shapes_or_none(proto, input_shapes, values, worker) -> dict[str, tuple[int, ...]] | None:
    """Shapes at the second batch; None when the model only works at one batch size."""
    try:
        return infer_static_shapes(proto, input_shapes, values, worker)
    except UnsupportedModelError:
        return None


def _check_outputs_known(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    missing = [o.name for o in model.graph.output if o.name not in shapes]
    if missing:
        raise UnsupportedModelError(
            f"could not infer the shape of output '{missing[0]}'; give every input's shape "
            "with --input-shape NAME=1x3x224x224"
        )
