"""A real torchvision VisionTransformer export (tests/data/tv_vit_tiny_op14.onnx: 32x32 input,
patch 8, one layer, 2 heads of 8, MLP 32; made by benchmarks/make_exports.py). Its
nn.MultiheadAttention unflattens the fused in-projection to [T, B, 3, E], picks q, k, v with
Gather and splits heads as [T, B·H, D]: the 2 heads are one group, MACs are the
architecture's, and pruning a head computes the seed with that head zeroed."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxmorph
from onnxmorph.graph import analyze
from onnxmorph.rewrite import zero_removed_channels
from tests.rewrite._support import assert_close, assert_differs, keep_masks, run

PATH = os.path.join(os.path.dirname(__file__), "..", "data", "tv_vit_tiny_op14.onnx")
pytestmark = pytest.mark.skipif(not os.path.exists(PATH), reason="fixture not on this branch")


def _macs(heads: int = 2, hidden: int = 32) -> int:
    tokens, embed, d = 17, 16, 8
    return (16 * 16 * 3 * 8 * 8  # patch conv
            + tokens * embed * 3 * d * heads + 2 * heads * tokens * tokens * d
            + tokens * d * heads * embed + 2 * tokens * embed * hidden + embed * 10)


def _seed_with_random_classifier() -> onnx.ModelProto:
    """torchvision initialises the classifier to zero; a random one makes outputs differ."""
    model = onnx.load(PATH)
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    for init in model.graph.initializer:
        if init.name == gemm.input[1]:
            value = np.random.default_rng(0).standard_normal(numpy_helper.to_array(init).shape)
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), init.name))
    return model


def test_torch_mha_heads_are_one_group_with_exact_macs():
    analysis = analyze(PATH)
    assert sorted(g.channels for g in analysis.channels.prunable_groups()) == [2, 32]
    assert analysis.macs == _macs()


def test_torch_mha_head_prune_matches_zeroed_seed():
    seed = _seed_with_random_classifier()
    result = onnxmorph.prune(seed, method="l1", budget=0.7, round_to=1)
    kept = {g.channels: int(result.alive[g.units].sum())
            for g in result.analysis.channels.prunable_groups()}
    assert kept[2] == 1
    assert analyze(result.model).macs == _macs(1, kept[32])
    # The head axis is [B·H] here, so a zeroing mask holds at the analysis batch (1) only;
    # at batch 3 the pruned model must give each image what it gives it alone.
    analysis = result.analysis
    zeroed = zero_removed_channels(seed, analysis.channels.layouts, analysis.loaded.shapes,
                                   keep_masks(analysis, result.alive))
    images = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    alone = []
    for image in images:
        feeds = {"input": image[None]}
        want = run(zeroed, feeds)
        assert_close(run(result.model, feeds), want, "batch 1")
        assert_differs(want, run(seed, feeds), "zeroed seed vs seed")
        alone.append(want[0])
    assert_close(run(result.model, {"input": images}), [np.concatenate(alone)], "batch 3")
