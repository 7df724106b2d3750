"""Pruning attention heads and MLP units of small PyTorch-style encoders (dynamic batch): the
L1 prune at 0.5 MACs removes whole heads (their D columns of Q, K, V and D rows of the output
projection, and the head count in every Reshape target), costs what the architecture costs at
the kept widths, and computes the seed with the removed channels zeroed at batch 1 and 3."""

from __future__ import annotations

import onnx
import pytest
from onnx import numpy_helper

import onnxmorph
from onnxmorph.graph import analyze
from onnxmorph.graph.load import load_model
from tests.attention_models import ENCODER_LOADER, encoder_model, independent_macs
from tests.rewrite._oracles import assert_matches_zeroed_seed


def _kept(result):
    analysis = result.analysis
    kept = {"heads": [], "hidden": []}
    for group in analysis.channels.prunable_groups():
        key = "heads" if any("attn" in layer for layer in group.layers) else "hidden"
        kept[key].append(int(result.alive[group.units].sum()))
    return kept


@pytest.mark.parametrize("opset,qkv,shape_chain", [
    (14, "separate", False), (17, "separate", True), (14, "split", True),
    (17, "slice", False), (17, "gather", True), (14, "gather", False),
])
def test_l1_half_prunes_heads_and_mlp_units_exactly(opset, qkv, shape_chain):
    _check_l1_half(encoder_model(opset=opset, qkv=qkv, shape_chain=shape_chain), False)


@pytest.mark.parametrize("opset,qkv", [(14, "separate"), (17, "gather")])
def test_l1_half_prunes_a_class_token_encoder_exactly(opset, qkv):
    seed = encoder_model(opset=opset, qkv=qkv, shape_chain=True, cls_token=True)
    if "Expand" not in [n.op_type for n in load_model(seed).model.graph.node]:
        pytest.skip("this loader folds the class token's Expand at batch 1")
    _check_l1_half(seed, True)


def _check_l1_half(seed, cls_token: bool):
    result = onnxmorph.prune(seed, method="l1", budget=0.5)
    onnx.checker.check_model(result.model, full_check=True)
    kept = _kept(result)
    assert len(kept["heads"]) == 2 and min(kept["heads"]) < 4 and min(kept["hidden"]) < 24
    macs = independent_macs(alive_heads=kept["heads"], alive_hidden=kept["hidden"],
                            cls_token=cls_token)
    assert analyze(result.model).macs == macs <= 0.5 * independent_macs(cls_token=cls_token)
    assert result.analysis.cost.macs(result.alive.astype(float)) == macs
    assert_matches_zeroed_seed(result, seed, "x", (6, 5))


def test_head_count_is_rewritten_in_every_reshape_target():
    result = onnxmorph.prune(encoder_model(qkv="separate"), method="l1", budget=0.5)
    heads = _kept(result)["heads"]
    values = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    for layer, count in enumerate(heads):
        for part in "qkv":
            node = next(n for n in result.model.graph.node
                        if n.name == f"attn{layer}_{part}_split")
            assert values[node.input[1]].tolist() == [0, 0, count, 4]
        merge = next(n for n in result.model.graph.node if n.name == f"attn{layer}_merge")
        assert values[merge.input[1]].tolist() == [0, 0, 4 * count]
        out = next(n for n in result.model.graph.node if n.name == f"attn{layer}_out")
        assert values[out.input[1]].shape == (4 * count, 16)


@pytest.mark.parametrize("opset", [14, 17])
def test_gates_learn_head_counts_to_the_budget(tmp_path, opset):
    # Opset 17 has the LayerNormalization op, whose gradient ORT 1.19 builds only when the
    # training copy names its Mean/InvStdDev outputs; opset 14 decomposes it.
    loader = tmp_path / "loader.py"
    loader.write_text(ENCODER_LOADER)
    seed = encoder_model(opset=opset, qkv="split")
    result = onnxmorph.prune(seed, method="gates", data=str(loader), budget=0.5)
    kept = _kept(result)
    assert min(kept["heads"]) < 4  # one gate per head: whole heads go
    macs = independent_macs(alive_heads=kept["heads"], alive_hidden=kept["hidden"])
    assert analyze(result.model).macs == macs <= 0.5 * independent_macs()
    onnx.checker.check_model(result.model, full_check=True)
