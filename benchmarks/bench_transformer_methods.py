"""Every method on every transformer fixture (tests/fixtures/transformers), with and without
labels: one line per run, `ok` or the one-line refusal. Few steps on random data: this checks
that each method runs, not what it learns (RESULTS_vit.md has accuracies on the ViT sample).

    python benchmarks/bench_transformer_methods.py [METHODS [FIXTURES]]   # comma-separated
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxmorph  # noqa: E402
from onnxmorph.errors import OnnxMorphError  # noqa: E402
from tests.graph.test_attention_exports import (  # noqa: E402
    EXPORTS,
    config,
    family,
    input_shapes,
    path,
)

METHODS = "gates,l1,uniform,taylor,gdp,gamma,group-lasso"
LOADER = """
import numpy as np
rng = np.random.default_rng(0)
KIND, LABELED, SIDE = {kind!r}, {labeled}, {side}
if KIND in ("vit", "swin"):
    X = rng.standard_normal((64, 3, SIDE, SIDE)).astype(np.float32)
elif KIND == "sdpa":
    X = rng.standard_normal((64, 8, 6)).astype(np.float32)
else:
    X = rng.integers(0, 30, (64, 8))
Y = (np.abs(X.reshape(64, -1)[:, 0]) * 3).astype(np.int64) % 4
def _inputs(s):
    if KIND == "hfbert":
        return {{"input_ids": X[s], "attention_mask": np.ones_like(X[s]),
                "token_type_ids": np.zeros_like(X[s])}}
    return X[s]
def train_batches():
    for i in range(0, 64, 16):
        s = slice(i, i + 16)
        yield (_inputs(s), Y[s]) if LABELED else _inputs(s)
def eval_batches():
    yield (_inputs(slice(0, 32)), Y[:32]) if LABELED else _inputs(slice(0, 32))
"""


def main() -> None:
    methods = (sys.argv[1] if len(sys.argv) > 1 else METHODS).split(",")
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else EXPORTS
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            for labeled in (True, False):
                loader = Path(folder) / f"{name}_{labeled}.py"
                loader.write_text(LOADER.format(kind=family(name), labeled=labeled,
                                                side=config(name).get("image", 0)))
                for method in methods:
                    start = time.perf_counter()
                    try:
                        result = onnxmorph.prune(path(name), method=method, data=str(loader),
                                                 budget=0.5, round_to=1,
                                                 input_shapes=input_shapes(name),
                                                 training={"steps": 6, "finetune_steps": 2})
                        out = f"ok, MACs ratio {result.costs['ratio']['macs']:.3f}"
                    except OnnxMorphError as exc:
                        out = f"refused: {type(exc).__name__}: {str(exc)[:160]}"
                    print(f"| {name} | {method} | {'yes' if labeled else 'no'} | "
                          f"{time.perf_counter() - start:.1f} | {out} |", flush=True)


if __name__ == "__main__":
    main()
