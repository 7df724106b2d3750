"""Shared pieces of structure learning and fine-tuning: options, loss choice, targets, loop."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxmorph.errors import DataError, TrainingError
from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.data import Batch, DataSource
from onnxmorph.training.evaluate import inference_session
from onnxmorph.training.gates import GateSettings
from onnxmorph.training.parameters import default_trainable
from onnxmorph.training.progress import Progress
from onnxmorph.training.session import TrainingSession

LOSSES = ("auto", "cross-entropy", "mse", "distill")


@dataclass
class TrainOptions:
    steps: int = 250  # structure-learning steps
    finetune_steps: int = 0
    learning_rate: float = 2e-3
    optimizer: str = "adamw"
    loss: str = "auto"
    strength: float | None = None  # fixed λ (morph-net behaviour) instead of the budget
    alive_threshold: float = 0.1  # morph-net's default
    workdir: str | None = None
    seed: int = 0
    log: str | None = None  # JSON-lines training log
    progress: bool = False
    threads: int | None = None  # intra-op threads of the training session (None: ORT's)
    gates: GateSettings = field(default_factory=GateSettings)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise TrainingError(f"unknown loss '{self.loss}'; use one of {', '.join(LOSSES)}")
        if self.steps < 1 or self.finetune_steps < 0:
            raise TrainingError("--steps must be at least 1 and --finetune-steps at least 0")
        if not 0 < self.alive_threshold < 1:
            raise TrainingError("--alive-threshold must be between 0 and 1")
        if self.learning_rate <= 0:
            raise TrainingError("--lr must be positive")


def choose_loss(option: str, batch: Batch) -> str:
    """Integer labels → cross-entropy; no labels → distillation from the seed; float → mse."""
    if option != "auto":
        if option in ("cross-entropy", "mse") and batch.labels is None:
            raise DataError(f"--loss {option} needs labels, but the loader yields inputs only; "
                            "use --loss distill")
        return option
    if batch.labels is None:
        return "distill"
    return "cross-entropy" if np.issubdtype(batch.labels.dtype, np.integer) else "mse"


class Teacher:
    """The seed model's outputs: the target of label-free distillation."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.session = inference_session(model)

    def __call__(self, batch: Batch) -> np.ndarray:
        return self.session.run(None, batch.inputs)[0]


def target_for(batch: Batch, loss: str, teacher: Teacher | None) -> np.ndarray:
    if loss == "distill":
        return teacher(batch)
    return batch.labels


def endless(data: DataSource) -> Iterator[Batch]:
    """Training batches epoch after epoch."""
    while True:
        empty = True
        for batch in data.train():
            empty = False
            yield batch
        if empty:
            raise DataError(f"loader '{data.path}' train_batches() yielded no batches")


@contextlib.contextmanager
def work_folder(workdir: str | None):
    if workdir:
        yield workdir
    else:
        with tempfile.TemporaryDirectory(prefix="onnxmorph-") as tmp:
            yield tmp


def output_name(model: onnx.ModelProto) -> str:
    return model.graph.output[0].name


def finetune(
    model: onnx.ModelProto, data: DataSource, options: TrainOptions, loss: str,
    teacher: Teacher | None, steps: int, label: str = "fine-tune",
) -> onnx.ModelProto:
    """Train `model`'s weights for `steps` steps (no gates, no cost); return the new model."""
    if steps == 0:
        return model
    with work_folder(options.workdir) as folder:
        paths = build_training_artifacts(
            model, f"{folder}/{label}", trainable=default_trainable(model, [output_name(model)]),
            frozen=None, loss=loss, output_name=output_name(model), cost_output=None,
            optimizer=options.optimizer,
        )
        session = TrainingSession(paths, learning_rate=options.learning_rate,
                                  threads=options.threads)
        progress = Progress(steps, label, enabled=options.progress)
        batches = endless(data)
        for step in range(steps):
            batch = next(batches)
            # Cosine decay: fine-tuning ends at a small rate, so the last weights are stable.
            session.set_learning_rate(options.learning_rate * 0.5 * (1 + np.cos(np.pi * step
                                                                               / steps)))
            result = session.train_step(batch.inputs, target_for(batch, loss, teacher))
            progress.update(step, loss=result.task_loss)
        return session.updated_model(model)
