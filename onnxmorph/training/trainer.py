"""Shared pieces of structure learning and fine-tuning: options, loss choice, targets, loop."""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from onnxmorph.errors import DataError, Interrupted, TrainingError
from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.checkpoint import (
    CHECKPOINT_EVERY,
    PhaseCheckpoints,
    model_digest,
    stop_requests,
)
from onnxmorph.training.data import Batch, DataSource
from onnxmorph.training.evaluate import inference_session
from onnxmorph.training.gates import GateSettings
from onnxmorph.training.parameters import default_trainable
from onnxmorph.training.progress import Progress, TrainingLog
from onnxmorph.training.ranger import OPTIMIZERS, RangerSettings, make_ranger
from onnxmorph.training.schedules import DEFAULT_SCHEDULE, check_schedule, learning_rate
from onnxmorph.training.session import TrainingSession, check_device, model_with_values

LOSSES = ("auto", "cross-entropy", "mse", "distill", "ce+distill")
TEACHER_LOSSES = ("distill", "distill-mse", "ce+distill")  # losses that read the seed's outputs
# Hinton et al.'s usual values, kept by benchmarks/RESULTS_recovery.md.
DISTILL_TEMPERATURE = 4.0
DISTILL_WEIGHT = 0.5


@dataclass
class TrainOptions:
    steps: int = 250  # structure-learning steps
    finetune_steps: int = 0
    learning_rate: float = 2e-3
    optimizer: str = "adamw"
    loss: str = "auto"
    strength: float | None = None  # fixed λ (morph-net behaviour) instead of the budget
    alive_threshold: float = 0.1  # morph-net's default
    workdir: str | None = None  # checkpoints go here (none without it)
    seed: int = 0
    log: str | None = None  # JSON-lines training log
    progress: bool = False
    threads: int | None = None  # intra-op threads of the training session (None: ORT's)
    gates: GateSettings = field(default_factory=GateSettings)
    resume: bool = False  # continue from the checkpoints in `workdir`
    checkpoint_every: int = CHECKPOINT_EVERY
    # Set once a phase of this run wrote the log, so the next phase appends to it; a phase
    # resumed as finished leaves its log offset for the next phase to cut the log back to.
    log_started: bool = field(default=False, repr=False)
    log_offset: int | None = field(default=None, repr=False)
    device: str = "cpu"  # "cuda" trains on a GPU (the onnxruntime-training CUDA build)
    lr_schedule: str = DEFAULT_SCHEDULE  # training/schedules.py, in every training phase
    # ce+distill: (1 - w) * CE + w * T^2 * KL(softmax(teacher/T) || softmax(student/T)).
    distill_temperature: float = DISTILL_TEMPERATURE
    distill_weight: float = DISTILL_WEIGHT
    # Re-initialise the weights (rewrite/reinit.py, seeded by `seed`) before fine-tuning:
    # the pruned structure trained from scratch.
    reinit: bool = False
    # Hyper-parameters of optimizer="ranger" (training/ranger.py; a dict is accepted too).
    ranger: RangerSettings = field(default_factory=RangerSettings)

    def __post_init__(self) -> None:
        check_device(self.device)  # before any work: a missing GPU is a one-line error
        if self.threads is not None and self.threads < 1:
            raise TrainingError("--threads must be at least 1")
        if self.loss not in LOSSES:
            raise TrainingError(f"unknown loss '{self.loss}'; use one of {', '.join(LOSSES)}")
        if self.steps < 1 or self.finetune_steps < 0:
            raise TrainingError("--steps must be at least 1 and --finetune-steps at least 0")
        if not 0 < self.alive_threshold < 1:
            raise TrainingError("--alive-threshold must be between 0 and 1")
        if self.learning_rate <= 0:
            raise TrainingError("--lr must be positive")
        check_schedule(self.lr_schedule)
        if not (math.isfinite(self.distill_temperature) and self.distill_temperature > 0):
            raise TrainingError("--distill-temperature must be a finite number > 0")
        if not (math.isfinite(self.distill_weight) and 0 <= self.distill_weight <= 1):
            raise TrainingError("--distill-weight must be a number in [0, 1]")
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"unknown optimizer '{self.optimizer}'; use one of "
                                f"{', '.join(OPTIMIZERS)}")
        if isinstance(self.ranger, dict):
            self.ranger = RangerSettings(**self.ranger)
        if self.checkpoint_every < 1:
            raise TrainingError("--checkpoint-every must be at least 1")
        if self.reinit and self.finetune_steps == 0:
            raise TrainingError("--reinit trains the structure from scratch: it needs "
                                "--finetune-steps > 0")
        if self.resume and not self.workdir:
            raise TrainingError("--resume needs the --workdir of the interrupted run")


def choose_loss(option: str, batch: Batch, model: onnx.ModelProto | None = None) -> str:
    """Integer labels → ce+distill (cross-entropy plus distillation from the seed); no labels
    → distillation from the seed; float labels → mse. Distillation to outputs that are not
    class scores (see `class_scores`; known from `model`) is MSE to the seed's outputs."""
    if option != "auto":
        if option in ("cross-entropy", "mse", "ce+distill") and batch.labels is None:
            raise DataError(f"--loss {option} needs labels, but the loader yields inputs only; "
                            "use --loss distill")
        if option in ("cross-entropy", "ce+distill") and not np.issubdtype(batch.labels.dtype,
                                                                          np.integer):
            raise DataError(f"--loss {option} needs integer class indices, but the labels "
                            f"are {batch.labels.dtype}; yield integer labels of shape (N,)")
        return _distill_kind(option, model)
    if batch.labels is None:
        return _distill_kind("distill", model)
    if np.issubdtype(batch.labels.dtype, np.integer):
        return "ce+distill"
    if _look_like_class_probabilities(batch.labels):
        raise DataError(f"labels are float of shape {batch.labels.shape} with rows summing to 1 "
                        "(one-hot or soft class labels), which onnxmorph does not train on; "
                        "yield integer class indices of shape (N,), or pass --loss mse to "
                        "regress the outputs on them")
    return "mse"


def _distill_kind(loss: str, model: onnx.ModelProto | None) -> str:
    if loss == "distill" and model is not None and not class_scores(model):
        return "distill-mse"
    return loss


def class_scores(model: onnx.ModelProto) -> bool:
    """Whether the first output looks like class scores, as `evaluate.is_class_scores` says
    of arrays: `[N, C]` (or `[N, C, 1, 1]`) with C unknown or > 1. Other outputs (maps,
    boxes, one value per sample) are distilled by MSE, not KL."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) < 2 or (dims[1].HasField("dim_value") and dims[1].dim_value <= 1):
        return False
    return all(d.HasField("dim_value") and d.dim_value == 1 for d in dims[2:])


def loss_settings(options: TrainOptions, loss: str) -> dict:
    """The loss graph's temperature and weight: --distill-temperature/--distill-weight for
    ce+distill; distillation without labels stays at T = 1 (its KL is the whole loss)."""
    if loss != "ce+distill":
        return {}
    return {"temperature": options.distill_temperature, "distill_weight": options.distill_weight}


def _look_like_class_probabilities(labels: np.ndarray) -> bool:
    if labels.ndim != 2 or labels.shape[1] < 2:
        return False
    return bool((labels >= 0).all() and np.allclose(labels.sum(axis=1), 1.0, atol=1e-3))


class Teacher:
    """The seed model's outputs: the target of distillation (with or without labels)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.session = inference_session(model)

    def __call__(self, batch: Batch) -> np.ndarray:
        return self.session.run(None, batch.inputs)[0]


def target_for(batch: Batch, loss: str, teacher: Teacher | None):
    """What `TrainingSession.train_step` takes as target for `loss`."""
    if loss == "ce+distill":
        return batch.labels, teacher(batch)
    if loss in TEACHER_LOSSES:
        return teacher(batch)
    return batch.labels


def endless(data: DataSource, current: Iterator[Batch] | None = None) -> Iterator[Batch]:
    """Training batches epoch after epoch; `current`: a resumed epoch to finish first."""
    while True:
        empty = current is None
        for batch in current if current is not None else data.train():
            empty = False
            yield batch
        current = None
        if empty:
            raise DataError(f"loader '{data.path}' train_batches() yielded no batches")


@contextlib.contextmanager
def work_folder(workdir: str | None = None):
    """A temporary folder for training artifacts, removed however training ends (they are
    rebuilt on --resume; `workdir` only holds checkpoints)."""
    with tempfile.TemporaryDirectory(prefix="onnxmorph-") as tmp:
        yield tmp


def output_name(model: onnx.ModelProto) -> str:
    return model.graph.output[0].name


def finetune(
    model: onnx.ModelProto, data: DataSource, options: TrainOptions, loss: str,
    teacher: Teacher | None, steps: int, label: str = "fine-tune",
) -> onnx.ModelProto:
    """Train `model`'s weights for `steps` steps (no gates, no cost); return the new model.
    With `options.workdir`, checkpoints every `options.checkpoint_every` steps and on
    SIGINT/SIGTERM (then raises Interrupted); `options.resume` continues from one."""
    if steps == 0:
        return model
    fingerprint = {"model": model_digest(model), "loss": loss, "steps": steps, "label": label,
                   "learning_rate": options.learning_rate, "optimizer": options.optimizer,
                   "lr_schedule": options.lr_schedule, "ranger": asdict(options.ranger),
                   **loss_settings(options, loss)}
    checkpoints = PhaseCheckpoints(options, "finetune", data, fingerprint)
    loaded = checkpoints.loaded
    log_offset = loaded.state.get("log_offset") if loaded else options.log_offset
    log_offset = log_offset if options.log else None
    if loaded is not None and loaded.done:
        checkpoints.resumed_batches()
        if log_offset is not None:  # cut rows an interrupted save left after the checkpoint
            TrainingLog(options.log, resume_at=log_offset).close()
        options.log_started = True
        return model_with_values(model, loaded.arrays)
    with work_folder() as folder:
        session = phase_session(model, f"{folder}/{label}", options, loss,
                                checkpoint=loaded.ort_path if loaded else None)
        batches = endless(data, checkpoints.resumed_batches())
        start = checkpoints.start
        with TrainingLog(options.log, append=options.log_started, resume_at=log_offset) as log, \
                stop_requests() as stop, \
                Progress(steps, label, enabled=options.progress, initial=start) as progress:
            options.log_started = True
            for step in range(start, steps):
                batch = next(batches)
                rate = scheduled_rate(session, options, step, steps, "finetune")
                result = session.train_step(batch.inputs, target_for(batch, loss, teacher))
                log.write({"phase": "finetune", "step": step, "task_loss": result.task_loss,
                           "learning_rate": float(rate)})
                progress.update(step, loss=result.task_loss)
                if stop or checkpoints.due(step + 1, steps):
                    checkpoints.save(step + 1, {"log_offset": log.offset()}, {}, session)
                if stop:
                    raise Interrupted(stop[0], f"{label} step {step + 1}/{steps}")
            values = session.parameters()
            checkpoints.save(steps, {"log_offset": log.offset()}, values, done=True)
        return model_with_values(model, values)


def phase_session(
    model: onnx.ModelProto, folder: str, options: TrainOptions, loss: str, *,
    trainable: list[str] | None = None, cost_output: str | None = None,
    checkpoint: str | None = None, own_step: list[str] | tuple[str, ...] = (),
) -> TrainingSession:
    """The training session of one phase of any method: artifacts for `options.optimizer`,
    Ranger in numpy when it is asked for, the device and threads. Every method builds its
    sessions here, so none can leave out an option. `trainable`: default_trainable's choice
    when None; `own_step`: trainable parameters the method moves itself after each step (gate
    logits, GDP gates), which Ranger leaves alone; `checkpoint`: an ORT state to resume."""
    if trainable is None:
        trainable = default_trainable(model, [output_name(model)])
    paths = build_training_artifacts(
        model, folder, trainable=list(trainable), frozen=None, loss=loss,
        output_name=output_name(model), cost_output=cost_output, optimizer=options.optimizer,
        **loss_settings(options, loss),
    )
    return TrainingSession(paths, learning_rate=options.learning_rate, checkpoint=checkpoint,
                           device=options.device, threads=options.threads,
                           ranger=make_ranger(options, model, paths.trainable, skip=own_step))


def scheduled_rate(session: TrainingSession, options: TrainOptions, step: int, total: int,
                   phase: str) -> float:
    """Set the session's rate for step `step` of `total` under `--lr-schedule` (phase
    "structure" or "finetune", schedules.py); returns it for the log."""
    rate = learning_rate(options.lr_schedule, options.learning_rate, step, total, phase=phase)
    session.set_learning_rate(rate)
    return rate
