"""verify's tolerance: |a-b| <= atol + rtol*|b| element by element, atol scaled by the
output's size by default, and a fixed batch run twice with different inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import onnxmorph
from onnxmorph.cli.main import cli
from onnxmorph.rewrite.verify import AUTO_ATOL, DEFAULT_RTOL, auto_atol, compare_outputs
from tests.onnx_builders import GraphBuilder

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _passes(have, want, atol=None, rtol=DEFAULT_RTOL) -> bool:
    want, have = np.asarray(want, np.float32), np.asarray(have, np.float32)
    used = auto_atol(want) if atol is None else atol
    return compare_outputs(have, want, used, rtol)[1] <= 0


def test_outputs_near_zero_are_judged_by_atol_not_by_their_own_scale():
    # A text detector's map: every value ~6e-8, sliced result off by 3e-8 (the old relative
    # check said 0.5 and failed it).
    want = np.full((1, 1, 8, 8), 6e-8)
    assert _passes(want + 3e-8, want)
    assert not _passes(want + 3e-8, want, atol=1e-9, rtol=0.0)


def test_float32_noise_of_large_outputs_passes_and_real_differences_fail():
    want = np.array([700.0, 0.015, -350.0])
    assert auto_atol(want.astype(np.float32)) == pytest.approx(AUTO_ATOL * 700)
    assert _passes(want + [4e-5, 8e-5, -3e-5], want)  # ResNet-50 light's rounding
    assert not _passes(want + [0.0, 0.5, 0.0], want)  # a channel that should not be there
    assert not _passes([1.0, 2.01], [1.0, 2.0])  # 0.01 > 1e-5 + 1e-3 * 2


def test_nan_and_inf_must_match():
    assert _passes([np.nan, np.inf, 1.0], [np.nan, np.inf, 1.0])
    assert not _passes([np.nan, 1.0], [0.0, 1.0])
    assert not _passes([0.0, 1.0], [np.nan, 1.0])
    assert not _passes([np.inf], [-np.inf])


def test_fixed_batch_runs_twice_at_that_batch(tmp_path):
    b = GraphBuilder(0)
    x = b.input("x", [2, 3, 8, 8])
    y = b.node("Conv", [b.node("Relu", [b.node("Conv", [x, b.weight([8, 3, 3, 3], "w1")],
                                               name="c1", kernel_shape=[3, 3])], name="r1"),
                        b.weight([4, 8, 1, 1], "w2")], name="c2", kernel_shape=[1, 1])
    seed = b.model([y])
    result = onnxmorph.prune(seed, method="l1", budget=0.5)
    assert result.extra["verify"]["batch_sizes"] == [2, 2]
    assert result.extra["verify"]["passed"]
    assert onnx.load_from_string(result.model.SerializeToString()).graph.input[0] \
        .type.tensor_type.shape.dim[0].dim_value == 2


def test_cli_prints_both_tolerances(tmp_path):
    out = tmp_path / "p.onnx"
    runner = CliRunner()
    pruned = runner.invoke(cli, ["prune", str(SAMPLES / "resnet_seed.onnx"), "--method", "l1",
                                 "-o", str(out)])
    assert pruned.exit_code == 0, pruned.output
    assert "verify: passed" in pruned.stdout and "rtol 0.001" in pruned.stdout
    result = runner.invoke(cli, ["verify", str(SAMPLES / "resnet_seed.onnx"), str(out),
                                 "--atol", "0.5", "--rtol", "0.25"])
    assert result.exit_code == 0
    assert "atol 0.5 + rtol 0.25" in result.stdout and "batch sizes 1, 3" in result.stdout
    strict = runner.invoke(cli, ["verify", str(SAMPLES / "resnet_seed.onnx"), str(out),
                                 "--atol", "0", "--rtol", "0"])
    assert strict.exit_code in (0, 1)  # exact equality may or may not hold in float32
    assert strict.stdout.startswith("passed" if strict.exit_code == 0 else "FAILED")
