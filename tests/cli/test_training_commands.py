"""`prune --data`, `finetune` and `eval` through the CLI, on a tiny slice of the sample data."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxmorph.cli.main import cli
from tests.sample_loaders import write_sample_loader

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RESNET = str(SAMPLES / "resnet_seed.onnx")


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_loaders")
    return {name: write_sample_loader(folder / f"{name}.py", labeled=name == "labeled")
            for name in ("labeled", "unlabeled")}


def _logits(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_prune_with_data_writes_a_gate_free_model_and_a_log(loaders, tmp_path):
    out, log = tmp_path / "p.onnx", tmp_path / "train.jsonl"
    result = CliRunner().invoke(cli, [
        "prune", RESNET, "--data", str(loaders["labeled"]), "--budget", "0.5", "--steps", "10",
        "--finetune-steps", "2", "-o", str(out), "--log", str(log), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == "gates" and report["ratio"]["macs"] <= 0.51
    assert report["accuracy_before"] is not None and report["accuracy_after"] is not None
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows and {"step", "task_loss", "cost", "lambda", "alive"} <= set(rows[0])
    model = onnx.load(str(out))
    assert not any("onnxmorph_gate" in n.name for n in model.graph.node)


def test_finetune_changes_weights_and_keeps_the_graph(loaders, tmp_path):
    out = tmp_path / "tuned.onnx"
    result = CliRunner().invoke(cli, ["finetune", RESNET, "--data", str(loaders["labeled"]),
                                      "--steps", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output
    seed, tuned = onnx.load(RESNET), onnx.load(str(out))
    assert [n.op_type for n in seed.graph.node] == [n.op_type for n in tuned.graph.node]
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert not np.allclose(_logits(RESNET, x), _logits(out, x))


def test_finetune_without_labels_distills(loaders, tmp_path):
    out = tmp_path / "distilled.onnx"
    result = CliRunner().invoke(cli, ["finetune", RESNET, "--data", str(loaders["unlabeled"]),
                                      "--steps", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_eval_reports_accuracy_agreement_and_latency(loaders):
    result = CliRunner().invoke(cli, ["eval", RESNET, "--data", str(loaders["labeled"]),
                                      "--reference", RESNET, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert 0.0 <= report["accuracy"] <= 1.0
    assert report["agreement"] == 1.0  # a model always agrees with itself
    assert report["samples"] == 128 and report["latency_ms"] > 0


@pytest.mark.parametrize("command", [["finetune", RESNET], ["eval", RESNET]])
def test_missing_loader_is_a_clear_error(command, tmp_path):
    result = CliRunner().invoke(cli, [*command, "--data", str(tmp_path / "nope.py")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output
