"""Parameters of real transformer exports are counted once each: a tensor several nodes read
(the dynamo exporter stores equal tensors once — every LayerNorm's ones and zeros, the
layers nn.TransformerEncoder deep-copies) is one set of parameters, and the TorchScript
exports hold exactly the parameters of the PyTorch modules (counted by hand here)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxmorph.graph import analyze
from tests.fixtures.transformers.architectures import FIXTURE
from tests.graph.test_attention_exports import EXPORTS, input_shapes, path


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _block(e: int, mlp: int) -> int:
    """Q, K, V, output projection, two LayerNorms, the MLP."""
    return 3 * _linear(e, e) + _linear(e, e) + 2 * 2 * e + _linear(e, mlp) + _linear(mlp, e)


def hand_params(kind: str) -> int:
    if kind == "vit":
        c = FIXTURE["vit"]
        e, tokens = c["hidden"], (c["image"] // c["patch"]) ** 2 + 1
        return (3 * c["patch"] ** 2 * e + e + e + tokens * e  # patches, class token, positions
                + c["layers"] * _block(e, c["mlp"]) + 2 * e + _linear(e, 10))
    if kind in ("bert", "hfbert"):
        c = FIXTURE["bert"]
        e = c["hidden"]
        embeddings = (c["vocab"] + c["tokens"]) * e  # words and positions
        if kind == "hfbert":
            embeddings += 2 * e + 2 * e  # segments and the embedding LayerNorm
        return embeddings + c["layers"] * _block(e, c["mlp"]) + _linear(e, 4)
    c = FIXTURE["sdpa"]
    e = c["hidden"]
    return (_linear(c["features"], e) + c["layers"] * _block(e, c["mlp"]) + 2 * e
            + _linear(e, 4))


@pytest.mark.parametrize("name", EXPORTS)
def test_every_stored_parameter_is_counted_once(name):
    analysis = analyze(path(name), input_shapes(name))
    values = analysis.loaded.initializers
    readers: dict[str, int] = {}
    for node in analysis.loaded.model.graph.node:
        for tensor in set(node.input):
            readers[tensor] = readers.get(tensor, 0) + (tensor in values)
    assert analysis.params == sum(v.size for v in values.values() if v.dtype.kind == "f")
    if "dynamo" in name and "swin" not in name:
        # Shared tensors exist here (so the check above is about them) ...
        shared = [t for t, n in readers.items() if n > 1 and values[t].size > 1]
        assert shared, "the dynamo export reads some tensor from several nodes"


@pytest.mark.parametrize("name", ["vit_op17_ts", "bert_op17_ts", "hfbert_op17_ts",
                                  "sdpa_op17_ts", "vit_op14_ts", "hfbert_op14_ts"])
def test_torchscript_exports_hold_the_modules_parameters(name):
    analysis = analyze(path(name), input_shapes(name))
    # Scalars of formulas (GELU's √2, 1/√d, ε) are stored constants too; the rest are the
    # modules' parameters, each once.
    scalars = sum(1 for v in analysis.loaded.initializers.values()
                  if v.dtype.kind == "f" and v.size == 1)
    assert analysis.params - scalars == hand_params(name.split("_")[0])
    assert np.isfinite(analysis.params)
