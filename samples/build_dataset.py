"""Build ``fashion_mnist_subset.npz`` from the Debian package ``dataset-fashion-mnist``.

Dev-time only: the npz is committed, so nothing runs this at run time and no network or
download is needed by users. To rebuild it::

    cd /tmp && apt-get download dataset-fashion-mnist
    dpkg -x dataset-fashion-mnist_*.deb /tmp/fm
    python samples/build_dataset.py --src /tmp/fm/usr/share/datasets/fashion-mnist

Fashion-MNIST is (c) 2017 Zalando SE, MIT licence; see ``LICENSE.fashion-mnist``.

The subset is class-balanced (equal images per class) and drawn with a fixed seed, so the
output is byte-for-byte reproducible from the same source files.
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np

SEED = 20240601
N_TRAIN = 8000  # 800 per class
N_TEST = 2000  # 200 per class
N_CLASSES = 10


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the format Fashion-MNIST ships in) into a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    # Header: two zero bytes, a dtype code (0x08 = uint8), the number of dimensions,
    # then one big-endian uint32 per dimension.
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an uint8 IDX file")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def balanced_subset(labels: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Return shuffled indices holding ``total // N_CLASSES`` samples per class."""
    per_class = total // N_CLASSES
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in range(N_CLASSES)
    ]
    idx = np.concatenate(picks)
    # Shuffle so the file is not ordered by class (eval batches are taken in file order).
    rng.shuffle(idx)
    return idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src",
        type=Path,
        default=Path("/tmp/fm/usr/share/datasets/fashion-mnist"),
        help="directory holding the *-idx?-ubyte.gz files from the .deb",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "fashion_mnist_subset.npz",
    )
    args = parser.parse_args()

    rng = np.random.default_rng(SEED)
    splits = {}
    for name, prefix, total in (("train", "train", N_TRAIN), ("test", "t10k", N_TEST)):
        images = read_idx(args.src / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.src / f"{prefix}-labels-idx1-ubyte.gz")
        idx = balanced_subset(labels, total, rng)
        splits[f"x_{name}"] = np.ascontiguousarray(images[idx], dtype=np.uint8)
        splits[f"y_{name}"] = labels[idx].astype(np.int64)

    np.savez_compressed(args.out, **splits)
    x = splits["x_train"].astype(np.float64) / 255.0
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print(f"train mean {x.mean():.4f} std {x.std():.4f}")


if __name__ == "__main__":
    main()
