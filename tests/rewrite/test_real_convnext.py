"""A real torchvision ConvNeXt export (two one-block stages of widths 8 and 16, 32x32 input,
made by tests/fixtures/exports/make_convnext_fixture.py) at opsets 14 and 17: the MLP hidden
units of each block are the prunable groups, MACs are the architecture's, and an L1 prune at
0.6 computes the seed with the removed units zeroed at batch 1 and 3."""

from __future__ import annotations

import os

import onnx
import pytest

import onnxmorph
from onnxmorph.graph import analyze
from tests.rewrite._oracles import assert_matches_zeroed_seed

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "exports")


def _path(opset: int) -> str:
    return os.path.join(FIXTURES, f"tv_convnext_mini_op{opset}.onnx")


def _independent_macs() -> int:
    """Stem 4x4/4 (3→8) at 8x8; block C=8 at 8x8 (dw 7x7, 8→32→8); downsample 2x2/2 (8→16)
    at 4x4; block C=16 at 4x4 (dw 7x7, 16→64→16); classifier 16→10."""
    def block(c: int, pixels: int) -> int:
        return pixels * (c * 49 + c * 4 * c * 2)

    return (64 * 8 * 3 * 16 + block(8, 64) + 16 * 16 * 8 * 4 + block(16, 16) + 16 * 10)


@pytest.mark.parametrize("opset", [14, 17])
def test_real_convnext_mlp_groups_and_macs(opset):
    analysis = analyze(_path(opset))
    prunable = analysis.channels.prunable_groups()
    assert sorted(g.channels for g in prunable) == [32, 64]
    assert all(any("MatMul" in layer for layer in g.layers) for g in prunable)
    assert analysis.macs == _independent_macs()


@pytest.mark.parametrize("opset", [14, 17])
def test_real_convnext_l1_prune_matches_zeroed_seed(opset):
    seed = onnx.load(_path(opset))
    # At these widths the stem and depthwise convs are 47% of the MACs: 0.6 is reachable.
    result = onnxmorph.prune(seed, method="l1", budget=0.6, round_to=1)
    onnx.checker.check_model(result.model, full_check=True)
    analysis = result.analysis
    assert analyze(result.model).macs <= 0.6 * analysis.macs
    assert_matches_zeroed_seed(result, seed, "input", (3, 32, 32))
