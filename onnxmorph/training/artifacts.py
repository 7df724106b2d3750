"""Build ORT training artifacts (training/eval/optimizer models + checkpoint) for a model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from onnxmorph.errors import DataError, TrainingError
from onnxmorph.graph.onnx_utils import default_opset
from onnxmorph.training.differentiable_ops import make_differentiable, non_differentiable_nodes
from onnxmorph.training.isolate import run_isolated
from onnxmorph.training.loss_graph import (
    LAM_INPUT,
    LOSS_KINDS,
    TARGET_INPUT,
    TEACHER_INPUT,
    LossSpec,
    add_loss_nodes,
)
from onnxmorph.training.ort_api import import_training_modules, native_stderr_captured
from onnxmorph.training.parameters import batchnorm_running_stats, default_trainable
from onnxmorph.training.prepare import check_differentiable, to_training_opset
from onnxmorph.training.ranger import OPTIMIZERS

_META = "onnxmorph_artifacts.json"
MAX_IR_VERSION = 10  # ORT 1.19.2 loads IR <= 10


@dataclass(frozen=True)
class ArtifactPaths:
    """Where the artifacts are and how to feed/read them.

    Outputs of the training and eval models, by position: 0 total loss (scalar),
    `task_loss_index` task loss `[1]`, `cost_index` cost `[1]` (None without a cost output),
    `output_index` the task output (e.g. logits).
    """

    workdir: str
    training_model: str
    eval_model: str
    optimizer_model: str
    checkpoint: str
    data_inputs: tuple[str, ...]
    target_input: str
    lam_input: str | None
    loss: str
    output_name: str
    cost_output: str | None
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    task_loss_index: int = 1
    cost_index: int | None = None
    output_index: int = 2
    teacher_input: str | None = None  # ce+distill: the teacher's outputs, fed every step

    def save(self) -> None:
        Path(self.workdir, _META).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, workdir: str | Path) -> ArtifactPaths:
        raw = json.loads(Path(workdir, _META).read_text())
        for key in ("data_inputs", "trainable", "frozen"):
            raw[key] = tuple(raw[key])
        return cls(**raw)




def _prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ir_version > MAX_IR_VERSION:
        raise TrainingError(
            f"model IR version {model.ir_version} is newer than onnxruntime 1.19.2 supports "
            f"(<= {MAX_IR_VERSION}); re-export with onnx<=1.16 or a lower opset"
        )
    prepared = make_differentiable(to_training_opset(model))
    check_differentiable(prepared)
    # Old exports list initializers as graph inputs too; ORT adds its own parameter inputs
    # and would then see duplicates.
    inits = {i.name for i in prepared.graph.initializer}
    kept = [i for i in prepared.graph.input if i.name not in inits]
    del prepared.graph.input[:]
    prepared.graph.input.extend(kept)
    return prepared


def _check_names(
    model: onnx.ModelProto,
    trainable: list[str],
    frozen: list[str],
    output_name: str,
    cost_output: str | None,
) -> None:
    outputs = {o.name for o in model.graph.output}
    for name in (output_name, cost_output):
        if name is not None and name not in outputs:
            raise TrainingError(f"{name!r} is not a graph output (outputs: {sorted(outputs)})")
    inits = {i.name for i in model.graph.initializer}
    missing = sorted(set(trainable) - inits) + sorted(set(frozen) - inits)
    if missing:
        raise TrainingError(f"parameters are not initializers of the model: {missing[:10]}")
    both = sorted(set(trainable) & set(frozen))
    if both:
        raise TrainingError(f"parameters listed as both trainable and frozen: {both[:10]}")
    if not trainable:
        raise TrainingError("nothing to train: no trainable float initializers were found")


def build_training_artifacts(
    model: onnx.ModelProto,
    workdir: str | Path,
    *,
    trainable: list[str] | None,
    frozen: list[str] | None,
    loss: str,
    output_name: str,
    cost_output: str | None,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    temperature: float = 1.0,
    distill_weight: float = 0.5,
) -> ArtifactPaths:
    """Write training artifacts for `model` into `workdir` and describe them.

    - `loss`: "cross-entropy" (int64 labels, output shape minus axis 1), "mse" (float target
      shaped like the output) or "distill" (teacher logits shaped like the output; KL of
      softmax at `temperature`, times its square, over axis 1), "distill-mse" (MSE to the
      teacher's outputs) or "ce+distill" (labels as for cross-entropy, plus the teacher's
      logits as input `onnxmorph_teacher`: (1 - distill_weight) * CE + distill_weight * T^2
      * KL). The target is fed as input `onnxmorph_target`.
    - `cost_output`: optional graph output (float, one element) added as `lam * cost`;
      `lam` is the `[1]` input `onnxmorph_lam`, fed every step.
    - `trainable=None`: weights of the task network (see `parameters.default_trainable`).
    - `frozen=None`: BatchNormalization running mean/var, so ORT updates and keeps them.
    Ops without CPU gradient are rewritten first (`make_differentiable`).
    """
    if loss not in LOSS_KINDS:
        raise TrainingError(f"unknown loss {loss!r}; expected one of {', '.join(LOSS_KINDS)}")
    if optimizer not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {optimizer!r}; expected one of "
                            f"{', '.join(OPTIMIZERS)}")
    prepared = _prepare(model)
    task_outputs = [output_name]
    if trainable is None:
        trainable = default_trainable(prepared, task_outputs)
    if frozen is None:
        frozen = [n for n in batchnorm_running_stats(prepared) if n not in set(trainable)]
    _check_names(prepared, trainable, frozen, output_name, cost_output)

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = LossSpec(loss, output_name, cost_output, default_opset(prepared),
                    temperature=float(temperature), distill_weight=float(distill_weight))
    additional = _additional_outputs(prepared, spec)

    paths = ArtifactPaths(
        workdir=str(workdir),
        training_model=str(workdir / "training_model.onnx"),
        eval_model=str(workdir / "eval_model.onnx"),
        optimizer_model=str(workdir / "optimizer_model.onnx"),
        checkpoint=str(workdir / "checkpoint"),
        data_inputs=tuple(i.name for i in prepared.graph.input),
        target_input=TARGET_INPUT,
        lam_input=LAM_INPUT if cost_output else None,
        loss=loss,
        output_name=output_name,
        cost_output=cost_output,
        trainable=tuple(trainable),
        frozen=tuple(frozen),
        task_loss_index=1,
        cost_index=2 if cost_output else None,
        output_index=len(additional),
        teacher_input=TEACHER_INPUT if loss == "ce+distill" else None,
    )

    def generate_and_try() -> None:
        _generate(prepared, workdir, spec, trainable, frozen, optimizer, weight_decay)
        try_one_step(paths)

    # Native code that dies (SIGFPE, abort) here would take the CLI down without a word.
    run_isolated(generate_and_try, "building the training graph")
    paths.save()
    return paths


def _additional_outputs(model: onnx.ModelProto, spec: LossSpec) -> list[str]:
    # The additional outputs are known before the loss block runs; compute them on a copy.
    scratch = onnx.ModelProto()
    scratch.CopyFrom(model)
    return add_loss_nodes(scratch.graph, spec)[1]


def try_one_step(paths: ArtifactPaths) -> None:
    """One training step on random data of the graph's static input shapes (skipped when a
    dimension is dynamic): kernels that fail on this graph fail here, inside the worker."""
    import numpy as np

    from onnxmorph.training.session import TrainingSession

    graph = onnx.load(paths.training_model, load_external_data=False).graph
    infos = {i.name: i.type.tensor_type for i in graph.input}
    session = TrainingSession(paths)
    rng = np.random.default_rng(0)
    feeds = {}
    extra = (paths.target_input,) + ((paths.teacher_input,) if paths.teacher_input else ())
    for name in (*paths.data_inputs, *extra):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in infos[name].shape.dim]
        if any(d <= 0 for d in dims):
            return
        dtype = onnx.helper.tensor_dtype_to_np_dtype(infos[name].elem_type)
        feeds[name] = (rng.normal(size=dims).astype(dtype) if np.issubdtype(dtype, np.floating)
                       else np.zeros(dims, dtype))
    target = feeds.pop(paths.target_input)
    if paths.teacher_input:
        target = (target, feeds.pop(paths.teacher_input))
    try:
        session.train_step(feeds, target, 0.0 if paths.lam_input else None)
    except DataError as exc:  # synthetic data fits by construction: the graph is at fault
        raise TrainingError("the training graph fails on a batch of its own input shapes: "
                            + str(exc).split(": ", 1)[-1][:400]) from exc


def _generate(
    model: onnx.ModelProto,
    workdir: Path,
    spec: LossSpec,
    trainable: list[str],
    frozen: list[str],
    optimizer: str,
    weight_decay: float,
) -> list[str]:
    artifacts, onnxblock, _ = import_training_modules()

    class _LossBlock(onnxblock.Block):
        def build(self, *graph_outputs: str) -> str:
            return add_loss_nodes(self.base.graph, spec)[0]

    names = _additional_outputs(model, spec)
    if optimizer == "adamw":
        optim_block = onnxblock.optim.AdamW(weight_decay=weight_decay)
    else:  # ranger steps in numpy (training/ranger.py); ORT's SGD model is never stepped
        optim_block = onnxblock.optim.SGD()
    try:
        with native_stderr_captured() as native_log:
            artifacts.generate_artifacts(
                model,
                requires_grad=list(trainable),
                frozen_params=list(frozen),
                loss=_LossBlock(),
                optimizer=optim_block,
                artifact_directory=str(workdir),
                additional_output_names=names,
            )
    except Exception as exc:  # ORT raises bare RuntimeError/Fail with C++ messages
        blockers = non_differentiable_nodes(model)
        hint = f"; ops without a CPU gradient: {', '.join(blockers[:8])}" if blockers else ""
        detail = _last_error_line(native_log)
        raise TrainingError(f"building the training graph failed{hint}: {exc}{detail}") from exc
    return names


def _last_error_line(native_log: list[str]) -> str:
    errors = [ln for ln in "".join(native_log).splitlines() if "[E:" in ln or "[W:" in ln]
    return f" (onnxruntime: {errors[-1][-300:]})" if errors else ""
