"""Check the seed models with onnxruntime and print their test accuracy.

Needs only onnxruntime + numpy (no torch)::

    python samples/evaluate_seeds.py

Runs each ``*_seed.onnx`` next to this file on ``loader.eval_batches()`` (the 2000-image
test subset) with the CPU execution provider. The numbers in README.md come from here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def load_loader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("samples_loader", HERE / "loader.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def accuracy(path: Path, loader: ModuleType) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in loader.eval_batches():
        (logits,) = sess.run(["logits"], {"input": x})
        correct += int((np.argmax(logits, axis=1) == y).sum())
        total += len(y)
    return correct / total


def main() -> None:
    loader = load_loader()
    for path in sorted(HERE.glob("*_seed.onnx")):
        acc = accuracy(path, loader)
        print(f"{path.name}: test accuracy {acc:.4f} (onnxruntime {ort.__version__})")


if __name__ == "__main__":
    main()
