"""Real PyTorch exports (tests/fixtures/transformers, made by make_transformers.py with torch
2.14): torchvision's VisionTransformer and Swin, an nn.TransformerEncoder text classifier, a
Hugging Face-style BERT and a custom block with F.scaled_dot_product_attention and 3 heads,
by the TorchScript exporter at opsets 14 and 17 and by the dynamo exporter (opset 17 or 18),
and the HF BERT after onnxruntime's transformer optimizer (com.microsoft Attention with a
packed QKV weight, or MultiHeadAttention; BiasGelu, SkipLayerNormalization, ...).

Each block's heads are one group of H units and its MLP hidden units another; MACs equal a
count by hand from the architecture (architectures.py) for any alive heads and units; the L1
prune at 0.5 computes the seed with the removed heads and units zeroed at two batch sizes and,
where the export keeps it dynamic, two sequence lengths."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

import onnxmorph
from onnxmorph.graph import analyze
from onnxmorph.rewrite import zero_removed_channels
from tests.fixtures.transformers.architectures import FIXTURE, family, macs
from tests.rewrite._support import assert_close, assert_differs, keep_masks, run

HERE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "transformers")
EXPORTS = ["vit_op14_ts", "vit_op17_ts", "vit_op17_dynamo", "vit_op18_dynamo",
           "bert_op14_ts", "bert_op17_ts", "bert_op18_dynamo", "hfbert_op14_ts",
           "hfbert_op17_ts", "hfbert_op17_contrib", "hfbert_op17_mha", "sdpa_op14_ts",
           "sdpa_op17_ts",
           "sdpa_op18_dynamo", "swin_op17_ts", "swin_op18_dynamo"]
HF_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKENS = FIXTURE["bert"]["tokens"]


def path(name: str) -> str:
    return os.path.join(HERE, f"{name}.onnx")


def config(name: str) -> dict:
    return FIXTURE["bert" if family(name) == "hfbert" else family(name)]


def input_shapes(name: str) -> dict[str, tuple[int, ...]] | None:
    """Text models have a dynamic sequence axis: analysed at 8 tokens."""
    kind = family(name)
    if kind == "hfbert":
        return {n: (1, TOKENS) for n in HF_INPUTS}
    if kind == "bert":
        return {"input": (1, TOKENS)}
    if kind == "sdpa":
        return {"input": (1, TOKENS, FIXTURE["sdpa"]["features"])}
    return None


def feeds(name: str, batch: int, tokens: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    kind = family(name)
    if kind == "hfbert":
        mask = np.ones((batch, tokens), np.int64)
        mask[:, -1] = 0  # padding: the additive mask matters
        return {"input_ids": rng.integers(0, 30, (batch, tokens)), "attention_mask": mask,
                "token_type_ids": rng.integers(0, 2, (batch, tokens))}
    if kind == "bert":
        return {"input": rng.integers(0, 30, (batch, tokens))}
    if kind == "sdpa":
        return {"input": rng.standard_normal((batch, tokens, 6)).astype(np.float32)}
    side = config(name)["image"]
    return {"input": rng.standard_normal((batch, 3, side, side)).astype(np.float32)}


def heads_and_mlps(analysis, name: str) -> tuple[list, list]:
    """Prunable groups in graph order: per block one of H head units, one of MLP units."""
    groups = analysis.channels.prunable_groups()
    cfg = config(name)
    if family(name) == "swin":
        head_counts = [h for d, h in zip(cfg["depths"], cfg["heads"]) for _ in range(d)]
    else:
        head_counts = [cfg["heads"]] * cfg["layers"]
    heads = [g for g in groups if g.channels in head_counts]
    mlps = [g for g in groups if g not in heads]
    assert [g.channels for g in heads] == head_counts
    return heads, mlps


@pytest.mark.parametrize("name", EXPORTS)
def test_heads_and_mlp_units_are_groups_with_hand_counted_macs(name):
    analysis = analyze(path(name), input_shapes(name))
    kind = "bert" if family(name) == "hfbert" else family(name)
    cfg = config(name)
    heads, mlps = heads_and_mlps(analysis, name)
    if kind == "swin":
        assert [g.channels for g in mlps] == [4 * cfg["embed"] * 2 ** s
                                              for s, d in enumerate(cfg["depths"])
                                              for _ in range(d)]
    else:
        assert [g.channels for g in mlps] == [cfg["mlp"]] * cfg["layers"]
    assert analysis.macs == macs(kind, cfg)
    # Any alive heads and units: the cost is the architecture's at those widths.
    rng = np.random.default_rng(len(name))
    alive = analysis.all_alive()
    kept_heads, kept_mlp = [], []
    for group, kept in [(g, kept_heads) for g in heads] + [(g, kept_mlp) for g in mlps]:
        dead = rng.choice(group.units, size=rng.integers(1, group.channels), replace=False)
        alive[dead] = 0.0
        kept.append(group.channels - dead.size)
    assert analysis.cost.macs(alive) == macs(kind, cfg, heads=kept_heads, mlp=kept_mlp)


def _zeroed_outputs(zeroed, batch_feeds):
    """The zeroed seed's outputs, each sample run alone: where heads share an axis with the
    batch (nn.MultiheadAttention's [T, B·H, D]) a zeroing mask holds at batch 1 only."""
    batch = next(iter(batch_feeds.values())).shape[0]
    alone = [run(zeroed, {k: v[i:i + 1] for k, v in batch_feeds.items()})[0]
             for i in range(batch)]
    return [np.concatenate(alone)]


def _runs_at(model: onnx.ModelProto, batch_feeds) -> bool:
    try:
        run(model, batch_feeds)
    except Exception:  # the export computes at its traced length only
        return False
    return True


@pytest.mark.parametrize("name", EXPORTS)
def test_l1_half_matches_the_zeroed_seed_at_two_batches_and_lengths(name):
    result = onnxmorph.prune(path(name), method="l1", budget=0.5, round_to=1,
                             input_shapes=input_shapes(name))
    analysis = result.analysis
    kind = "bert" if family(name) == "hfbert" else family(name)
    heads, mlps = heads_and_mlps(analysis, name)
    kept_heads = [int(result.alive[g.units].sum()) for g in heads]
    kept_mlp = [int(result.alive[g.units].sum()) for g in mlps]
    assert min(kept_heads) < max(g.channels for g in heads)  # whole heads went
    pruned_macs = macs(kind, config(name), heads=kept_heads, mlp=kept_mlp)
    assert analyze(result.model, input_shapes(name)).macs == pruned_macs
    assert pruned_macs <= 0.5 * analysis.macs
    seed = onnx.load(path(name))
    zeroed = zero_removed_channels(seed, analysis.channels.layouts, analysis.loaded.shapes,
                                   keep_masks(analysis, result.alive))
    lengths = [TOKENS, TOKENS - 3] if input_shapes(name) else [None]
    checked = 0
    for tokens in lengths:
        for batch in (1, 3):
            batch_feeds = feeds(name, batch, tokens or 0, seed=batch)
            if tokens != TOKENS and not _runs_at(seed, batch_feeds):
                continue  # TorchScript's nn.MultiheadAttention bakes the key length in
            want = _zeroed_outputs(zeroed, batch_feeds)
            assert_close(run(result.model, batch_feeds), want, f"batch {batch}, T {tokens}")
            assert_differs(want, run(seed, batch_feeds), "zeroed seed vs seed")
            checked += 1
    if family(name) in ("hfbert", "sdpa") or name == "bert_op18_dynamo":
        assert checked == 4, "this export has a dynamic sequence axis"


_LOADERS = {
    "image": """
import numpy as np
rng = np.random.default_rng(0)
X = rng.standard_normal((128, 3, 16, 16)).astype(np.float32)
Y = (X[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + 2 * (X[:, 1, :8].mean(axis=(1, 2)) > 0)
def train_batches():
    for i in range(0, 128, 16):
        yield X[i:i + 16], Y[i:i + 16]
def eval_batches():
    yield X[:32], Y[:32]
""",
    "tokens": """
import numpy as np
rng = np.random.default_rng(0)
ids = rng.integers(0, 30, (128, 8))
Y = (ids[:, 0] % 4).astype(np.int64)
def _feeds(s):
    return {"input_ids": ids[s], "attention_mask": np.ones_like(ids[s]),
            "token_type_ids": np.zeros_like(ids[s])}
def train_batches():
    for i in range(0, 128, 16):
        yield _feeds(slice(i, i + 16)), Y[i:i + 16]
def eval_batches():
    yield _feeds(slice(0, 32)), Y[:32]
""",
}


@pytest.mark.parametrize("name,data", [("vit_op17_ts", "image"), ("hfbert_op17_ts", "tokens")])
def test_gates_learn_head_counts_of_a_real_export(tmp_path, name, data):
    loader = tmp_path / "loader.py"
    loader.write_text(_LOADERS[data])
    result = onnxmorph.prune(path(name), method="gates", data=str(loader), budget=0.5,
                             round_to=1, input_shapes=input_shapes(name),
                             training={"steps": 30, "finetune_steps": 10})
    heads, mlps = heads_and_mlps(result.analysis, name)
    kept_heads = [int(result.alive[g.units].sum()) for g in heads]
    kept_mlp = [int(result.alive[g.units].sum()) for g in mlps]
    assert min(kept_heads) < config(name)["heads"]  # one gate per head: whole heads went
    kind = "bert" if family(name) == "hfbert" else family(name)
    pruned_macs = macs(kind, config(name), heads=kept_heads, mlp=kept_mlp)
    assert analyze(result.model, input_shapes(name)).macs == pruned_macs
    assert pruned_macs <= 0.5 * result.analysis.macs
    onnx.checker.check_model(result.model, full_check=True)


def test_contrib_attention_loses_whole_heads_of_its_packed_weight():
    name = "hfbert_op17_contrib"
    analysis = analyze(path(name), input_shapes(name))
    reasons = {g.reason for g in analysis.groups if not g.prunable}
    assert "com.microsoft SkipLayerNormalization 'SkipLayerNorm_AddBias_0' normalises across " \
           "channels" in reasons
    heads, _ = heads_and_mlps(analysis, name)
    alive = analysis.all_alive().astype(bool)
    alive[heads[0].units[[0, 2]]] = False  # heads 0 and 2 of the first Attention
    from onnxmorph.rewrite import slice_channels

    pruned = slice_channels(analysis, alive).model
    node = next(n for n in pruned.graph.node if n.name == "Attention_0")
    assert [a.i for a in node.attribute if a.name == "num_heads"] == [2]
    values = {i.name: onnx.numpy_helper.to_array(i) for i in pruned.graph.initializer}
    seed = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(path(name)).graph.initializer}
    # Heads 1 and 3 (D = 4) of each of q, k, v stay, in order.
    kept = [part * 16 + head * 4 + d for part in range(3) for head in (1, 3) for d in range(4)]
    np.testing.assert_array_equal(values[node.input[1]], seed[node.input[1]][:, kept])
    np.testing.assert_array_equal(values[node.input[2]], seed[node.input[2]][kept])
    assert analyze(pruned, input_shapes(name)).macs == macs("bert", config(name), heads=[2, 4])


def test_contrib_multi_head_attention_loses_whole_heads():
    name = "hfbert_op17_mha"
    analysis = analyze(path(name), input_shapes(name))
    heads, _ = heads_and_mlps(analysis, name)
    alive = analysis.all_alive().astype(bool)
    alive[heads[1].units[3]] = False  # the last head of the second layer
    from onnxmorph.rewrite import slice_channels

    pruned = slice_channels(analysis, alive).model
    node = next(n for n in pruned.graph.node if n.name == "Attention_1")
    assert [a.i for a in node.attribute if a.name == "num_heads"] == [3]
    values = {i.name: onnx.numpy_helper.to_array(i) for i in pruned.graph.initializer}
    assert values[node.input[3]].shape == (3 * 12,)  # the packed bias: 3 heads of q, k, v
    assert analyze(pruned, input_shapes(name)).macs == macs("bert", config(name), heads=[4, 3])


def test_dynamo_shared_head_target_takes_each_layers_head_count():
    """The dynamo exporter builds one Concat(B, H, T, D) target for every layer's K/V view:
    layers that keep different head counts each get their own copy."""
    from onnxmorph.rewrite import slice_channels

    name = "bert_op18_dynamo"
    analysis = analyze(path(name), input_shapes(name))
    heads, _ = heads_and_mlps(analysis, name)
    alive = analysis.all_alive().astype(bool)
    alive[heads[0].units[:3]] = False  # layer 0 keeps 1 head, layer 1 all 4
    pruned = slice_channels(analysis, alive).model
    zeroed = zero_removed_channels(onnx.load(path(name)), analysis.channels.layouts,
                                   analysis.loaded.shapes, keep_masks(analysis, alive))
    for batch, tokens in ((1, TOKENS), (3, TOKENS - 3)):
        batch_feeds = feeds(name, batch, tokens, seed=batch)
        assert_close(run(pruned, batch_feeds), _zeroed_outputs(zeroed, batch_feeds),
                     f"batch {batch}, T {tokens}")
