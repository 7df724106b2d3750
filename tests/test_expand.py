"""MorphNet's expand step: W = 1 changes nothing, W < 1 slices the lowest-norm channels,
W > 1 grows channels that start unused, so the outputs stay those of the input model."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import onnxmorph
from onnxmorph.cli.main import cli
from onnxmorph.errors import PruningError
from onnxmorph.methods.l1 import l1_unit_scores
from tests.onnx_builders import GraphBuilder

SAMPLES = ("samples/resnet_seed.onnx", "samples/mobilenet_seed.onnx")


def _run(model, batch: int = 3) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    return session.run(None, {"input": x})[0]


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("path", SAMPLES)
def test_width_one_changes_nothing(path):
    result = onnxmorph.expand(path, width=1.0)
    assert result.report["seed"] == result.report["expanded"]
    seed_weights = _weights(onnx.load(path))
    for name, value in _weights(result.model).items():
        np.testing.assert_array_equal(value, seed_weights[name])
    np.testing.assert_allclose(_run(result.model), _run(path), rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", SAMPLES)
def test_width_below_one_keeps_the_highest_l1_channels(path):
    analysis = onnxmorph.analyze(path)
    scores = l1_unit_scores(analysis)
    result = onnxmorph.expand(path, width=0.5, round_to=1)
    for group in analysis.channels.prunable_groups():
        before, after = result.report["channels"][str(group.id)]
        assert after == max(1, round(group.channels * 0.5))
    after = onnxmorph.analyze(result.model)
    assert after.macs < analysis.macs
    # Same as slicing exactly those channels: the zeroed seed must match the expanded model.
    alive = np.ones(analysis.channels.num_units, dtype=bool)
    for group in analysis.channels.prunable_groups():
        order = group.units[np.argsort(-scores[group.units], kind="stable")]
        alive[order[max(1, round(group.channels * 0.5)):]] = False
    expected = onnxmorph.rewrite.slice_channels(analysis, alive).model
    np.testing.assert_allclose(_run(result.model), _run(expected), rtol=0, atol=1e-6)
    report = onnxmorph.verify(analysis, result.model)
    assert report.passed


@pytest.mark.parametrize("path", SAMPLES)
def test_width_above_one_keeps_the_outputs(path):
    result = onnxmorph.expand(path, width=1.5, round_to=1)
    onnx.checker.check_model(result.model, full_check=True)
    seed = onnxmorph.analyze(path)
    grown = onnxmorph.analyze(result.model)
    assert grown.macs > 1.9 * seed.macs  # bilinear: about 1.5² for plain convs
    assert result.report["not_grown"] == {}
    for group in seed.channels.prunable_groups():
        before, after = result.report["channels"][str(group.id)]
        assert after == round(before * 1.5)
    np.testing.assert_allclose(_run(result.model), _run(path), rtol=1e-5, atol=1e-5)
    # New channels really compute something (random incoming weights), unused for now.
    assert any(v.size and np.abs(v).max() > 0 for v in _weights(result.model).values())


def test_budget_finds_the_largest_width_that_fits():
    path = SAMPLES[0]
    seed = onnxmorph.analyze(path)
    result = onnxmorph.expand(path, budget=2.0)
    assert 1.0 < result.width < 1.5
    assert result.report["expanded"]["macs"] <= 2.0 * seed.macs
    wider = onnxmorph.expand(path, width=result.width + 0.05)
    assert wider.report["expanded"]["macs"] > 2.0 * seed.macs * 0.97


def test_grouped_conv_keeps_its_width_and_says_why():
    b = GraphBuilder(0)
    x = b.input("x", [1, 8, 8, 8])
    t = b.conv_bn_relu(x, 16, name="c1")
    t = b.conv_bn_relu(t, 16, group=4, name="grouped")
    t = b.conv_bn_relu(t, 8, name="c3")
    model = b.model([b.gemm(b.flatten(b.gap(t)), 4, name="fc")])
    result = onnxmorph.expand(model, width=2.0)
    assert any("Conv" in why for why in result.report["not_grown"].values())
    onnx.checker.check_model(result.model, full_check=True)
    x_value = np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {"x": x_value})[0] for m in (model, result.model)]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"width": 1.0, "budget": 1.0}, {"width": 0.0},
                                    {"width": 9.0}, {"budget": -1.0}])
def test_bad_arguments(kwargs):
    with pytest.raises(PruningError):
        onnxmorph.expand(SAMPLES[0], **kwargs)


def test_cli_expand(tmp_path):
    out = tmp_path / "wide.onnx"
    runner = CliRunner()
    ok = runner.invoke(cli, ["expand", SAMPLES[0], "--width", "1.25", "-o", str(out), "--json"])
    assert ok.exit_code == 0, ok.output
    assert out.exists() and (tmp_path / "wide.report.json").exists()
    bad = runner.invoke(cli, ["expand", SAMPLES[0], "-o", str(tmp_path / "x.onnx")])
    assert bad.exit_code == 2
    assert "exactly one of --width and --budget" in bad.output
    assert not (tmp_path / "x.onnx").exists()
