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
