"""Train a (pruned) model's weights on data: `finetune` and `train_from_scratch`.

What `onnxmorph finetune` and `onnxmorph train-from-scratch` call. `train_from_scratch`
re-initialises the weights as PyTorch would (onnxmorph/rewrite/reinit.py) and trains the
structure for `steps` (or `epochs` of the loader): the control that tells whether a learned
structure beats uniform width at the same training budget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnx

from onnxmorph.errors import DataError, TrainingError

if TYPE_CHECKING:
    from onnxmorph.training.evaluate import EvalResult


@dataclass
class TrainResult:
    model: onnx.ModelProto  # the seed's graph (opset, dynamic batch) with trained weights
    loaded: onnx.ModelProto  # the input as loaded (constants folded): what `model` replaces
    input_shapes: dict[str, tuple[int, ...]]  # the loader's batch shapes
    report: dict = field(default_factory=dict)
    quality: EvalResult | None = None  # the trained model's evaluation (also in `report`)


def finetune(model: str | os.PathLike | onnx.ModelProto, *, data: str | os.PathLike,
             steps: int = 250, teacher: str | os.PathLike | onnx.ModelProto | None = None,
             training: dict | None = None) -> TrainResult:
    """Train `model`'s weights for `steps` steps of `data`; `teacher`'s outputs (default: the
    model itself) are the distillation targets. `training` takes TrainOptions' fields
    (`reinit=True` starts from fresh weights)."""
    from onnxmorph.graph.load import load_model
    from onnxmorph.graph.model_file import read_model_file
    from onnxmorph.methods.gated import finetune_training_copy
    from onnxmorph.rewrite.verify import check_same_inputs
    from onnxmorph.training.data import DataSource
    from onnxmorph.training.evaluate import evaluate
    from onnxmorph.training.prepare import SameShapeBatches, batch_shapes
    from onnxmorph.training.trainer import TEACHER_LOSSES, Teacher, TrainOptions, choose_loss

    if steps < 1:
        raise TrainingError("--steps must be at least 1")
    options = TrainOptions(**{**(training or {}), "steps": steps, "finetune_steps": steps})
    proto = _read(model, read_model_file)
    teacher_model = _read(teacher, read_model_file) if teacher is not None else None
    if teacher_model is not None:
        check_same_inputs(proto, teacher_model, _name(model, "the model"),
                          "teacher " + _name(teacher, "model"))
    source = DataSource.for_model(data, proto)
    first = next(iter(source.train()), None)
    if first is None:
        raise DataError(f"loader '{data}' train_batches() yielded no batches")
    # The same loading as prune/analyze (constants folded into initializers, shapes resolved
    # at the loader's batch), so weights kept in Constant nodes (Paddle exports) train too.
    shapes = batch_shapes(first)
    loaded = load_model(proto, shapes).model
    teacher_model = teacher_model if teacher_model is not None else loaded
    source = SameShapeBatches(source, shapes)
    kind = choose_loss(options.loss, first, teacher_model)
    tuned = finetune_training_copy(loaded, source, options, kind, Teacher(teacher_model)
                                   if kind in TEACHER_LOSSES else None, steps, shapes)
    result = evaluate(tuned, source, reference=loaded if kind in ("distill", "distill-mse")
                      else None)
    report = {"loss": kind, "steps": steps, "reinit": options.reinit, **result.to_dict()}
    return TrainResult(tuned, loaded, shapes, report, result)


def epoch_steps(data: str | os.PathLike, model: str | os.PathLike | onnx.ModelProto,
                epochs: int) -> int:
    """Training steps in `epochs` passes over the loader (batches of the first one's shape)."""
    from onnxmorph.graph.model_file import read_model_file
    from onnxmorph.training.data import DataSource
    from onnxmorph.training.prepare import SameShapeBatches, batch_shapes

    if epochs < 1:
        raise TrainingError("--epochs must be at least 1")
    source = DataSource.for_model(data, _read(model, read_model_file))
    first = next(iter(source.train()), None)
    if first is None:
        raise DataError(f"loader '{data}' train_batches() yielded no batches")
    per_epoch = sum(1 for _ in SameShapeBatches(source, batch_shapes(first)).train())
    return epochs * per_epoch


def train_from_scratch(model: str | os.PathLike | onnx.ModelProto, *,
                       data: str | os.PathLike, steps: int | None = None,
                       epochs: int | None = None, training: dict | None = None) -> TrainResult:
    """Re-initialise `model`'s weights (seeded by `training["seed"]`, default 0) and train it
    for `steps` steps or `epochs` epochs of `data` (exactly one of them)."""
    if (steps is None) == (epochs is None):
        raise TrainingError("give either --steps or --epochs")
    if epochs is not None:
        steps = epoch_steps(data, model, epochs)
    result = finetune(model, data=data, steps=steps,
                      training={**(training or {}), "reinit": True})
    if epochs is not None:
        result.report["epochs"] = epochs
    return result


def _name(model, fallback: str) -> str:
    return fallback if isinstance(model, onnx.ModelProto) else f"'{model}'"


def _read(model, read_model_file) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else read_model_file(model)
