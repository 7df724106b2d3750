"""Label-free variant of ``loader.py`` for distillation-based pruning.

Yields only the input arrays (float32 ``[B, 1, 28, 28]``), with the same batching,
normalisation and per-epoch shuffling as ``loader.py``. Loaders are loaded by file path
rather than imported as a package, so the sibling file is loaded explicitly by path.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np


def _load_sibling() -> ModuleType:
    path = Path(__file__).resolve().parent / "loader.py"
    name = "_onnxmorph_samples_loader"
    # Reuse an already loaded copy so its cache and epoch counter are shared.
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_loader = _load_sibling()


def train_batches() -> Iterator[np.ndarray]:
    """Shuffled training inputs (no labels); the last incomplete batch is dropped."""
    return (x for x, _ in _loader.train_batches())


def eval_batches() -> Iterator[np.ndarray]:
    """Test inputs (no labels) in file order, including the final partial batch."""
    return (x for x, _ in _loader.eval_batches())
