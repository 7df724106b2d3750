"""`--round-to auto`: the runtime's channel block, per group, with the budget still met."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxmorph
from onnxmorph.errors import PruningError
from onnxmorph.latency.runtime import channel_block
from onnxmorph.methods.select import resolve_round_to

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_block_follows_the_vector_width():
    assert channel_block(flags=frozenset({"avx", "avx2", "fma", "avx512f"})) == 16
    assert channel_block(flags=frozenset({"avx", "avx2", "fma"})) == 8
    assert resolve_round_to("auto") == channel_block()
    assert resolve_round_to("4") == 4 and resolve_round_to(1) == 1
    with pytest.raises(PruningError, match="--round-to"):
        resolve_round_to("fast")


@pytest.mark.parametrize("method", ["l1", "uniform"])
def test_auto_rounding_keeps_blocks_where_the_seed_had_them(method):
    block = channel_block()
    result = onnxmorph.prune(str(SAMPLES / "resnet_seed.onnx"), method=method, budget=0.5)
    assert result.costs["ratio"]["macs"] <= 0.5 + 1e-9
    assert result.extra["round_to"] == f"auto ({block})"
    for group in result.analysis.channels.prunable_groups():
        kept = int(result.alive[group.units].sum())
        # A group of one block is rounded finer on purpose (SelectionRules.step): it could
        # otherwise never shrink. That happens on AVX-512 machines (block 16) with 16-wide layers.
        if group.channels % block == 0 and group.channels > block:
            assert kept % block == 0, (group.id, group.channels, kept)
    plain = onnxmorph.prune(str(SAMPLES / "resnet_seed.onnx"), method=method, budget=0.5,
                            round_to=1)
    counts = [int(plain.alive[g.units].sum()) for g in plain.analysis.channels.prunable_groups()]
    assert any(c % block for c in counts)  # without rounding some widths fall off the block
    assert not np.array_equal(plain.alive, result.alive)
