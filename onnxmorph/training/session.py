"""A small training loop primitive over ORT's CheckpointState / Module / Optimizer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxmorph.errors import DataError, TrainingError
from onnxmorph.training.artifacts import ArtifactPaths
from onnxmorph.training.loss_graph import LABEL_LOSSES
from onnxmorph.training.ort_api import import_training_modules
from onnxmorph.training.ranger import Ranger

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class StepResult:
    """Scalars of one step; `output` is the task output (e.g. logits) of the batch."""

    loss: float
    task_loss: float
    cost: float | None
    output: np.ndarray | None = None


def model_with_values(original_model: onnx.ModelProto,
                      values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `original_model` whose initializers named in `values` hold those values."""
    out = onnx.ModelProto()
    out.CopyFrom(original_model)
    for init in out.graph.initializer:
        if init.name in values:
            init.CopyFrom(numpy_helper.from_array(values[init.name], init.name))
    return out


def check_device(device: str) -> str:
    """`device` ("cpu", "cuda" or "cuda:N") if this onnxruntime build can train on it."""
    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and (kind == "cpu" or not index.isdigit())):
        raise TrainingError(f"unknown device '{device}'; use cpu, cuda or cuda:N")
    if kind == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise TrainingError(
                "--device cuda: this onnxruntime has no CUDAExecutionProvider; install the "
                "CUDA build as the README's 'Training on a GPU' says, or use --device cpu")
    return device


class TrainingSession:
    """Runs training/eval steps on artifacts from `build_training_artifacts`.

    `device` "cuda" keeps parameters and steps on the GPU (numpy batches are copied there by
    ORT); `threads` sets ORT's intra-op threads (None: ORT's default, one per core).
    """

    def __init__(self, paths: ArtifactPaths, learning_rate: float = 1e-3, device: str = "cpu",
                 threads: int | None = None, checkpoint: str | None = None,
                 ranger: Ranger | None = None) -> None:
        """`checkpoint`: a state written by `save_checkpoint` (weights and optimizer state)
        to continue from, instead of the artifacts' initial one; `threads`: intra-op threads
        (None: onnxruntime's default); `ranger`: a numpy optimizer (training/ranger.py) that
        takes the step instead of the artifacts' optimizer."""
        _, _, api = import_training_modules()
        self.paths = paths
        self._state = api.CheckpointState.load_checkpoint(checkpoint or paths.checkpoint)
        try:
            self._module = api.Module(paths.training_model, self._state, paths.eval_model,
                                      device=check_device(device),
                                      session_options=_session_options(threads))
        except Exception as exc:  # e.g. the CUDA build on a machine without a usable GPU
            if device == "cpu":
                raise
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise TrainingError(f"onnxruntime could not start training on '{device}': "
                                f"{first_line}") from exc
        self._optimizer = api.Optimizer(paths.optimizer_model, self._module)
        # Set the rate directly: api.LinearLRScheduler swaps warm-up and total steps (1.19.2).
        self._optimizer.set_learning_rate(learning_rate)
        self.ranger = ranger
        if ranger is not None:
            ranger.learning_rate = float(learning_rate)
            if checkpoint:
                ranger.load(_ranger_path(checkpoint))
        self.step = 0

    # -- steps -------------------------------------------------------------------------------

    def train_step(
        self, inputs: dict[str, np.ndarray], target: np.ndarray | tuple[np.ndarray, np.ndarray],
        lam: float | None = None
    ) -> StepResult:
        """One forward/backward/update (`target`: labels or teacher outputs as the loss
        wants; for ce+distill the pair (labels, teacher outputs)). Raises TrainingError
        (naming the step) on NaN/inf loss, before the update, so parameters stay finite."""
        self._module.train()
        outs = self._run(inputs, target, lam)
        result = self._result(outs)
        if not math.isfinite(result.loss):
            self._module.lazy_reset_grad()
            raise TrainingError(
                f"loss became {result.loss} at training step {self.step} "
                f"(task loss {result.task_loss}, cost {result.cost}); "
                "lower the learning rate or check the data for NaN/inf"
            )
        if self.ranger is not None:
            self.ranger.step(self)
        else:
            self._optimizer.step()
        # Gradients accumulate in ORT's buffers until reset.
        self._module.lazy_reset_grad()
        self.step += 1
        return result

    def eval_step(
        self, inputs: dict[str, np.ndarray], target: np.ndarray | tuple[np.ndarray, np.ndarray],
        lam: float | None = None
    ) -> StepResult:
        """Forward only, inference-mode BatchNormalization, no update."""
        self._module.eval()
        return self._result(self._run(inputs, target, lam))

    def set_learning_rate(self, learning_rate: float) -> None:
        if self.ranger is not None:
            self.ranger.learning_rate = float(learning_rate)
        else:
            self._optimizer.set_learning_rate(float(learning_rate))

    def save_checkpoint(self, path: str) -> None:
        """Weights, frozen parameters and the optimizer's state (AdamW moments and step
        count) in ORT's checkpoint format; the learning rate is not kept. Ranger's state
        goes next to it (`PATH.ranger.npz`)."""
        _, _, api = import_training_modules()
        api.CheckpointState.save_checkpoint(self._state, path, include_optimizer_state=True)
        if self.ranger is not None:
            self.ranger.save(_ranger_path(path))

    # -- parameters --------------------------------------------------------------------------

    def parameters(self) -> dict[str, np.ndarray]:
        """Current values (copies) of trainable and frozen parameters, BN stats included."""
        return {name: self._state.parameters[name].data.copy() for name in self._param_names()}

    def value(self, name: str) -> np.ndarray:
        """Current value of one parameter (a copy)."""
        return self._state.parameters[name].data.copy()

    def gradient(self, name: str) -> np.ndarray:
        """Gradient of one trainable parameter from the last training step (a copy)."""
        return self._state.parameters[name].grad.copy()

    def set_parameter(self, name: str, value: np.ndarray) -> None:
        if name not in self._state.parameters:
            raise TrainingError(f"{name!r} is not a parameter of this training session")
        current = self._state.parameters[name].data
        value = np.asarray(value, dtype=current.dtype)
        if value.shape != current.shape:
            raise TrainingError(f"{name!r}: shape {value.shape} != parameter shape {current.shape}")
        self._state.parameters[name].data = np.ascontiguousarray(value)

    def updated_model(self, original_model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of `original_model` with trained values in its initializers (same graph)."""
        return model_with_values(original_model, self.parameters())

    def export_inference_model(self, path: str, output_names: list[str]) -> None:
        """ORT's export of the (rewritten) training graph; prefer `updated_model`."""
        self._module.export_model_for_inferencing(path, output_names)

    # -- internals ---------------------------------------------------------------------------

    def _param_names(self) -> list[str]:
        return [*self.paths.trainable, *self.paths.frozen]

    def _run(
        self, inputs: dict[str, np.ndarray], target, lam: float | None
    ) -> tuple[np.ndarray, ...]:
        feeds = dict(self._data_feeds(inputs))
        if self.paths.teacher_input is not None:  # ce+distill: (labels, teacher outputs)
            if not isinstance(target, tuple) or len(target) != 2:
                raise TrainingError("loss ce+distill takes (labels, teacher outputs) as target")
            target, teacher = target
            feeds[self.paths.teacher_input] = np.ascontiguousarray(teacher, dtype=np.float32)
        feeds[self.paths.target_input] = self._target(target)
        if self.paths.lam_input is not None:
            feeds[self.paths.lam_input] = np.array([0.0 if lam is None else lam], np.float32)
        elif lam is not None:
            raise TrainingError("lam was given but the model has no cost output")
        names = self._module.input_names()
        try:
            return tuple(self._module(*[feeds[n] for n in names]))
        except KeyError as exc:
            raise DataError(f"the training graph expects input {exc}; got {sorted(feeds)}") from exc
        except Exception as exc:  # ORT reports shape/type mismatches as generic errors
            raise DataError(f"batch does not fit the model at step {self.step}: {exc}") from exc

    def _data_feeds(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        expected = set(self.paths.data_inputs)
        if set(inputs) != expected:
            raise DataError(f"batch inputs {sorted(inputs)} != model inputs {sorted(expected)}")
        feeds = {}
        for name, value in inputs.items():
            arr = np.asarray(value)
            # float64 batches are a common loader mistake; the graph wants float32.
            feeds[name] = arr.astype(np.float32) if arr.dtype == np.float64 else arr
        return feeds

    def _target(self, target: np.ndarray) -> np.ndarray:
        dtype = np.int64 if self.paths.loss in LABEL_LOSSES else np.float32
        return np.ascontiguousarray(np.asarray(target), dtype=dtype)

    def _result(self, outs: tuple[np.ndarray, ...]) -> StepResult:
        p = self.paths
        cost = float(np.asarray(outs[p.cost_index]).reshape(-1)[0]) if p.cost_index else None
        return StepResult(
            loss=float(np.asarray(outs[0]).reshape(-1)[0]),
            task_loss=float(np.asarray(outs[p.task_loss_index]).reshape(-1)[0]),
            cost=cost,
            output=outs[p.output_index],
        )


def _ranger_path(checkpoint: str) -> str:
    return f"{checkpoint}.ranger.npz"


def _session_options(threads: int | None):
    """Intra-op threads as asked (None: onnxruntime's default, one per physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Errors only: the warnings are about the training graph onnxmorph generated (unused
    # initializers of the eval graph, ...), nothing a user can act on, and they would break
    # through --quiet and --json. Errors still come back as exceptions.
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    return options
