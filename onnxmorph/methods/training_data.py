"""What every training method reads off the loader first: batches of one shape, the loss
the labels call for, and the seed as teacher when there are no labels."""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnx

from onnxmorph.errors import DataError
from onnxmorph.training.data import DataSource
from onnxmorph.training.prepare import SameShapeBatches, batch_shapes
from onnxmorph.training.trainer import TEACHER_LOSSES, Teacher, TrainOptions, choose_loss


@dataclass
class TrainingData:
    source: DataSource  # batches of the first batch's shapes (a smaller last one is skipped)
    loss: str
    shapes: dict[str, tuple[int, ...]]
    teacher: Teacher | None  # the seed's outputs, for the distilling losses


def training_data(data: str | os.PathLike, seed_model: onnx.ModelProto,
                  options: TrainOptions) -> TrainingData:
    source = DataSource.for_model(data, seed_model)
    first = next(iter(source.train()), None)
    if first is None:
        raise DataError(f"loader '{data}' train_batches() yielded no batches")
    loss = choose_loss(options.loss, first, seed_model)
    shapes = batch_shapes(first)
    teacher = Teacher(seed_model) if loss in TEACHER_LOSSES else None
    return TrainingData(SameShapeBatches(source, shapes), loss, shapes, teacher)


def finetune_and_report(sliced: onnx.ModelProto, seed_model: onnx.ModelProto,
                        prepared: TrainingData, options: TrainOptions,
                        extra: dict) -> onnx.ModelProto:
    """Fine-tune a sliced model; its accuracy right after slicing and after fine-tuning, and
    its agreement with the seed, go into `extra`."""
    from onnxmorph.methods.gated import finetune_training_copy  # gated imports this module
    from onnxmorph.training.evaluate import evaluate

    extra["accuracy_after_slice"] = evaluate(sliced, prepared.source).accuracy
    if options.reinit:  # the weights after the slice are thrown away: trained from scratch
        extra["reinit"] = True
    final = finetune_training_copy(sliced, prepared.source, options, prepared.loss,
                                   prepared.teacher, options.finetune_steps, prepared.shapes)
    after = evaluate(final, prepared.source, reference=seed_model)
    extra.update(accuracy_after=after.accuracy, agreement_with_seed=after.class_agreement,
                 output_error_vs_seed=after.output_error)
    return final
