"""--optimizer ranger and --lr-schedule through the prune and finetune commands."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxmorph.cli.main import cli
from onnxmorph.training.schedules import learning_rate
from tests.sample_loaders import write_sample_loader

RESNET = str(Path(__file__).resolve().parents[2] / "samples" / "resnet_seed.onnx")


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    return write_sample_loader(tmp_path_factory.mktemp("optim") / "labeled.py")


def test_prune_with_ranger_and_one_cycle_reaches_the_budget(loader, tmp_path):
    out, log = tmp_path / "p.onnx", tmp_path / "train.jsonl"
    result = CliRunner().invoke(cli, [
        "prune", RESNET, "--data", str(loader), "--budget", "0.5", "--steps", "6",
        "--finetune-steps", "4", "--optimizer", "ranger", "--lr-schedule", "one-cycle",
        "--lr", "0.01", "-o", str(out), "--log", str(log), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ratio"]["macs"] <= 0.51 and report["accuracy_after"] is not None
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    rates = [r["learning_rate"] for r in rows if r.get("phase") == "finetune"]
    assert rates == pytest.approx([learning_rate("one-cycle", 0.01, s, 4) for s in range(4)])


def test_finetune_with_ranger_changes_the_weights(loader, tmp_path):
    out = tmp_path / "tuned.onnx"
    result = CliRunner().invoke(cli, ["finetune", RESNET, "--data", str(loader), "--steps", "3",
                                      "--optimizer", "ranger", "--lr-schedule", "constant",
                                      "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    seed = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(RESNET).graph.initializer}
    tuned = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    assert any(not np.allclose(seed[n], tuned[n]) for n in seed if n in tuned)


def test_finetune_follows_the_cosine_schedule_by_default(loader, tmp_path):
    log = tmp_path / "log.jsonl"
    result = CliRunner().invoke(cli, ["finetune", RESNET, "--data", str(loader), "--steps", "3",
                                      "--lr", "0.01", "--log", str(log), "--no-verify",
                                      "-o", str(tmp_path / "t.onnx"), "--quiet"])
    assert result.exit_code == 0, result.output
    rates = [json.loads(line)["learning_rate"] for line in log.read_text().splitlines()]
    assert rates == pytest.approx([learning_rate("cosine", 0.01, s, 3) for s in range(3)])


def test_unknown_schedule_is_refused_by_the_cli(loader, tmp_path):
    result = CliRunner().invoke(cli, ["finetune", RESNET, "--data", str(loader),
                                      "--lr-schedule", "linear", "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "linear" in result.output
