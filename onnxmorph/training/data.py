"""The user's data: a Python file with `train_batches()` and optionally `eval_batches()`.

A batch is `(inputs, labels)` or just `inputs`; inputs are an array for a single-input model
or a dict of input name → array. Every batch (not only the first) is checked against the
model: input shapes and dtypes, finite values, and labels. Integer labels are class indices of
shape (N,) within the model's output width; integer one-hot labels of shape (N, C) are refused
(yield `labels.argmax(1)`). Float labels are regression targets of the output's shape (loss
mse); float labels that look like one-hot or soft class probabilities are refused by
`choose_loss` unless `--loss mse` says so explicitly. A bad loader fails with one clear line
instead of an error deep inside onnxruntime or a silent accuracy of 0.

Every call of the loader's functions and every batch drawn is recorded in
`DataSource.history`, so a resumed run can replay the loader to where it was (`replay`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxmorph.errors import DataError


@dataclass(frozen=True)
class InputSpec:
    name: str
    dims: tuple[int | None, ...]  # None: dynamic
    dtype: np.dtype


@dataclass
class Batch:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    @property
    def size(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def model_input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tensor = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in tensor.shape.dim)
        specs.append(InputSpec(inp.name, dims, onnx.helper.tensor_dtype_to_np_dtype(
            tensor.elem_type)))
    return specs


class DataSource:
    """Batches from a loader file, validated against `specs`."""

    def __init__(self, path: str | os.PathLike, specs: list[InputSpec],
                 output_dims: tuple[int | None, ...] | None = None) -> None:
        self.path = Path(path)
        self.specs = specs
        self.output_dims = output_dims  # the first output's dims after the batch axis
        # [function, batches drawn, exhausted] per loader call, in call order.
        self.history: list[list] = []
        self._label_kinds: dict[str, str] = {}
        self.module = _import_loader(self.path)
        if not callable(getattr(self.module, "train_batches", None)):
            raise DataError(f"loader '{self.path}' has no function train_batches(); define "
                            "train_batches() returning an iterable of (inputs, labels) batches")

    @classmethod
    def for_model(cls, path: str | os.PathLike, model: onnx.ModelProto,
                  shapes: dict[str, tuple[int, ...]] | None = None) -> DataSource:
        """A source checked against `model`'s inputs and, for labels, its first output (its
        dims from `shapes`, an analysis's inferred shapes, where the file leaves them open)."""
        dims = model_output_dims(model)
        inferred = (shapes or {}).get(model.graph.output[0].name) if model.graph.output else None
        if inferred and (dims is None or None in dims) and len(inferred) >= 1:
            dims = tuple(int(d) for d in inferred[1:])
        return cls(path, model_input_specs(model), dims)

    @property
    def has_eval(self) -> bool:
        return callable(getattr(self.module, "eval_batches", None))

    def train(self) -> Iterator[Batch]:
        return self._batches("train_batches")

    def eval(self) -> Iterator[Batch]:
        """Evaluation batches (the training batches when the loader has no eval_batches)."""
        return self._batches("eval_batches" if self.has_eval else "train_batches")

    def _batches(self, function: str) -> Iterator[Batch]:
        try:
            iterable = getattr(self.module, function)()
            iterator = iter(iterable)
        except Exception as exc:
            raise DataError(f"loader '{self.path}' {function}() raised "
                            f"{type(exc).__name__}: {exc}") from exc
        entry = [function, 0, False]
        self.history.append(entry)
        index = 0
        while True:
            try:
                raw = next(iterator)
            except StopIteration:
                entry[2] = True
                return
            except Exception as exc:
                raise DataError(f"loader '{self.path}' {function}() raised "
                                f"{type(exc).__name__} at batch {index}: {exc}") from exc
            entry[1] += 1
            yield self.validate(raw, f"{function}() batch {index}")
            index += 1

    def replay(self, recorded: list[list], keep_last: bool) -> Iterator[Batch] | None:
        """Call the loader and draw batches as `recorded` (an earlier run's `history`) did,
        after the calls this run made already; with `keep_last`, return the last call's
        iterator, positioned where the recorded run stopped, if it was not exhausted.
        A loader that is deterministic in a fresh process ends in the same state."""
        done = len(self.history)
        if [list(e) for e in recorded[:done]] != [list(e) for e in self.history]:
            raise DataError(f"--resume: loader '{self.path}' was called differently than in "
                            "the interrupted run; run again without --resume")
        last = None
        for function, drawn, exhausted in recorded[done:]:
            iterator = self._batches(function)
            for _ in range(drawn):
                if next(iterator, None) is None:
                    raise DataError(f"--resume: loader '{self.path}' {function}() yields fewer "
                                    "batches than in the interrupted run; run again without "
                                    "--resume")
            if exhausted:
                next(iterator, None)
            last = None if exhausted else iterator
        return last if keep_last else None

    def validate(self, raw, where: str) -> Batch:
        if isinstance(raw, tuple | list) and len(raw) == 2:
            inputs, labels = raw
        else:
            inputs, labels = raw, None
        if not isinstance(inputs, dict):
            if len(self.specs) != 1:
                names = ", ".join(s.name for s in self.specs)
                raise DataError(f"{where}: the model has several inputs ({names}); yield a "
                                "dict of input name → array")
            inputs = {self.specs[0].name: inputs}
        missing = [s.name for s in self.specs if s.name not in inputs]
        extra = sorted(set(inputs) - {s.name for s in self.specs})
        if missing or extra:
            raise DataError(f"{where}: missing inputs {missing}, unknown inputs {extra}")
        checked = {spec.name: _check_array(inputs[spec.name], spec, where) for spec in self.specs}
        sizes = {a.shape[0] for a in checked.values()}
        if labels is not None:
            labels = np.asarray(labels)
            sizes.add(labels.shape[0] if labels.ndim else -1)
        if len(sizes) != 1:
            raise DataError(f"{where}: inputs and labels disagree on the batch size ({sizes})")
        if labels is not None:
            self._check_labels(labels, where)
        return Batch(checked, labels)

    def _check_labels(self, labels: np.ndarray, where: str) -> None:
        kind = "integer" if np.issubdtype(labels.dtype, np.integer) else (
            "float" if np.issubdtype(labels.dtype, np.floating) else None)
        if kind is None:
            raise DataError(f"{where}: labels have dtype {labels.dtype}; yield integer class "
                            "indices or float targets")
        first = self._label_kinds.setdefault(where.split(" batch")[0], kind)
        if kind != first:
            raise DataError(f"{where}: labels are {kind} but earlier batches had {first} "
                            "labels; yield one kind of labels throughout")
        width = _known_product(self.output_dims)
        if kind == "integer":
            if labels.ndim != 1:
                hint = " (one-hot labels? yield labels.argmax(1))" if labels.ndim == 2 else ""
                raise DataError(f"{where}: integer labels have shape {labels.shape}; yield class "
                                f"indices of shape (N,){hint}")
            low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
            if low < 0 or (width is not None and high >= width):
                classes = f"0..{width - 1}" if width is not None else "0 or more"
                raise DataError(f"{where}: labels range from {low} to {high}, but the model's "
                                f"output has {width or 'an unknown number of'} classes "
                                f"({classes}); check the loader's labels")
            return
        if not np.isfinite(labels).all():
            raise DataError(f"{where}: labels contain NaN or inf; check the loader")
        dims = self.output_dims
        if dims is not None and (labels.ndim != len(dims) + 1 or any(
                want is not None and got != want for got, want in zip(labels.shape[1:], dims))):
            raise DataError(f"{where}: float labels have shape {labels.shape}, the model's "
                            f"output is {_fmt((None, *dims))}; float labels are regression "
                            "targets of the output's shape (class labels: integer indices)")


def model_output_dims(model: onnx.ModelProto) -> tuple[int | None, ...] | None:
    """The first output's dims after the batch axis (None: unknown rank)."""
    if not model.graph.output:
        return None
    shape = model.graph.output[0].type.tensor_type
    if not shape.HasField("shape") or not shape.shape.dim:
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in shape.shape.dim[1:])


def _known_product(dims: tuple[int | None, ...] | None) -> int | None:
    if dims is None or any(d is None for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64))


def _check_array(value, spec: InputSpec, where: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise DataError(f"{where}: input '{spec.name}' is not an array ({exc})") from exc
    if array.ndim != len(spec.dims):
        raise DataError(f"{where}: input '{spec.name}' has shape {array.shape}, the model "
                        f"expects rank {len(spec.dims)} {_fmt(spec.dims)}")
    for axis, (got, want) in enumerate(zip(array.shape, spec.dims)):
        if want is not None and got != want:
            raise DataError(f"{where}: input '{spec.name}' has shape {array.shape}, the model "
                            f"expects {_fmt(spec.dims)} (axis {axis} differs)")
    if array.dtype != spec.dtype:
        same_kind = np.issubdtype(array.dtype, np.floating) == np.issubdtype(
            spec.dtype, np.floating)
        if not same_kind:
            raise DataError(f"{where}: input '{spec.name}' has dtype {array.dtype}, the model "
                            f"expects {spec.dtype}")
        array = array.astype(spec.dtype)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise DataError(f"{where}: input '{spec.name}' has {bad} NaN or inf values of "
                        f"{array.size}; check the loader")
    return np.ascontiguousarray(array)


def _fmt(dims: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"


def _import_loader(path: Path):
    if not path.is_file():
        raise DataError(f"data loader '{path}' does not exist; pass a Python file with "
                        "train_batches()")
    name = f"onnxmorph_user_loader_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DataError(f"data loader '{path}' is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling inside loaders need this
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise DataError(f"data loader '{path}' raised {type(exc).__name__} on import: "
                        f"{exc}") from exc
    return module
