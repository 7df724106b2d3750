"""The user's data: a Python file with `train_batches()` and optionally `eval_batches()`.

A batch is `(inputs, labels)` or just `inputs`; inputs are an array for a single-input model
or a dict of input name → array. Every batch is checked against the model's inputs, so a bad
loader fails with one clear line instead of an error deep inside onnxruntime.
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

    def __init__(self, path: str | os.PathLike, specs: list[InputSpec]) -> None:
        self.path = Path(path)
        self.specs = specs
        self.module = _import_loader(self.path)
        if not callable(getattr(self.module, "train_batches", None)):
            raise DataError(f"loader '{self.path}' has no function train_batches(); define "
                            "train_batches() returning an iterable of (inputs, labels) batches")

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
        index = 0
        while True:
            try:
                raw = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                raise DataError(f"loader '{self.path}' {function}() raised "
                                f"{type(exc).__name__} at batch {index}: {exc}") from exc
            yield self.validate(raw, f"{function}() batch {index}")
            index += 1

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
        return Batch(checked, labels)


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
