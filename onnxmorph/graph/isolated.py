"""Run ONNX's native shape inference where a crash cannot take the caller down.

`onnx.shape_inference` is C++ that trusts the graph: a malformed model (a zero stride, a
Reshape to a zero-sized dimension…) can end the process with SIGFPE or SIGSEGV instead of
raising. Inference runs in one forked worker process per load (a few milliseconds to start,
copy-on-write), which every round of the load reuses; only the weight-free skeleton crosses
the pipe. If the worker dies, the caller gets a one-line error instead of dying with it.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import onnx

from onnxmorph.errors import UnsupportedModelError


def _infer(payload: bytes, options: dict) -> bytes | str:
    try:
        return onnx.shape_inference.infer_shapes(payload, **options).SerializeToString()
    except Exception as exc:  # noqa: BLE001 - any error goes back as text
        return str(exc) or type(exc).__name__


class ShapeInferenceWorker:
    """`with ShapeInferenceWorker() as worker: worker.infer(model, data_prop=True)`."""

    def __init__(self) -> None:
        self._pool = self._new_pool()

    @staticmethod
    def _new_pool() -> ProcessPoolExecutor | None:
        if "fork" not in multiprocessing.get_all_start_methods():
            return None
        # faulthandler off in the worker: its crash is reported in one line, not a dump
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                   initializer=faulthandler.disable)

    def __enter__(self) -> ShapeInferenceWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def infer(self, model: onnx.ModelProto, **options) -> onnx.ModelProto:
        """`onnx.shape_inference.infer_shapes(model, **options)`; ValueError on its errors."""
        if self._pool is None:  # no fork (Windows): in-process, as onnx itself would run
            return onnx.shape_inference.infer_shapes(model, **options)
        try:
            result = self._pool.submit(_infer, model.SerializeToString(), options).result()
        except BrokenProcessPool as exc:
            self._pool.shutdown(wait=False)
            self._pool = self._new_pool()  # a caller that goes on stays protected
            raise UnsupportedModelError(
                "ONNX shape inference crashed on the model (its native code was killed by a "
                "signal): the model is malformed; check it with onnx.checker or re-export it"
            ) from exc
        if isinstance(result, str):
            raise ValueError(result)
        inferred = onnx.ModelProto()
        inferred.ParseFromString(result)
        return inferred


def infer_shapes_isolated(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    """One isolated inference (a worker of its own); loops should share a worker."""
    with ShapeInferenceWorker() as worker:
        return worker.infer(model, **options)
