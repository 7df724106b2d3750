"""Every loader batch is checked through the CLI: labels against the model's output width,
label shape and kind, finite values; each failure is one line and exit code 2."""

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnxmorph.cli.main import cli
from onnxmorph.errors import DataError
from onnxmorph.training.data import Batch
from onnxmorph.training.progress import Progress
from onnxmorph.training.trainer import choose_loss

RESNET = str(Path(__file__).resolve().parents[2] / "samples" / "resnet_seed.onnx")

# Three good batches for the 10-class sample model; `BAD` replaces batch BAD_AT.
_LOADER = """
import numpy as np
rng = np.random.default_rng(0)
def _batch():
    return rng.normal(size=(4, 1, 28, 28)).astype(np.float32), np.arange(4, dtype=np.int64)
def train_batches():
    for i in range(3):
        x, y = _batch()
        if i == {bad_at}:
            {bad}
        yield x, y
"""

CASES = {
    "label 50": ("y = np.full(4, 50, np.int64)", r"labels range from 50 to 50, but the model's "
                 r"output has 10 classes \(0\.\.9\)"),
    "label -3": ("y = np.array([0, -3, 1, 2])", r"labels range from -3 to 2"),
    "one-hot": ("y = np.eye(10, dtype=np.int64)[y]", r"integer labels have shape \(4, 10\); "
                r"yield class indices of shape \(N,\) \(one-hot labels\? yield labels.argmax"),
    "all NaN": ("x = np.full_like(x, np.nan)", r"input 'input' has 3136 NaN or inf values"),
    "inf": ("x[0, 0, 0, 0] = np.inf", r"input 'input' has 1 NaN or inf values"),
    "labels switch kind": ("y = y.astype(np.float32)", r"labels are float but earlier batches "
                           r"had integer labels"),
}


def _loader(tmp_path, case: str, bad_at: int) -> Path:
    path = tmp_path / "loader.py"
    path.write_text(_LOADER.format(bad_at=bad_at, bad=CASES[case][0]))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_eval_refuses_a_bad_later_batch(tmp_path, case):
    result = CliRunner().invoke(cli, ["eval", RESNET, "--data", str(_loader(tmp_path, case, 2))])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "batch 2" in lines[0], result.output
    assert re.search(CASES[case][1], lines[0]), lines[0]


@pytest.mark.parametrize("command", ["prune", "finetune"])
def test_training_commands_refuse_out_of_range_labels(tmp_path, command):
    out = tmp_path / "out.onnx"
    loader = _loader(tmp_path, "label 50", 1)  # a batch met during training, not the first
    extra = ["--steps", "3"] if command == "finetune" else [
        "--method", "l1", "--finetune-steps", "3"]
    result = CliRunner().invoke(cli, [command, RESNET, "--data", str(loader), "-o", str(out),
                                      "--quiet", *extra])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "onnxmorph: error: train_batches() batch 1: labels range from 50 to 50, but the model's "
        "output has 10 classes (0..9); check the loader's labels"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loader.py"]


@pytest.mark.parametrize("command", [
    ["prune", "--method", "taylor", "--calibration-batches", "3"],  # calibration only
    ["sensitivity", "--method", "l1"],  # evaluation batches (train_batches: no eval_batches)
])
@pytest.mark.parametrize("case", ["label 50", "label -3"])
def test_calibration_and_sensitivity_check_labels_like_training(tmp_path, command, case):
    out = tmp_path / "out.onnx"
    loader = _loader(tmp_path, case, 1)  # not the first batch
    result = CliRunner().invoke(cli, [command[0], RESNET, *command[1:], "--data", str(loader),
                                      "-o", str(out), "--finetune-steps", "0"]
                                if command[0] == "prune" else
                                [command[0], RESNET, *command[1:], "--data", str(loader),
                                 "-o", str(tmp_path / "out.json")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "train_batches() batch 1" in lines[0], lines
    assert re.search(CASES[case][1], lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loader.py"]


def test_soft_labels_are_refused_unless_mse_is_asked_for():
    soft = np.full((4, 10), 0.1, np.float32)
    batch = Batch({"input": np.zeros((4, 1, 28, 28), np.float32)}, soft)
    with pytest.raises(DataError, match=r"one-hot or soft class labels.*--loss mse"):
        choose_loss("auto", batch)
    assert choose_loss("mse", batch) == "mse"
    with pytest.raises(DataError, match=r"--loss cross-entropy needs integer class indices"):
        choose_loss("cross-entropy", batch)
    regression = Batch(batch.inputs, np.random.default_rng(0).normal(size=(4, 10)))
    assert choose_loss("auto", regression) == "mse"


def test_progress_lines_without_a_terminal_show_rate_and_time_left(capsys):
    progress = Progress(50, "fine-tune", every=25)
    for step in range(50):
        progress.update(step, loss=0.5)
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("fine-tune step 25/50  loss 0.5  ")
    assert "step/s" in lines[0] and lines[0].endswith("left")
    quiet = Progress(50, "fine-tune", enabled=False)
    quiet.update(49, loss=0.5)
    assert capsys.readouterr().err == ""
