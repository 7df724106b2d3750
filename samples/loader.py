"""Sample data loader for ``onnxmorph --data samples/loader.py``.

Serves the bundled Fashion-MNIST subset (``fashion_mnist_subset.npz``, next to this file)
as ``(inputs, labels)`` batches:

* inputs: float32 ``[B, 1, 28, 28]``, scaled to [0, 1] then standardised with the
  training subset's mean/std (constants below, computed once by ``build_dataset.py``);
* labels: int64 ``[B]``.

``train_batches()`` reshuffles on every call (one call = one epoch) with a seed derived from
a module-level epoch counter, so runs are reproducible yet each epoch sees a new order.
``eval_batches()`` is always in file order and keeps the final partial batch so every test
image is counted exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

BATCH_SIZE = 64
MEAN = 0.2860  # mean of x_train / 255 over the subset
STD = 0.3530  # std of x_train / 255 over the subset
BASE_SEED = 0

DATA_PATH = Path(__file__).resolve().parent / "fashion_mnist_subset.npz"

# Number of train_batches() calls so far; makes each epoch's shuffle differ but stay
# deterministic for a fresh process.
_epoch = 0


@lru_cache(maxsize=1)
def load_arrays() -> dict[str, np.ndarray]:
    """Load and normalise the npz once; later calls reuse the cached arrays."""
    with np.load(DATA_PATH) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for split in ("train", "test"):
        x = arrays[f"x_{split}"].astype(np.float32) / 255.0
        arrays[f"x_{split}"] = ((x - MEAN) / STD)[:, None, :, :].astype(np.float32)
        arrays[f"y_{split}"] = arrays[f"y_{split}"].astype(np.int64)
    return arrays


def _batches(
    x: np.ndarray, y: np.ndarray, order: np.ndarray, drop_last: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    stop = len(order) - len(order) % BATCH_SIZE if drop_last else len(order)
    for start in range(0, stop, BATCH_SIZE):
        idx = order[start : start + BATCH_SIZE]
        # Fancy indexing copies, so callers may modify batches freely.
        yield x[idx], y[idx]


def train_batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of shuffled training batches; the last incomplete batch is dropped."""
    global _epoch
    arrays = load_arrays()
    rng = np.random.default_rng(BASE_SEED + _epoch)
    _epoch += 1
    order = rng.permutation(len(arrays["y_train"]))
    return _batches(arrays["x_train"], arrays["y_train"], order, drop_last=True)


def eval_batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Test batches in file order, including the final partial batch."""
    arrays = load_arrays()
    order = np.arange(len(arrays["y_test"]))
    return _batches(arrays["x_test"], arrays["y_test"], order, drop_last=False)
