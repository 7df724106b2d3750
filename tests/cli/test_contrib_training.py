"""Models fused by onnxruntime's transformer optimizer (com.microsoft Attention with a packed
QKV weight, MultiHeadAttention, Skip/EmbedLayerNormalization) have no gradient in
onnxruntime-training: every command that trains refuses them in one line (exit 2, nothing
written) before training starts, and says what works instead."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from onnxmorph.cli.main import cli
from onnxmorph.graph.contrib_ops import untrainable_contrib_message

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "transformers")
LOADER = """
import numpy as np
ids = np.random.default_rng(0).integers(0, 30, (32, 8))
def _feeds(s):
    return {"input_ids": ids[s], "attention_mask": np.ones_like(ids[s]),
            "token_type_ids": np.zeros_like(ids[s])}
def train_batches():
    for i in range(0, 32, 16):
        yield _feeds(slice(i, i + 16)), (ids[i:i + 16, 0] % 4)
"""
SHAPES = [a for n in ("input_ids", "attention_mask", "token_type_ids")
          for a in ("--input-shape", f"{n}=1x8")]


@pytest.mark.parametrize("name,method,fused", [
    ("hfbert_op17_contrib", "gates", "Attention"),
    ("hfbert_op17_mha", "l1", "MultiHeadAttention"),  # l1 with data fine-tunes
])
def test_training_a_fused_model_is_refused_in_one_line(tmp_path, name, method, fused):
    loader = tmp_path / "loader.py"
    loader.write_text(LOADER)
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(cli, [
        "prune", os.path.join(FIXTURES, f"{name}.onnx"), "--data", str(loader), "--method",
        method, "--steps", "2", "--finetune-steps", "2", "--budget", "0.5", *SHAPES,
        "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "has no gradient for com.microsoft" in lines[0]
    assert f", {fused}" in lines[0] and "--method l1" in lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loader.py"]  # nothing written


def test_gelu_fusions_alone_train():
    node = helper.make_node("BiasGelu", ["x", "bias"], ["y"], name="gelu",
                            domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [2, 4])],
                              [helper.make_tensor_value_info("y", 1, [2, 4])],
                              [numpy_helper.from_array(np.ones(4, np.float32), "bias")])
    model = helper.make_model(graph)
    assert untrainable_contrib_message(model) is None
    model.graph.node[0].op_type = "SkipLayerNormalization"
    assert "SkipLayerNormalization 'gelu' (fused residual add" in \
        untrainable_contrib_message(model)
