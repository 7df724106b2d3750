"""`prune --batch` (the deployment batch for the latency table and measurement), `finetune
--threads`, and the interleaved fastest-run timer the profiler uses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

import onnxmorph
from onnxmorph.cli.main import cli
from onnxmorph.errors import OnnxMorphError, PruningError
from onnxmorph.latency.cache import cache_dir
from onnxmorph.latency.measure import busy_warning, time_fastest
from tests.latency.fixtures import tiny_model

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_api_batch_reaches_the_table_and_the_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # A measured table's reachable ratio depends on the load: budget MACs, predict latency.
    result = onnxmorph.prune(tiny_model(True), method="l1", budget=0.5, latency_model="table",
                             batch=3, threads=1, measure_latency=True, round_to=1)
    latency = result.extra["latency"]
    assert latency["measured"]["batch"] == 3 and latency["measured"]["threads"] == 1
    assert latency["predicted"]["seed_ms"] > 0  # its value depends on the machine's load
    (table,) = cache_dir().glob("*.json")
    saved = json.loads(table.read_text())
    assert saved["key"]["batch"] == 3 and saved["key"]["threads"] == 1
    assert saved["info"]["load_average"]["start"] is not None
    with pytest.raises(PruningError, match="--batch"):
        onnxmorph.prune(tiny_model(True), method="l1", batch=0)
    with pytest.raises(OnnxMorphError, match="fixed batch of 1"):
        onnxmorph.prune(tiny_model(), method="l1", batch=2)


def test_roofline_prediction_grows_with_the_batch(tmp_path):
    reports = {}
    for batch in (1, 8):  # a named device: fixed constants (cpu measures its bandwidth)
        reports[batch] = onnxmorph.prune(
            tiny_model(True), method="uniform", target="latency", latency_model="roofline",
            latency_device="v100", budget=0.5, batch=batch).extra["latency"]["predicted"]
    # Activations and MACs scale with the batch, the weights read once do not.
    assert 4 * reports[1]["seed_ms"] < reports[8]["seed_ms"] < 8 * reports[1]["seed_ms"]


def test_cli_prune_batch_and_threads(tmp_path):
    seed = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(True), seed)
    out = tmp_path / "p.onnx"
    result = CliRunner().invoke(cli, ["prune", str(seed), "--method", "l1", "--batch", "4",
                                      "--threads", "1", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)["latency"]["measured"]
    assert measured["batch"] == 4 and measured["threads"] == 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(tiny_model(), fixed)
    refused = CliRunner().invoke(cli, ["prune", str(fixed), "--method", "l1", "--batch", "4",
                                       "-o", str(tmp_path / "never.onnx")])
    assert refused.exit_code == 2 and "fixed batch of 1" in refused.output
    assert not (tmp_path / "never.onnx").exists()
    table = tmp_path / "t.json"
    refused = CliRunner().invoke(cli, ["profile", str(fixed), "--batch", "4",
                                       "--latency-table", str(table)])
    assert refused.exit_code == 2 and "fixed batch of 1" in refused.output
    assert not table.exists()
    analyzed = CliRunner().invoke(cli, ["analyze", str(seed), "--latency-model", "roofline",
                                        "--batch", "4", "--threads", "1"])
    assert analyzed.exit_code == 0 and "ms predicted (roofline;" in analyzed.output


def test_finetune_threads_reach_the_training_session(tmp_path, monkeypatch):
    import onnxmorph.methods.gated as gated

    seen = {}

    def record(loaded, source, options, kind, teacher, steps, shapes):
        seen["threads"] = options.threads
        return loaded

    monkeypatch.setattr(gated, "finetune_training_copy", record)
    out = tmp_path / "tuned.onnx"
    result = CliRunner().invoke(cli, ["finetune", str(SAMPLES / "resnet_seed.onnx"), "--data",
                                      str(SAMPLES / "loader.py"), "--steps", "1", "--threads",
                                      "1", "--quiet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert seen == {"threads": 1} and out.exists()


class FakeSession:
    def __init__(self, name: str, durations: list[float], calls: list[str]) -> None:
        self.name, self.durations, self.calls = name, iter(durations), calls

    def run(self, _outputs, _feeds):
        self.calls.append(self.name)
        time.sleep(next(self.durations, 0.001))


def test_time_fastest_interleaves_and_keeps_the_fastest_run():
    calls: list[str] = []
    # A slow stretch (load) hits A's second and B's third run: the minimum ignores both.
    a = FakeSession("a", [0.001, 0.002, 0.03, 0.002, 0.002, 0.002, 0.002], calls)
    b = FakeSession("b", [0.001, 0.008, 0.008, 0.03, 0.008, 0.008, 0.008], calls)
    fastest = time_fastest([(a, {}), (b, {})], min_rounds=5, min_seconds=0.0)
    assert calls[:6] == ["a", "b", "a", "b", "a", "b"]  # warm-up, then rounds of both
    assert len(calls) == 12
    # Sleeps only ever run long (load), so the bounds below hold on a busy machine too.
    assert 2.0 <= fastest[0] < 30 and 8.0 <= fastest[1] < 30 and fastest[0] < fastest[1]


def test_busy_warning_only_above_the_core_count():
    import os

    cores = os.cpu_count() or 1
    assert busy_warning([None]) is None and busy_warning([cores * 0.5]) is None
    assert "busy" in busy_warning([0.1, cores + 4.0])
