"""`--method gamma` and `--method group-lasso` end to end: the controller steers λ to the
budget, the result is sliced from the trained weights and verified, clear refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import onnxmorph
from onnxmorph.cli.main import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from regularizer_models import write_net_and_loader  # noqa: E402
from sample_loaders import SAMPLES, write_sample_loader  # noqa: E402


@pytest.mark.parametrize("method, net, lr", [("gamma", {"gamma_scale": 0.1}, 0.01),
                                             ("group-lasso", {"batchnorm": False}, 0.02)])
def test_controller_reaches_the_budget_while_learning(tmp_path, method, net, lr):
    path, loader = write_net_and_loader(tmp_path, **net)
    result = onnxmorph.prune(str(path), method=method, data=str(loader), budget=0.5,
                             round_to=1, training={"steps": 40, "learning_rate": lr})
    history = result.extra["learned"]["history"]
    ratios = [row["alive_cost_ratio"] for row in history]
    assert ratios[0] == 1.0 and min(ratios) <= 0.5  # the thresholded structure got there
    for row, after in zip(history, history[1:]):  # λ grows over budget, is off under it
        if row["alive_cost_ratio"] > 0.5:
            assert after["lambda"] > row["lambda"] or row["lambda"] == 0.0
        else:
            assert after["lambda"] == 0.0
    assert history[0]["cost"] == pytest.approx(1.0, rel=1e-5)  # the term starts at 1
    assert result.report()["ratio"]["macs"] <= 0.5
    assert result.extra["verify_regularized_slice"]["passed"]
    assert result.extra["postconditions"]  # the trained model was checked before returning
    assert result.model.graph.output[0].name == "logits"
    assert not [i.name for i in result.model.graph.input if i.name.startswith("onnxmorph")]


def test_fixed_strength_keeps_lambda(tmp_path):
    path, loader = write_net_and_loader(tmp_path)
    result = onnxmorph.prune(str(path), method="gamma", data=str(loader), budget=0.7,
                             training={"steps": 6, "strength": 0.25})
    assert {row["lambda"] for row in result.extra["learned"]["history"]} == {0.25}
    assert result.report()["ratio"]["macs"] <= 0.7


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args)


def test_gamma_refuses_a_model_without_batchnorm(tmp_path):
    path, loader = write_net_and_loader(tmp_path, batchnorm=False)
    before = path.read_bytes()
    out = tmp_path / "out.onnx"
    result = _invoke(["prune", str(path), "--data", str(loader), "--method", "gamma",
                      "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "BatchNormalization" in lines[0] and "group-lasso" in lines[0]
    assert "Traceback" not in result.output and not out.exists()
    assert path.read_bytes() == before


@pytest.mark.parametrize("method", ["gamma", "group-lasso"])
def test_refusals_before_training(tmp_path, method):
    path, loader = write_net_and_loader(tmp_path)
    no_data = _invoke(["prune", str(path), "--method", method, "-o", str(tmp_path / "b.onnx")])
    assert no_data.exit_code == 2 and "needs data" in no_data.output, no_data.output
    assert not list(tmp_path.glob("[ab].*"))


@pytest.mark.parametrize("method, model", [("gamma", "resnet_seed.onnx"),
                                           ("group-lasso", "mobilenet_seed.onnx")])
def test_cli_on_the_samples(tmp_path, method, model):
    loader = write_sample_loader(tmp_path / "loader.py")
    out = tmp_path / "pruned.onnx"
    result = _invoke(["prune", str(SAMPLES / model), "--data", str(loader), "--method", method,
                      "--budget", "0.5", "--steps", "3", "--finetune-steps", "1",
                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["method"] == method and report["ratio"]["macs"] <= 0.5
    assert report["verify_regularized_slice"]["passed"]
    assert report["regularized_units"] > 0 and len(report["learned"]["history"]) == 2
    pruned = onnx.load(out)
    seed = onnx.load(SAMPLES / model)
    assert len(pruned.graph.node) <= len(seed.graph.node)
    assert sum(np.prod(i.dims) for i in pruned.graph.initializer) < \
        sum(np.prod(i.dims) for i in seed.graph.initializer)
