"""Every method on transformers: the ViT sample (samples/vit_seed.onnx, 4 blocks x 4 heads,
MLP 192, 17 tokens) and real exports (tests/fixtures/transformers).

Learned methods (gates, gdp, group-lasso, taylor) with and without labels remove whole heads
and MLP units, reach the budget, and the pruned model's MACs equal a count by hand from the
heads and units it kept; gamma refuses a model without BatchNormalization in one line.
Few steps on 128 images: these check that each method runs and what it writes, not accuracy
(benchmarks/RESULTS_vit.md has that)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import onnxmorph
from onnxmorph.errors import OnnxMorphError, TrainingError
from onnxmorph.graph import analyze
from tests.sample_loaders import SAMPLES, write_sample_loader

VIT = SAMPLES / "vit_seed.onnx"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transformers"
LAYERS, HEADS, HIDDEN, MLP, TOKENS, PATCHES, PATCH = 4, 4, 64, 192, 17, 16, 7
FEW = {"steps": 4, "finetune_steps": 2}


def vit_macs(heads: list[int], mlp: list[int]) -> int:
    """Batch-1 MACs of the ViT sample with heads[i] heads (D = 16) and mlp[i] units alive in
    block i: patch embedding, Q/K/V, QKᵀ and AV (T²·D per head), output projection, MLP,
    classifier."""
    total = PATCHES * HIDDEN * PATCH * PATCH + HIDDEN * 10
    for h, m in zip(heads, mlp):
        d = 16 * h
        total += TOKENS * HIDDEN * 3 * d + 2 * TOKENS * TOKENS * d + TOKENS * d * HIDDEN
        total += 2 * TOKENS * HIDDEN * m
    return total


def kept(result) -> tuple[list[int], list[int]]:
    """Alive heads and MLP units per block, in graph order."""
    groups = result.analysis.channels.prunable_groups()
    heads = [int(result.alive[g.units].sum()) for g in groups if g.channels == HEADS]
    mlp = [int(result.alive[g.units].sum()) for g in groups if g.channels == MLP]
    return heads, mlp


@pytest.fixture(scope="module")
def loaders(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, str]:
    folder = tmp_path_factory.mktemp("loaders")
    return {labeled: str(write_sample_loader(folder / f"loader_{labeled}.py", labeled))
            for labeled in (True, False)}


def test_vit_sample_has_four_heads_and_an_mlp_per_block_with_hand_counted_macs():
    analysis = analyze(str(VIT))
    channels = sorted(g.channels for g in analysis.channels.prunable_groups())
    assert channels == [HEADS] * LAYERS + [MLP] * LAYERS
    assert analysis.macs == vit_macs([HEADS] * LAYERS, [MLP] * LAYERS)
    ops = {n.op_type for n in onnx.load(str(VIT)).graph.node}
    assert "LayerNormalization" in ops and onnx.load(str(VIT)).opset_import[0].version == 17


# Labels and distillation from the seed each once per kind of method (gates, polarization,
# regulariser, criterion); tests/graph/test_attention_exports.py has gates on real exports.
@pytest.mark.parametrize("method,labeled", [("gates", True), ("gdp", False),
                                            ("group-lasso", False), ("taylor", True)])
def test_learned_methods_remove_whole_heads_and_units_within_budget(loaders, method, labeled):
    result = onnxmorph.prune(str(VIT), method=method, data=loaders[labeled], budget=0.5,
                             round_to=1, training=FEW)
    heads, mlp = kept(result)
    assert len(heads) == len(mlp) == LAYERS
    pruned = vit_macs(heads, mlp)
    assert analyze(result.model).macs == pruned <= 0.5 * result.analysis.macs
    assert sum(heads) < HEADS * LAYERS or sum(mlp) < MLP * LAYERS
    onnx.checker.check_model(result.model, full_check=True)


@pytest.mark.parametrize("method", ["l1", "uniform"])
def test_one_shot_methods_slice_the_vit_sample_exactly(method):
    # verify=True (the default) checks the slice equals the zeroed seed at batches 1 and 3.
    result = onnxmorph.prune(str(VIT), method=method, budget=0.5, round_to=1)
    heads, mlp = kept(result)
    assert analyze(result.model).macs == vit_macs(heads, mlp) <= 0.5 * result.analysis.macs
    if method == "uniform":  # the same width multiplier everywhere
        assert len(set(heads)) == 1 and len(set(mlp)) == 1


def test_gamma_refuses_a_transformer_without_batchnorm(loaders):
    with pytest.raises(OnnxMorphError, match="BatchNormalization"):
        onnxmorph.prune(str(VIT), method="gamma", data=loaders[True], budget=0.5,
                        training=FEW)


_IMAGES = """
import numpy as np
X = np.random.default_rng(0).standard_normal((32, 3, {side}, {side})).astype(np.float32)
Y = (X[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64)
def train_batches():
    for i in range(0, 32, 16):
        yield X[i:i + 16], Y[i:i + 16]
"""


# vit_op17_dynamo: the dynamo exporter merges the equal LayerNorm weights of a fresh model
# into one initializer (ORT defined its gradient twice in the Taylor probe). swin_op17_ts:
# equal frozen LayerNorm scales merged by ORT itself unless carried as frozen parameters.
# swin_op18_dynamo: shape inference loses the output's shape, which onnxblock requires.
@pytest.mark.parametrize("name,method,side", [("vit_op17_dynamo", "taylor", 16),
                                              ("swin_op17_ts", "taylor", 32),
                                              ("swin_op18_dynamo", "gates", 32)])
def test_learned_methods_on_real_exports_that_used_to_fail(tmp_path, name, method, side):
    loader = tmp_path / "loader.py"
    loader.write_text(_IMAGES.format(side=side))
    result = onnxmorph.prune(str(FIXTURES / f"{name}.onnx"), method=method, data=str(loader),
                             budget=0.5, round_to=1, training={"steps": 3, "finetune_steps": 1})
    assert analyze(result.model).macs <= 0.5 * result.analysis.macs
    onnx.checker.check_model(result.model, full_check=True)


def test_contrib_fusions_are_refused_before_training_by_name(tmp_path):
    """onnxruntime's transformer optimizer output (com.microsoft Attention,
    SkipLayerNormalization, ...) has no gradient: one line naming the nodes, not a failure
    deep in building the training graph."""
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n"
        "ids = np.random.default_rng(0).integers(0, 30, (32, 8))\n"
        "def train_batches():\n"
        "    for i in range(0, 32, 16):\n"
        "        s = slice(i, i + 16)\n"
        "        yield ({'input_ids': ids[s], 'attention_mask': np.ones_like(ids[s]),\n"
        "                'token_type_ids': np.zeros_like(ids[s])}, ids[s, 0] % 4)\n")
    shapes = {n: (1, 8) for n in ("input_ids", "attention_mask", "token_type_ids")}
    refusal = r"no gradient for com\.microsoft .*SkipLayerNormalization"
    with pytest.raises(TrainingError, match=refusal):
        onnxmorph.prune(str(FIXTURES / "hfbert_op17_contrib.onnx"), method="gates",
                        data=str(loader), budget=0.5, input_shapes=shapes, training=FEW)
