"""Attention heads as channel groups on small PyTorch-style encoders (tests/attention_models):
every layer's Q, K and V heads form one group of H head units (a head is its D channels in
each of Q, K, V), MLP hidden units form another, the residual stream stays, and the MACs,
QKᵀ and AV included, are the architecture's for any set of alive heads and units."""

from __future__ import annotations

import numpy as np
import pytest

from onnxmorph.graph import analyze
from tests.attention_models import encoder_model, independent_macs

MODES = ["separate", "split", "slice", "gather"]


def _heads_and_mlps(analysis):
    groups = analysis.channels.prunable_groups()
    heads = [g for g in groups if any("attn" in layer for layer in g.layers)]
    mlps = [g for g in groups if any("mlp" in layer for layer in g.layers)]
    assert len(heads) + len(mlps) == len(groups)
    return heads, mlps


@pytest.mark.parametrize("opset", [14, 17])
@pytest.mark.parametrize("qkv", MODES)
def test_each_layer_has_one_group_of_h_head_units(opset, qkv):
    analysis = analyze(encoder_model(opset=opset, qkv=qkv))
    heads, mlps = _heads_and_mlps(analysis)
    assert [g.channels for g in heads] == [4, 4]
    assert [g.channels for g in mlps] == [24, 24]
    layouts = analysis.channels.layouts
    for layer, group in enumerate(heads):
        # Q and K heads as [B, H, T, D] and [B, H, D, T]: head h is one unit, the same in both.
        q = layouts[f"attn{layer}_q_heads"] if qkv != "gather" else None
        if q is not None:
            assert q.axes == (1, 3)
            assert (q.ids == q.ids[:, :1]).all(), "a head's D channels are not one unit"
            np.testing.assert_array_equal(q.ids, layouts[f"attn{layer}_k_heads"].ids)
            np.testing.assert_array_equal(q.ids, layouts[f"attn{layer}_v_heads"].ids)
            assert sorted(q.ids[:, 0].tolist()) == sorted(group.units.tolist())
        scores = layouts[f"attn{layer}_softmax"]
        assert scores.axes == (1,) and sorted(scores.ids.tolist()) == sorted(group.units.tolist())
    # The residual stream (embedding) is pinned: LayerNorm mixes it.
    assert not any(g.prunable for g in analysis.groups if f"res{0}a" in g.tensors)


@pytest.mark.parametrize("opset,qkv,cls", [
    (14, "separate", False), (17, "separate", True), (14, "gather", True), (17, "gather", False),
])
def test_macs_are_the_architectures_for_any_alive_heads(opset, qkv, cls):
    analysis = analyze(encoder_model(opset=opset, qkv=qkv, shape_chain=True, cls_token=cls))
    assert analysis.macs == independent_macs(cls_token=cls)
    heads, mlps = _heads_and_mlps(analysis)
    rng = np.random.default_rng(opset)
    alive = analysis.all_alive()
    kept_heads, kept_hidden = [], []
    for head_group, mlp_group in zip(heads, mlps):
        for group, kept in ((head_group, kept_heads), (mlp_group, kept_hidden)):
            dead = rng.choice(group.units, size=rng.integers(1, group.channels), replace=False)
            alive[dead] = 0.0
            kept.append(group.channels - dead.size)
    assert analysis.cost.macs(alive) == independent_macs(
        alive_heads=kept_heads, alive_hidden=kept_hidden, cls_token=cls)
    # A gate half-open on one head costs half that head's MACs (differentiable, linear).
    half = analysis.all_alive()
    half[heads[0].units[0]] = 0.5
    full = independent_macs(cls_token=cls)
    per_head = full - independent_macs(alive_heads=[3, 4], cls_token=cls)
    assert analysis.cost.macs(half) == pytest.approx(full - per_head / 2)


def test_attention_macs_are_counted_per_head():
    analysis = analyze(encoder_model(tokens=7))
    by_layer = analysis.cost.macs.by_layer()
    # QKᵀ and AV: H · T² · D each at batch 1.
    assert by_layer["attn0_qk"] == by_layer["attn0_av"] == 4 * 7 * 7 * 4


@pytest.mark.parametrize("qkv", MODES)
def test_three_heads_are_three_units_not_a_fused_qkv(qkv):
    """A [B, T, 3·D] → [B, T, 3, D] head split looks like nn.MultiheadAttention's [3, E]
    q/k/v unflatten; the attention MatMuls decide: each head stays one unit of its own."""
    import onnxmorph

    seed = encoder_model(qkv=qkv, heads=3, embed=12)
    analysis = analyze(seed)
    heads, mlps = _heads_and_mlps(analysis)
    assert [g.channels for g in heads] == [3, 3] and [g.channels for g in mlps] == [24, 24]
    assert analysis.macs == independent_macs(heads=3, embed=12)
    alive = analysis.all_alive()
    alive[heads[0].units[1]] = 0.0
    assert analysis.cost.macs(alive) == independent_macs(heads=3, embed=12,
                                                         alive_heads=[2, 3])
    result = onnxmorph.prune(seed, method="l1", budget=0.5, round_to=1)
    kept = [int(result.alive[g.units].sum()) for g in heads]
    assert min(kept) < 3 and analyze(result.model).macs == independent_macs(
        heads=3, embed=12, alive_heads=kept,
        alive_hidden=[int(result.alive[g.units].sum()) for g in mlps])
