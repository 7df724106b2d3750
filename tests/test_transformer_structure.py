"""The transformer section of the structure JSON and PNG: heads kept per attention layer (of
H), hidden units per MLP block, on a small encoder and on real exports."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import struct

import numpy as np
import pytest

import onnxmorph
from onnxmorph.graph import analyze
from onnxmorph.plot import write_structure_plot
from onnxmorph.transformer_structure import transformer_structure
from tests.attention_models import encoder_model

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "transformers")


@functools.cache
def _pruned(qkv: str = "gather") -> onnxmorph.PruneResult:
    return onnxmorph.prune(encoder_model(opset=17, qkv=qkv), method="l1", budget=0.5)


def _weight(model, node_name: str, index: int = 1) -> np.ndarray:
    from onnx import numpy_helper

    node = next(n for n in model.graph.node if n.name == node_name)
    init = next(i for i in model.graph.initializer if i.name == node.input[index])
    return numpy_helper.to_array(init)


@pytest.mark.parametrize("qkv", ["separate", "gather"])
def test_structure_lists_heads_and_mlp_widths_of_the_pruned_model(qkv):
    result = _pruned(qkv)
    transformer = result.structure["transformer"]
    assert [a["name"] for a in transformer["attention"]] == ["attn0_av", "attn1_av"]
    assert [m["name"] for m in transformer["mlp"]] == ["mlp0_fc1", "mlp1_fc1"]
    assert transformer["embedding"] is None  # not asked for: the residual stream stays
    for layer, attention in enumerate(transformer["attention"]):
        assert attention["heads_before"] == 4 and attention["head_dim"] == 4
        # The pruned model's output projection reads D rows per kept head.
        rows = _weight(result.model, f"attn{layer}_out").shape[0]
        assert rows == 4 * attention["heads_after"] and attention["heads_after"] < 4 \
            or rows == 16 and attention["heads_after"] == 4
    for layer, mlp in enumerate(transformer["mlp"]):
        assert mlp["units_before"] == 24
        assert _weight(result.model, f"mlp{layer}_fc1").shape[1] == mlp["units_after"]
    assert any(m["units_after"] < 24 for m in transformer["mlp"])


def test_a_convnet_has_no_transformer_section():
    from tests.onnx_builders import GraphBuilder

    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 3, 8, 8])
    y = b.node("Relu", [b.node("Conv", [x, b.const(np.ones((4, 3, 3, 3), np.float32))])])
    analysis = analyze(b.model([y]))
    assert transformer_structure(analysis, analysis.all_alive().astype(bool)) is None


@pytest.mark.parametrize("name,heads,hidden", [
    ("vit_op17_ts", [4, 4], [32, 32]),
    ("hfbert_op17_contrib", [4, 4], [32, 32]),  # com.microsoft Attention, num_heads 4
    ("swin_op17_ts", [2, 2, 4], [32, 32, 64]),
])
def test_real_exports_show_every_attention_layer_and_block(name, heads, hidden):
    shapes = ({n: (1, 8) for n in ("input_ids", "attention_mask", "token_type_ids")}
              if "bert" in name else None)
    analysis = analyze(os.path.join(FIXTURES, f"{name}.onnx"), shapes)
    found = transformer_structure(analysis, analysis.all_alive().astype(bool))
    assert [a["heads_before"] for a in found["attention"]] == heads
    assert [a["heads_after"] for a in found["attention"]] == heads
    assert [m["units_before"] for m in found["mlp"]] == hidden


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib is not installed")
def test_png_gets_a_heads_and_mlp_row(tmp_path):
    structure = _pruned().structure
    plain = {k: v for k, v in structure.items() if k != "transformer"}
    assert write_structure_plot(structure, tmp_path / "t.png")
    assert write_structure_plot(plain, tmp_path / "p.png")
    height = {p: struct.unpack(">II", (tmp_path / p).read_bytes()[16:24])[1]
              for p in ("t.png", "p.png")}
    assert height["t.png"] == 2 * height["p.png"]
    json.dumps(structure)  # the section is plain JSON


def test_report_command_prints_heads_and_refuses_a_broken_section(tmp_path):
    from click.testing import CliRunner

    from onnxmorph.cli.main import cli

    structure = _pruned().structure
    good, bad = tmp_path / "good.structure.json", tmp_path / "bad.structure.json"
    good.write_text(json.dumps(structure))
    bad.write_text(json.dumps({**structure, "transformer": {"attention": [{"name": 3}]}}))
    result = CliRunner().invoke(cli, ["report", str(good), "-o", str(tmp_path / "g.png")])
    heads = ", ".join(f"{a['heads_after']}/4" for a in structure["transformer"]["attention"])
    assert result.exit_code == 0 and f"heads kept per attention layer: {heads}" in result.output
    result = CliRunner().invoke(cli, ["report", str(bad), "-o", str(tmp_path / "b.png")])
    assert result.exit_code == 2 and "malformed" in result.output
    assert not (tmp_path / "b.png").exists()
