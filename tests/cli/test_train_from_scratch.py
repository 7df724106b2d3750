"""`train-from-scratch`, `finetune --reinit`, `prune --reinit` and the API behind them."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import onnxmorph
from onnxmorph.cli.main import cli
from onnxmorph.errors import TrainingError
from onnxmorph.train_api import epoch_steps, train_from_scratch
from tests.sample_loaders import write_sample_loader

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RESNET = str(SAMPLES / "resnet_seed.onnx")


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    return write_sample_loader(tmp_path_factory.mktemp("scratch") / "labeled.py")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _weights(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_cli_trains_the_structure_from_scratch(loader, tmp_path):
    out, log = tmp_path / "s.onnx", tmp_path / "s.jsonl"
    result = invoke("train-from-scratch", RESNET, "--data", loader, "--steps", "24",
                    "--loss", "cross-entropy", "--lr", "5e-3", "-o", out, "--log", log,
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert "accuracy:" in result.output and f"wrote model: {out}" in result.output
    seed, trained = onnx.load(RESNET), onnx.load(out)
    # Same structure, new weights: nothing of the seed's convolution weights is left.
    assert [n.op_type for n in trained.graph.node] == [n.op_type for n in seed.graph.node]
    before, after = _weights(seed), _weights(trained)
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    conv = next(n.input[1] for n in seed.graph.node if n.op_type == "Conv")
    assert np.corrcoef(before[conv].ravel(), after[conv].ravel())[0, 1] < 0.5
    # Training from fresh weights lowers the loss: ln(10) ≈ 2.3 at the start.
    losses = [json.loads(line)["task_loss"] for line in log.read_text().splitlines()]
    assert len(losses) == 24 and losses[0] > 1.9
    assert np.mean(losses[-4:]) < 0.85 * np.mean(losses[:4])


def test_api_is_seeded_and_counts_epochs(loader):
    assert epoch_steps(loader, RESNET, 2) == 8  # 128 images in batches of 32
    training = {"loss": "cross-entropy", "progress": False}
    a = train_from_scratch(RESNET, data=loader, epochs=1, training=training)
    b = train_from_scratch(RESNET, data=loader, steps=4, training=training)
    assert a.report["steps"] == 4 and a.report["epochs"] == 1 and a.report["reinit"] is True
    for name, value in _weights(a.model).items():
        np.testing.assert_array_equal(value, _weights(b.model)[name])
    with pytest.raises(TrainingError, match="either --steps or --epochs"):
        train_from_scratch(RESNET, data=loader, training=training)


def test_prune_reinit_trains_the_pruned_structure_from_scratch(loader, tmp_path):
    out = tmp_path / "p.onnx"
    result = invoke("prune", RESNET, "--method", "uniform", "--budget", "0.5", "--data", loader,
                    "--finetune-steps", "6", "--reinit", "-o", out, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["reinit"] is True and report["ratio"]["macs"] <= 0.51
    assert report["postconditions"]["passed"] is True
    plain = onnxmorph.prune(RESNET, method="uniform", budget=0.5)  # the same slice, no data
    assert {k: v.shape for k, v in _weights(onnx.load(out)).items()} == \
        {k: v.shape for k, v in _weights(plain.model).items()}


@pytest.mark.parametrize("args", [
    ["prune", RESNET, "--method", "l1", "--reinit"],  # nothing trains without data
    ["train-from-scratch", RESNET, "--data", "x.py"],  # neither --steps nor --epochs
    ["train-from-scratch", RESNET, "--data", "x.py", "--epochs", "0"],
])
def test_refused_in_one_line(args, tmp_path):
    result = invoke(*args, "-o", tmp_path / "o.onnx")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.onnx").exists()
