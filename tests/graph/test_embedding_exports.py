"""--prune-embedding on real exports (tests/fixtures/transformers): torchvision's ViT
(TorchScript and dynamo; Conv patch embedding, class token expanded to the batch, positional
embedding, x[:, 0] into the head), a block with F.scaled_dot_product_attention, and the text
encoders (nn.TransformerEncoder, HF-style BERT: word, position and segment tables). The
embedding is one prunable group; the L1 prune at 0.5 costs the architecture's MACs at the
kept widths and computes the seed normalised over the kept channels (the reference verify
uses) at two batch sizes and, where the export allows, two sequence lengths."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxmorph
from onnxmorph.graph import analyze
from onnxmorph.rewrite import zero_removed_channels
from tests.fixtures.transformers.architectures import family, macs
from tests.graph.test_attention_exports import (
    TOKENS,
    _runs_at,
    _zeroed_outputs,
    config,
    feeds,
    input_shapes,
    path,
)
from tests.rewrite._support import assert_close, assert_differs, keep_masks, run


@pytest.mark.parametrize("name", ["vit_op17_ts", "vit_op17_dynamo", "sdpa_op17_ts",
                                  "bert_op17_ts", "hfbert_op17_ts"])
def test_embedding_prunes_on_real_exports(name):
    result = onnxmorph.prune(path(name), method="l1", budget=0.5, round_to=1,
                             input_shapes=input_shapes(name), prune_embedding=True)
    assert result.extra["verify"]["passed"]
    section = result.structure["transformer"]
    cfg = config(name)
    embed = section["embedding"]["channels_after"]
    assert section["embedding"]["channels_before"] == cfg["hidden"] > embed
    heads = [a["heads_after"] for a in section["attention"]]
    mlp = [m["units_after"] for m in section["mlp"]]
    kind = "bert" if family(name) == "hfbert" else family(name)
    want = macs(kind, cfg, heads=heads, mlp=mlp, embed=embed)
    assert analyze(result.model, input_shapes(name)).macs == want
    assert result.analysis.cost.macs(result.alive * 1.0) == want

    analysis, seed = result.analysis, onnx.load(path(name))
    reference = zero_removed_channels(seed, analysis.channels.layouts, analysis.loaded.shapes,
                                      keep_masks(analysis, result.alive))
    checked = 0
    for tokens in ([TOKENS, TOKENS - 3] if input_shapes(name) else [None]):
        for batch in (1, 3):
            batch_feeds = feeds(name, batch, tokens or 0, seed=batch)
            if tokens != TOKENS and not _runs_at(seed, batch_feeds):
                continue
            want_out = _zeroed_outputs(reference, batch_feeds)  # sample by sample
            assert_close(run(result.model, batch_feeds), want_out, f"batch {batch}, T {tokens}")
            assert_differs(want_out, run(seed, batch_feeds), "reference vs seed")
            checked += 1
    assert checked == (4 if family(name) in ("sdpa", "hfbert") else 2)


def test_shape_of_the_embedding_read_for_its_batch_does_not_pin_it():
    """torchvision reads x.shape[0] of the patch tokens to expand the class token."""
    analysis = analyze(path("vit_op17_ts"), prune_embedding=True)
    shape = next(n for n in analysis.loaded.model.graph.node if n.op_type == "Shape"
                 and len(analysis.channels.layouts.get(n.input[0], np.empty(0)).axes) == 1
                 and analysis.channels.layouts[n.input[0]].size == 16)
    group = analysis.groups[int(analysis.channels.unit_group[
        analysis.channels.layouts[shape.input[0]].ids[0]])]
    assert group.prunable and group.channels == 16
