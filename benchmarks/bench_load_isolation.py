"""Cost of running shape inference in a forked worker (crash-proof) vs in-process, per load.

    python benchmarks/bench_load_isolation.py MODEL.onnx [MODEL.onnx ...]
Prints the best of 3 load_model times each way, interleaved.
"""

from __future__ import annotations

import sys
import time

import onnx

import onnxmorph.graph.load as load
from onnxmorph.graph.isolated import ShapeInferenceWorker


class InProcess:
    """The unprotected way: onnx's native inference in this process."""

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def infer(self, model: onnx.ModelProto, **options) -> onnx.ModelProto:
        return onnx.shape_inference.infer_shapes(model, **options)


def main() -> None:
    for path in sys.argv[1:]:
        times: dict[str, list[float]] = {"worker": [], "in-process": []}
        for _ in range(3):
            for kind, worker in (("worker", ShapeInferenceWorker), ("in-process", InProcess)):
                load.ShapeInferenceWorker = worker
                start = time.perf_counter()
                load.load_model(path)
                times[kind].append(time.perf_counter() - start)
        best = {k: min(v) for k, v in times.items()}
        print(f"| {path.rsplit('/', 1)[-1]} | {best['in-process']:.3f} | {best['worker']:.3f} | "
              f"{best['worker'] - best['in-process']:+.3f} |")


if __name__ == "__main__":
    main()
