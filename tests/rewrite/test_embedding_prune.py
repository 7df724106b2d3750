"""--prune-embedding: the embedding dimension (residual stream) of a transformer as one group
spanning the patch projection, positional embedding, every LayerNorm (scale, bias and the
normalised axis), every projection that reads or writes it, and the head.

A pruned model normalises over the kept channels; zeroing channels in the seed would not
(mean and variance count the zeros), so the reference normalises over the kept channels
too (rewrite/zero_channels.py). The tests show that this reference is needed (the plain
zeroed seed differs) and that it equals a LayerNorm over the kept channels in numpy."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxmorph
from onnxmorph.graph import analyze
from onnxmorph.graph.handlers.base import Layout
from onnxmorph.rewrite import zero_channels
from tests.attention_models import ENCODER_LOADER, encoder_model
from tests.onnx_builders import GraphBuilder, group_of
from tests.rewrite._oracles import assert_matches_zeroed_seed
from tests.rewrite._support import assert_differs, keep_masks, run
from tests.test_transformer_structure import _weight

EMBED_LAYERS = ("embed", "pos_embed", "ln0a", "attn0_q", "attn0_k", "attn0_v", "attn0_out",
                "ln0b", "mlp0_fc1", "mlp0_fc2", "ln_final", "classifier")


def _macs(embed: int, heads: list[int], hidden: list[int], tokens: int = 6,
          features: int = 5, classes: int = 3, d: int = 4) -> int:
    """Multiply-adds at batch 1 from the architecture at embedding width `embed`."""
    total = tokens * features * embed + embed * classes
    for h, m in zip(heads, hidden):
        total += tokens * embed * 3 * h * d + 2 * h * tokens * tokens * d
        total += tokens * h * d * embed + 2 * tokens * embed * m
    return total


def test_off_by_default_the_embedding_stays_with_a_reason():
    analysis = analyze(encoder_model(opset=17))
    group = group_of(analysis, "ln0a")
    assert not group.prunable and "--prune-embedding" in group.reason
    assert analysis.to_dict()["groups"]  # and nothing else changes: heads and MLP groups
    assert len(analysis.channels.prunable_groups()) == 4


@pytest.mark.parametrize("qkv,shape_chain", [("separate", False), ("gather", True)])
def test_one_group_spans_the_residual_stream(qkv, shape_chain):
    analysis = analyze(encoder_model(opset=17, qkv=qkv, shape_chain=shape_chain),
                       prune_embedding=True)
    group = group_of(analysis, "ln0a")
    assert group.prunable and group.channels == 16
    for layer in EMBED_LAYERS:
        if qkv == "gather" and layer in ("attn0_q", "attn0_k", "attn0_v"):
            layer = "attn0_qkv"
        assert layer in group.layers, layer
    assert {"res0a", "res1b"} <= set(group.tensors)  # the residual sums
    assert len(analysis.channels.prunable_groups()) == 5  # 2×heads, 2×MLP, the embedding
    # Its cost is every MAC that reads or writes the stream, exactly.
    alive = analysis.all_alive()
    alive[group.units[:6]] = 0
    assert analysis.cost.macs(alive) == _macs(10, [4, 4], [24, 24])


@pytest.mark.parametrize("method,qkv,opset", [("l1", "separate", 17), ("uniform", "gather", 17),
                                              ("l1", "slice", 17), ("l1", "split", 14),
                                              ("uniform", "separate", 14)])
def test_pruned_embedding_equals_the_seed_normalised_over_kept_channels(method, qkv, opset):
    seed = encoder_model(opset=opset, qkv=qkv)
    result = onnxmorph.prune(seed, method=method, budget=0.5, prune_embedding=True,
                             round_to=1)
    assert result.extra["verify"]["passed"]
    onnx.checker.check_model(result.model, full_check=True)
    section = result.structure["transformer"]
    embed = section["embedding"]["channels_after"]
    assert section["embedding"]["channels_before"] == 16 and embed < 16
    for name in ("ln0a", "ln_final"):
        assert _weight(result.model, name).shape == (embed,)  # scale or bias sliced
    assert _weight(result.model, "pos_embed").shape == (1, 6, embed)
    assert _weight(result.model, "classifier").shape == (embed, 3)
    macs = _macs(embed, [a["heads_after"] for a in section["attention"]],
                 [m["units_after"] for m in section["mlp"]])
    assert analyze(result.model).macs == result.analysis.cost.macs(result.alive * 1.0) == macs
    assert macs <= 0.5 * _macs(16, [4, 4], [24, 24])
    assert_matches_zeroed_seed(result, seed, "x", (6, 5))


@pytest.mark.parametrize("opset", [14, 17])
def test_zeros_alone_are_not_the_reference(monkeypatch, opset):
    """Without normalising over the kept channels the zeroed seed differs from the pruned
    model: the masked reference is what makes verify pass, not a loose tolerance."""
    seed = encoder_model(opset=opset)
    result = onnxmorph.prune(seed, method="l1", budget=0.5, prune_embedding=True, round_to=1)
    analysis = result.analysis
    masks = keep_masks(analysis, result.alive)
    monkeypatch.setattr(zero_channels, "_normalises_removed", lambda *args: False)
    monkeypatch.setattr(zero_channels, "_averages_removed", lambda *args: False)
    plain = zero_channels.zero_removed_channels(seed, analysis.channels.layouts,
                                                analysis.loaded.shapes, masks)
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 6, 5)).astype(np.float32)}
    assert_differs(run(plain, feeds), run(result.model, feeds), "plain zeroed seed vs pruned")


def test_masked_layer_norm_is_layer_norm_over_the_kept_channels():
    b = GraphBuilder(seed=0, opset=17)
    x = b.input("x", ["batch", 3, 8])
    rng = np.random.default_rng(2)
    scale, bias = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8)
    y = b.node("LayerNormalization", [x, b.const(scale), b.const(bias.astype(np.float32))],
               axis=-1, epsilon=1e-3)
    model = b.model([y])
    keep = np.array([1, 0, 1, 1, 0, 1, 1, 0], bool)
    # Channels on the last axis, as the residual stream of a transformer has them.
    layouts = {name: Layout((2,), np.arange(8)) for name in (x, y)}
    reference = zero_channels.zero_removed_channels(
        model, layouts, {x: (1, 3, 8), y: (1, 3, 8)}, {x: keep, y: keep})
    data = rng.standard_normal((2, 3, 8)).astype(np.float32)
    kept = data[..., keep]
    normed = (kept - kept.mean(-1, keepdims=True)) / np.sqrt(kept.var(-1, keepdims=True) + 1e-3)
    got = run(reference, {"x": data})[0]  # a graph output: its removed channels are not zeroed
    np.testing.assert_allclose(got[..., keep], normed * scale[keep] + bias[keep], rtol=1e-5,
                               atol=1e-5)


def test_decomposed_layer_norm_joins_the_embedding():
    """Opset 14 exports LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div: its means over the embedding
    become means over the kept channels (in the pruned model and in verify's reference)."""
    analysis = analyze(encoder_model(opset=14), prune_embedding=True)
    group = group_of(analysis, "ln0a")
    assert group.prunable and group.channels == 16 and "ln0a_mean" not in analysis.channels.layouts
    assert len(analysis.channels.prunable_groups()) == 5
    off = analyze(encoder_model(opset=14))
    assert "reduces over the channel axis" in group_of(off, "ln0a").reason


def test_cli_prune_embedding(tmp_path):
    from click.testing import CliRunner

    from onnxmorph.cli.main import cli

    seed = tmp_path / "enc.onnx"
    onnx.save(encoder_model(opset=17), seed)
    out = tmp_path / "enc.pruned.onnx"
    result = CliRunner().invoke(cli, ["prune", str(seed), "--method", "l1", "--budget", "0.5",
                                      "--prune-embedding", "--round-to", "1",
                                      "--no-measure-latency", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    ln = next(n for n in onnx.load(out).graph.node if n.name == "ln0a")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer}
    assert inits[ln.input[1]].shape[0] < 16
    shown = CliRunner().invoke(cli, ["analyze", str(seed), "--prune-embedding", "--json"])
    assert shown.exit_code == 0
    assert sum(g["prunable"] for g in json.loads(shown.output)["groups"]) == 5


def test_verify_command_analyses_the_seed_as_the_pruning_did(tmp_path):
    """A pruned-embedding model records it; `onnxmorph verify seed pruned` then lays out the
    seed's tensors the same way (a word table's columns, not the token axis) and passes."""
    from click.testing import CliRunner

    from onnxmorph.cli.main import cli
    from tests.graph.test_attention_exports import input_shapes, path

    seed = path("hfbert_op17_ts")
    result = onnxmorph.prune(seed, method="l1", budget=0.5, round_to=1, prune_embedding=True,
                             input_shapes=input_shapes("hfbert_op17_ts"))
    out = tmp_path / "p.onnx"
    onnx.save(result.model, out)
    shapes = [a for n in input_shapes("hfbert_op17_ts") for a in ("--input-shape", f"{n}=1x8")]
    checked = CliRunner().invoke(cli, ["verify", seed, str(out), *shapes])
    assert checked.exit_code == 0 and "passed" in checked.output, checked.output


@pytest.mark.parametrize("method", ["gates", "gdp"])
def test_learned_methods_gate_the_embedding(tmp_path, method):
    """One gate per embedding channel; the gated model folds and slices to what the seed
    normalised over the kept channels computes (checked inside prune)."""
    loader = tmp_path / "loader.py"
    loader.write_text(ENCODER_LOADER)
    result = onnxmorph.prune(encoder_model(opset=17, qkv="split"), method=method,
                             data=str(loader), budget=0.5, prune_embedding=True, round_to=1,
                             training={"steps": 40, "finetune_steps": 10})
    key = "verify_gates_folded" if method == "gates" else "verify_gates_absorbed"
    assert result.extra[key]["passed"]
    section = result.structure["transformer"]
    macs = _macs(section["embedding"]["channels_after"],
                 [a["heads_after"] for a in section["attention"]],
                 [m["units_after"] for m in section["mlp"]])
    assert analyze(result.model).macs == macs <= 0.5 * _macs(16, [4, 4], [24, 24])


@pytest.mark.parametrize("whole", [False, True])
def test_a_shape_read_pins_only_the_axes_it_reads(whole):
    """Shape(h)[0] (the batch, as a class token's Expand reads it) leaves h's channels alone;
    the whole shape read at run time (here an output) includes the channel count, so those
    channels stay."""
    b = GraphBuilder(seed=0, opset=17)
    x = b.input("x", ["batch", 4])
    h = b.node("MatMul", [x, b.const(np.ones((4, 8), np.float32))], name="h")
    shape = b.node("Shape", [h], name="shape")
    read = shape if whole else b.node("Gather", [shape, b.ints([0])], axis=0)
    y = b.node("MatMul", [b.node("Relu", [h]), b.const(np.ones((8, 3), np.float32))], name="y")
    analysis = analyze(b.model([y, b.node("Cast", [read], to=1)]))
    shapes = [n for n in analysis.loaded.model.graph.node if n.op_type == "Shape"]
    assert shapes, "the loader kept the run-time Shape read (else the test proves nothing)"
    group = group_of(analysis, "h")
    assert group.prunable != whole
    if whole:
        assert "Shape 'shape'" in group.reason


def test_vit_sample_prunes_its_embedding():
    """samples/vit_seed.onnx (opset 17, LayerNormalization, class token): the embedding is one
    group with the heads and MLP units; the L1 half verifies and shows in the structure."""
    import pathlib

    sample = pathlib.Path(__file__).resolve().parents[2] / "samples" / "vit_seed.onnx"
    if not sample.exists():
        pytest.skip("the ViT sample is not built")
    result = onnxmorph.prune(sample, method="l1", budget=0.5, prune_embedding=True)
    assert result.extra["verify"]["passed"]
    section = result.structure["transformer"]
    assert section["embedding"]["channels_after"] < section["embedding"]["channels_before"]
    assert len(section["attention"]) == len(section["mlp"]) >= 2
    assert result.report()["ratio"]["macs"] <= 0.5


def test_decomposed_layer_norm_at_opset_18_reads_its_axes_input():
    """Opset 18 moves ReduceMean's axes to an input; the reference still averages over the
    kept channels (and the pruned model verifies)."""
    from onnx import version_converter

    seed = version_converter.convert_version(encoder_model(opset=14), 18)
    assert any(n.op_type == "ReduceMean" and len(n.input) == 2 for n in seed.graph.node)
    result = onnxmorph.prune(seed, method="l1", budget=0.5, prune_embedding=True, round_to=1)
    assert result.extra["verify"]["passed"]
    assert result.structure["transformer"]["embedding"]["channels_after"] < 16
    assert_matches_zeroed_seed(result, seed, "x", (6, 5))
