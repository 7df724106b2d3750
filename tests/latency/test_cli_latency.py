"""`profile`, `prune --target latency`, `analyze --latency-model` from the command line."""

from __future__ import annotations

import json

import onnx
from click.testing import CliRunner

from onnxmorph.cli.main import cli
from onnxmorph.graph.analysis import analyze
from tests.latency.fixtures import synthetic_table, tiny_model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_profile_then_prune_to_a_latency_budget(tmp_path):
    seed = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), seed)
    table = tmp_path / "table.json"
    profiled = invoke("profile", seed, "--threads", "1", "--latency-table", table, "--json")
    assert profiled.exit_code == 0, profiled.output
    info = json.loads(profiled.stdout)
    assert info["measured_now"] and info["layers"] == 4 and table.exists()
    again = json.loads(invoke("profile", seed, "--threads", "1", "--latency-table", table,
                              "--json").stdout)
    assert not again["measured_now"]
    # Pruning reads the table given; a synthetic one keeps the budget independent of load.
    synthetic = synthetic_table(analyze(str(seed))).save(tmp_path / "synthetic.json")
    out = tmp_path / "fast.onnx"
    pruned = invoke("prune", seed, "--method", "l1", "--target", "latency", "--budget", "0.6",
                    "--latency-table", synthetic, "--threads", "1", "--round-to", "1",
                    "-o", out, "--json")
    assert pruned.exit_code == 0, pruned.output
    report = json.loads(pruned.stdout)
    assert report["target"] == "latency"
    assert report["latency"]["predicted"]["ratio"] <= 0.6 + 1e-9
    measured = report["latency"]["measured"]
    assert measured["seed_ms"] > 0 and measured["pruned_ms"] > 0
    analyzed = invoke("analyze", seed, "--latency-table", table)
    assert "ms predicted (table; ops other than weight layers:" in analyzed.stdout
    assert "NOT PRICED" not in analyzed.stdout  # a measured table prices every op


def test_roofline_prune_summary_and_bad_table(tmp_path):
    seed = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), seed)
    result = invoke("prune", seed, "--method", "uniform", "--target", "latency",
                    "--latency-model", "roofline", "--latency-device", "v100", "--budget",
                    "0.5", "-o", tmp_path / "u.onnx")
    assert result.exit_code == 0, result.output
    assert "latency predicted" in result.stdout and "other ops" in result.stdout
    assert "latency measured" in result.stdout and "speed-up" in result.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    out = tmp_path / "never.onnx"
    failed = CliRunner().invoke(cli, ["prune", str(seed), "--target", "latency",
                                      "--latency-table", str(bad), "-o", str(out)])
    assert failed.exit_code == 2 and "cannot read latency table" in failed.output
    assert not out.exists()
