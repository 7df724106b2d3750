"""What a training command leaves when it cannot finish: `--resume` for methods that keep no
checkpoint is refused before any work, and a fresh run that fails or is interrupted with
nothing to resume removes the --log it started and its workdir."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from onnxmorph.cli.main import cli
from onnxmorph.methods import registry
from tests.training.test_resume import _LOADER, setup  # noqa: F401  (a fixture)

# test_resume's loader with labels out of range from the third training batch on.
_LATE_BAD = _LOADER.replace("yield X[order[i:i + 16]], Y[order[i:i + 16]]",
                            "yield X[order[i:i + 16]], Y[order[i:i + 16]] + (50 if _drawn > 3 "
                            "else 0)")


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def gdp_unresumable(monkeypatch):
    """gdp as a method that keeps no checkpoint (a plugin may register one: the built-ins all
    keep one); the CLI's --method choices are fixed at import, so a built-in stands in."""
    method = registry.get_method("gdp")
    monkeypatch.setitem(registry._METHODS, "gdp", dataclasses.replace(method, resumable=False))


def test_resume_of_a_method_without_checkpoints_is_refused_before_any_work(tmp_path,
                                                                          gdp_unresumable):
    method = "gdp"
    loader = tmp_path / "loader.py"
    loader.write_text(_LOADER)
    # The model does not even exist: the refusal comes before it is read.
    result = _invoke("prune", tmp_path / "missing.onnx", "--method", method, "--data", loader,
                     "--resume", "-o", tmp_path / "out.onnx")
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"--method {method} keeps no checkpoint" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loader.py"]


def test_a_fresh_run_that_fails_in_training_removes_its_log(setup, tmp_path):  # noqa: F811
    model, _, _ = setup
    loader = tmp_path / "loader.py"
    loader.write_text(_LATE_BAD)
    assert "+ (50 if _drawn > 3" in _LATE_BAD
    out, log = tmp_path / "out.onnx", tmp_path / "train.jsonl"
    result = _invoke("prune", model, "--data", loader, "--steps", "6", "--finetune-steps", "2",
                     "--quiet", "-o", out, "--log", log)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "labels range from" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loader.py"]  # no log, no workdir


def test_interrupting_a_method_without_checkpoints_keeps_nothing(setup, tmp_path,  # noqa: F811
                                                                monkeypatch, gdp_unresumable):
    model, loader, _ = setup
    out, log = tmp_path / "out.onnx", tmp_path / "train.jsonl"
    monkeypatch.setenv("STOP_SIG", "2")
    monkeypatch.setenv("STOP_AT", "6")  # a few steps into structure learning
    result = _invoke("prune", model, "--method", "gdp", "--data", loader, "--steps", "10",
                     "--finetune-steps", "2", "--quiet", "-o", out, "--log", log)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines() == [
        "onnxmorph: interrupted; --method gdp keeps no checkpoint to resume from: run the "
        "command again to start over"]
    assert list(tmp_path.iterdir()) == []
