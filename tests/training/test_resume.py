"""`prune --resume`: a run interrupted by SIGINT/SIGTERM continues from its checkpoint and ends
where an uninterrupted run with the same seed ends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxmorph.cli.main import cli
from tests.onnx_builders import GraphBuilder

# Draws are counted across every train_batches() call of one import of the loader (a fresh
# module per run, like a fresh process); at draw STOP_AT the loader signals its own process,
# i.e. during the training step that consumes that batch. Epochs reshuffle with their own seed.
_LOADER = """
import os, signal
import numpy as np
rng = np.random.default_rng(1)
X = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
Y = (np.arange(64) % 2).astype(np.int64)
X[Y == 1, :, :4, :] += 1.5
_epoch = 0
_drawn = 0
def train_batches():
    global _epoch, _drawn
    order = np.random.default_rng(_epoch).permutation(64)
    _epoch += 1
    for i in range(0, 64, 16):
        _drawn += 1
        if _drawn == int(os.environ.get("STOP_AT", "-1")):
            os.kill(os.getpid(), int(os.environ["STOP_SIG"]))
        yield X[order[i:i + 16]], Y[order[i:i + 16]]
def eval_batches():
    yield X, Y
"""
STEPS, FINETUNE = 10, 6  # the peek at the first batch is draw 1; gate step k is draw k + 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    b = GraphBuilder(0)
    t = b.conv_bn_relu(b.input("x", ["N", 1, 8, 8]), 8, name="conv1")
    t = b.conv_bn_relu(t, 8, name="conv2")
    model = folder / "small.onnx"
    onnx.save(b.model([b.gemm(b.flatten(b.gap(t)), 2, name="fc")]), str(model))
    loader = folder / "loader.py"
    loader.write_text(_LOADER)
    reference = folder / "reference.onnx"
    result = CliRunner().invoke(cli, _args(model, loader, reference, folder / "ref.jsonl"))
    assert result.exit_code == 0, result.output
    return model, loader, folder


def _args(model, loader, out, log, *extra):
    return ["prune", str(model), "--data", str(loader), "--budget", "0.6", "--steps", str(STEPS),
            "--finetune-steps", str(FINETUNE), "--checkpoint-every", "3", "--lr", "0.02",
            "-o", str(out), "--log", str(log), "--quiet", *extra]


def _assert_same_result(out: Path, reference: Path, log: Path, reference_log: Path) -> None:
    structure = json.loads(out.with_suffix(".structure.json").read_text())
    assert structure == json.loads(reference.with_suffix(".structure.json").read_text())
    ours, theirs = onnx.load(str(out)), onnx.load(str(reference))
    assert [i.name for i in ours.graph.initializer] == [i.name for i in theirs.graph.initializer]
    for a, b in zip(ours.graph.initializer, theirs.graph.initializer):
        np.testing.assert_allclose(numpy_helper.to_array(a), numpy_helper.to_array(b),
                                   rtol=1e-5, atol=1e-6, err_msg=a.name)
    report = json.loads(out.with_suffix(".report.json").read_text())
    expected = json.loads(reference.with_suffix(".report.json").read_text())
    assert report["accuracy_after"] == pytest.approx(expected["accuracy_after"], abs=1e-9)
    rows, expected_rows = (p.read_text().splitlines() for p in (log, reference_log))
    assert [json.loads(r)["step"] for r in rows] == [json.loads(r)["step"] for r in expected_rows]
    for row, want in zip(rows, expected_rows):
        row, want = json.loads(row), json.loads(want)
        assert row["phase"] == want["phase"]
        assert row["task_loss"] == pytest.approx(want["task_loss"], rel=1e-4, abs=1e-6)


def test_sigint_during_structure_learning_then_resume(setup, tmp_path, monkeypatch):
    model, loader, folder = setup
    out, log = tmp_path / "out.onnx", tmp_path / "train.jsonl"
    work = tmp_path / "out.onnx.onnxmorph-work"
    monkeypatch.setenv("STOP_SIG", "2")
    monkeypatch.setenv("STOP_AT", str(4 + 2))  # during gate step 4: checkpoint after 5 steps
    result = CliRunner().invoke(cli, _args(model, loader, out, log))
    assert result.exit_code == 130, result.output
    assert "structure learning step 5" in result.output and "--resume" in result.output
    assert not out.exists() and (work / "gates").is_dir()
    assert log.read_text().endswith("\n")  # whole lines only
    monkeypatch.delenv("STOP_AT")

    # Other arguments are refused, and the checkpoint stays for a correct --resume.
    other = CliRunner().invoke(cli, _args(model, loader, out, log, "--resume", "--seed", "3"))
    assert other.exit_code == 2 and "seed was 0" in other.output
    assert len(other.output.strip().splitlines()) == 1 and (work / "gates").is_dir()

    result = CliRunner().invoke(cli, _args(model, loader, out, log, "--resume"))
    assert result.exit_code == 0, result.output
    _assert_same_result(out, folder / "reference.onnx", log, folder / "ref.jsonl")
    assert not work.exists()  # the default workdir is removed on success


def test_sigterm_during_finetuning_in_a_subprocess_then_resume(setup, tmp_path):
    model, loader, folder = setup
    out, log = tmp_path / "out.onnx", tmp_path / "train.jsonl"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # Fine-tuning's step 3 draws batch 2 + STEPS + 3 + 1 (the eval set is separate).
    env = {**os.environ, "STOP_SIG": "15", "STOP_AT": str(2 + STEPS + 4), "TMPDIR": str(scratch)}
    command = [sys.executable, "-c", "from onnxmorph.cli.main import main; main()",
               *_args(model, loader, out, log)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("onnxmorph: interrupted; fine-tuning")
    assert "Traceback" not in done.stderr
    assert list(scratch.iterdir()) == []  # the training artifacts' temp folder is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.onnx.onnxmorph-work", "tmp", "train.jsonl"]

    result = CliRunner().invoke(cli, _args(model, loader, out, log, "--resume"))
    assert result.exit_code == 0, result.output
    _assert_same_result(out, folder / "reference.onnx", log, folder / "ref.jsonl")


def test_interrupt_before_training_leaves_nothing_to_resume(setup, tmp_path, monkeypatch):
    model, loader, _ = setup
    out, log = tmp_path / "out.onnx", tmp_path / "train.jsonl"
    monkeypatch.setenv("STOP_SIG", "2")
    monkeypatch.setenv("STOP_AT", "1")  # the first look at the data, before any training step
    result = CliRunner().invoke(cli, _args(model, loader, out, log))
    assert result.exit_code == 130
    assert result.output.strip().splitlines() == [
        "onnxmorph: interrupted before the first checkpoint; nothing to resume"]
    assert list(tmp_path.iterdir()) == []
    again = CliRunner().invoke(cli, _args(model, loader, out, log, "--resume"))
    assert again.exit_code == 2 and "--resume: no checkpoint" in again.output


@pytest.mark.parametrize("extra, message", [
    ((), "without --data nothing trains"),
    (("--data", "LOADER", "--finetune-steps", "0"), "--method l1 with --finetune-steps 0"),
])
def test_resume_where_nothing_trains_is_refused_not_ignored(tmp_path, extra, message):
    seed = Path(__file__).resolve().parents[2] / "samples" / "resnet_seed.onnx"
    loader = Path(__file__).resolve().parents[2] / "samples" / "loader.py"
    extra = [str(loader) if e == "LOADER" else e for e in extra]
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(cli, ["prune", str(seed), "--method", "l1", "--resume",
                                      "-o", str(out), *extra], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0] and "--resume" in lines[0]
    assert list(tmp_path.iterdir()) == []
