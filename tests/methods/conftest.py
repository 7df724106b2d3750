"""A tiny two-layer model whose criterion scores numpy can compute directly, and its data.

x[N,2,4,4] → Conv A (3, 1×1) → Relu "ra" → Conv B (4, 1×1) → Relu "rb" → GAP → Flatten "f"
→ Gemm (2 classes) "logits". Group A (3 units) is read by Conv B, group B (4 units) by the
Gemm; both are prunable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@dataclass
class Tiny:
    path: Path
    loader: Path
    wa: np.ndarray  # [3, 2]
    wb: np.ndarray  # [4, 3]
    wc: np.ndarray  # [2, 4]
    batches: list[tuple[np.ndarray, np.ndarray | None]]

    def forward(self, x, ma=None, mb=None) -> dict[str, np.ndarray]:
        """Float64 forward; `ma`/`mb` multiply the channels Conv B / the Gemm read."""
        ma = np.ones(3) if ma is None else ma
        mb = np.ones(4) if mb is None else mb
        x = x.astype(np.float64)
        ra = np.maximum(np.einsum("oi,nihw->nohw", self.wa, x), 0)
        rb = np.maximum(np.einsum("oi,nihw->nohw", self.wb, ra * ma[None, :, None, None]), 0)
        f = rb.mean(axis=(2, 3))
        return {"ra": ra, "rb": rb, "f": f, "logits": (f * mb) @ self.wc.T}


def _model(wa, wb, wc) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(w.astype(np.float32), n) for n, w in
             (("wa", wa[:, :, None, None]), ("wb", wb[:, :, None, None]), ("wc", wc),
              ("bc", np.zeros(2)))]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], name="conv_b"),
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("GlobalAveragePool", ["rb"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wc", "bc"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


_LOADER = '''
import numpy as np
_arrays = np.load({npz!r})
def _batches(prefix):
    for i in range(2):
        x = _arrays[f"x{{i}}"]
        yield (x, _arrays[f"y{{i}}"]) if {labels} else x
def train_batches():
    return _batches("train")
def eval_batches():
    return _batches("eval")
'''


def make_tiny(folder: Path, labels: bool = True) -> Tiny:
    rng = np.random.default_rng(7)
    wa = rng.normal(0, 1, (3, 2))
    wb = rng.normal(0, 1, (4, 3))
    wc = rng.normal(0, 1, (2, 4))
    wa, wb, wc = (w.astype(np.float32).astype(np.float64) for w in (wa, wb, wc))
    xs = [rng.normal(0, 1, (6, 2, 4, 4)).astype(np.float32) for _ in range(2)]
    ys = [rng.integers(0, 2, 6).astype(np.int64) for _ in range(2)]
    np.savez(folder / "tiny.npz", **{f"x{i}": x for i, x in enumerate(xs)},
             **{f"y{i}": y for i, y in enumerate(ys)})
    loader = folder / ("tiny_loader.py" if labels else "tiny_unlabeled.py")
    loader.write_text(_LOADER.format(npz=str(folder / "tiny.npz"), labels=labels))
    path = folder / "tiny.onnx"
    onnx.save(_model(wa, wb, wc), path)
    return Tiny(path, loader, wa, wb, wc, [(x, y if labels else None) for x, y in zip(xs, ys)])


@pytest.fixture
def tiny(tmp_path: Path) -> Tiny:
    return make_tiny(tmp_path)


@pytest.fixture
def tiny_unlabeled(tmp_path: Path) -> Tiny:
    return make_tiny(tmp_path, labels=False)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
