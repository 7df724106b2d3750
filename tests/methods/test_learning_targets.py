"""gdp, gamma and group-lasso under every --target: params, and latency priced by the same
latency model as the gates (a table here), each per-unit weight from that cost model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import onnxmorph
from onnxmorph.graph.analysis import analyze
from tests.latency.fixtures import synthetic_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from regularizer_models import write_net_and_loader  # noqa: E402

METHODS = [("gdp", {}, 0.02), ("gamma", {"gamma_scale": 0.1}, 0.01),
           ("group-lasso", {"batchnorm": False}, 0.02)]


@pytest.mark.parametrize("method, net, lr", METHODS)
def test_latency_target_reaches_the_budget(tmp_path, method, net, lr):
    path, loader = write_net_and_loader(tmp_path, **net)
    table = synthetic_table(analyze(str(path)), step=1).save(tmp_path / "latency.json")
    result = onnxmorph.prune(str(path), method=method, data=str(loader), target="latency",
                             budget=0.6, round_to=1, latency_table=str(table),
                             training={"steps": 40, "learning_rate": lr})
    predicted = result.extra["latency"]["predicted"]
    assert predicted["ratio"] <= 0.6
    history = result.extra["learned"]["history"]
    assert history[0]["alive_cost_ratio"] == 1.0 and history[-1]["alive_cost_ratio"] <= 0.6
    assert result.report()["ratio"]["macs"] < 1.0


@pytest.mark.parametrize("method, net, lr", METHODS)
def test_params_target_reaches_the_budget(tmp_path, method, net, lr):
    path, loader = write_net_and_loader(tmp_path, **net)
    result = onnxmorph.prune(str(path), method=method, data=str(loader), target="params",
                             budget=0.6, round_to=1, training={"steps": 40, "learning_rate": lr})
    assert result.report()["ratio"]["params"] <= 0.6
    assert result.extra["learned"]["history"][-1]["alive_cost_ratio"] <= 0.6


def test_cli_prunes_for_latency_with_a_regularizer(tmp_path):
    import json

    from click.testing import CliRunner

    from onnxmorph.cli.main import cli

    path, loader = write_net_and_loader(tmp_path, batchnorm=False)
    table = synthetic_table(analyze(str(path)), step=1).save(tmp_path / "latency.json")
    out = tmp_path / "pruned.onnx"
    result = CliRunner().invoke(cli, [
        "prune", str(path), "--data", str(loader), "--method", "group-lasso", "--target",
        "latency", "--latency-table", str(table), "--budget", "0.6", "--round-to", "1",
        "--steps", "40", "--lr", "0.02", "--finetune-steps", "2", "--optimizer", "ranger",
        "--no-measure-latency", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["target"] == "latency" and report["method"] == "group-lasso"
    assert report["latency"]["predicted"]["ratio"] <= 0.6
    assert report["verify_regularized_slice"]["passed"]
