"""The checkpointed loop every structure-learning method trains in (gates, gdp, gamma,
group lasso): the method gives one training step and its own state; this module keeps the
checkpoints, the loader position, the --log rows and offset, progress and SIGINT/SIGTERM,
so that `--resume` continues where the run stopped and ends where an uninterrupted run ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import NamedTuple

import numpy as np
import onnx

from onnxmorph.errors import Interrupted
from onnxmorph.training.checkpoint import (
    STRUCTURE_PHASE,
    Checkpoint,
    PhaseCheckpoints,
    model_digest,
    stop_requests,
)
from onnxmorph.training.data import Batch, DataSource
from onnxmorph.training.progress import Progress, TrainingLog
from onnxmorph.training.trainer import TrainOptions, endless, loss_settings

# Options that change what structure learning computes: --resume refuses other values.
_RESUME_OPTIONS = ("steps", "learning_rate", "optimizer", "strength", "alive_threshold", "seed",
                   "lr_schedule")


class StepReport(NamedTuple):
    """What one step tells the loop: the values progress shows and the --log row, if any."""

    task_loss: float
    ratio: float
    lam: float
    row: dict | None = None


def structure_fingerprint(model: onnx.ModelProto, options: TrainOptions, loss: str,
                          budget: float, **method: object) -> dict:
    """What a checkpoint must match to be resumed: the trained graph, the options that change
    the result, and the method's own settings (`method`, JSON-able)."""
    return {"model": model_digest(model), "loss": loss, "budget": budget,
            **loss_settings(options, loss), "ranger": asdict(options.ranger),
            **{k: getattr(options, k) for k in _RESUME_OPTIONS}, **method}


class StructureLoop:
    """Structure learning's steps from the checkpoint to resume from (or 0) to options.steps.

    `loaded` is that checkpoint: the method restores its own state from `loaded.state` and
    `loaded.arrays` (what its snapshot returned) before `run`. When `loaded.done`, the phase
    had finished before a later one was interrupted: `finished()` returns the trained
    parameters and no session is needed. `own`: the names of the arrays the method's
    snapshot adds (kept in the checkpoint beside the parameters, never returned as them)."""

    def __init__(self, options: TrainOptions, source: DataSource, fingerprint: dict,
                 label: str, own: tuple[str, ...] = ()) -> None:
        self.options, self.source, self.label, self.own = options, source, label, own
        self.checkpoints = PhaseCheckpoints(options, STRUCTURE_PHASE, source, fingerprint)
        self.loaded: Checkpoint | None = self.checkpoints.loaded
        self.rows: list[dict] = list(self.loaded.state["rows"]) if self.loaded else []

    def finished(self) -> dict[str, np.ndarray] | None:
        """The parameters saved at the end of the phase (the method's own arrays left out),
        the loader and the log moved past it; None when the phase has steps left."""
        if self.loaded is None or not self.loaded.done:
            return None
        self.checkpoints.resumed_batches()
        self.options.log_started, self.options.log_offset = True, self.loaded.state["log_offset"]
        return {k: v for k, v in self.loaded.arrays.items() if k not in self.own}

    @property
    def ort_checkpoint(self) -> str | None:
        """The ORT checkpoint (weights, optimizer state) the session starts from."""
        return self.loaded.ort_path if self.loaded else None

    def run(self, session, step: Callable[[int, Batch], StepReport],
            snapshot: Callable[[], tuple[dict, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
        """Run the remaining steps; `snapshot()` is the method's state and arrays as they are
        after a step. Checkpoints every options.checkpoint_every steps and on SIGINT/SIGTERM
        (then raises Interrupted). Returns the trained parameters."""
        options, total = self.options, self.options.steps
        start = self.checkpoints.start
        log_offset = self.loaded.state["log_offset"] if self.loaded and options.log else None
        batches = endless(self.source, self.checkpoints.resumed_batches())
        with TrainingLog(options.log, resume_at=log_offset) as log, stop_requests() as stop, \
                Progress(total, self.label, enabled=options.progress, initial=start) as progress:
            options.log_started = True

            def save(steps_done: int, arrays: dict[str, np.ndarray], **kwargs) -> None:
                state, own = snapshot()
                self.checkpoints.save(steps_done, {**state, "rows": self.rows,
                                                   "log_offset": log.offset()},
                                      {**own, **arrays}, **kwargs)

            for index in range(start, total):
                report = step(index, next(batches))
                if report.row is not None:
                    self.rows.append(report.row)
                    log.write(report.row)
                progress.update(index, loss=report.task_loss, cost=report.ratio, lam=report.lam)
                if stop or self.checkpoints.due(index + 1, total):
                    save(index + 1, {}, session=session)
                if stop:
                    raise Interrupted(stop[0], f"structure learning step {index + 1}/{total}")
            values = session.parameters()
            save(total, values, done=True)
        return values
