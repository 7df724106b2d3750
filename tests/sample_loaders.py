"""A tiny data loader over the bundled Fashion-MNIST subset (128 images, batches of 32),
written into a test's folder: fast structure learning and fine-tuning on real data."""

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "samples"

_LOADER = """
import numpy as np
_npz = np.load({npz!r})
X = ((((_npz["x_train"][:128].astype(np.float32) / 255.0) - 0.2860) / 0.3530)[:, None])
Y = _npz["y_train"][:128].astype(np.int64)
def train_batches():
    for i in range(0, 128, 32):
        yield {item}
"""


def write_sample_loader(path: Path, labeled: bool = True) -> Path:
    item = "X[i:i + 32], Y[i:i + 32]" if labeled else "X[i:i + 32]"
    path.write_text(_LOADER.format(npz=str(SAMPLES / "fashion_mnist_subset.npz"), item=item))
    return path
