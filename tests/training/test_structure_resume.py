"""`prune --resume` for gdp, gamma and group lasso: interrupted in structure learning or in
the fine-tuning after it, the resumed run ends where an uninterrupted run with the same seed
ends (test_resume.py does the same for the gates)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnxmorph.cli.main import cli
from tests.training.test_resume import (  # noqa: F401  (setup: a fixture)
    STEPS,
    _args,
    _assert_same_result,
    setup,
)

# The peek at the first batch is draw 1 and structure step k draws k + 2; fine-tuning's step
# k draws STEPS + k + 2 (every method draws one batch per step, evaluation has its own set).
_STRUCTURE_STEP_4 = 4 + 2  # a checkpoint after 5 steps (--checkpoint-every 3 saved at 3)
_FINETUNE_STEP_2 = STEPS + 2 + 2


@pytest.fixture(scope="module")
def references(setup, tmp_path_factory):  # noqa: F811
    """One uninterrupted run per method."""
    model, loader, _ = setup
    folder = tmp_path_factory.mktemp("references")

    def run(method: str) -> tuple[Path, Path]:
        out, log = folder / f"{method}.onnx", folder / f"{method}.jsonl"
        if not out.exists():
            result = CliRunner().invoke(cli, _args(model, loader, out, log, "--method", method))
            assert result.exit_code == 0, result.output
        return out, log

    return run


@pytest.mark.parametrize("method, stop_at, where", [
    ("gdp", _STRUCTURE_STEP_4, "structure learning step 5"),
    ("gamma", _STRUCTURE_STEP_4, "structure learning step 5"),
    ("group-lasso", _STRUCTURE_STEP_4, "structure learning step 5"),
    ("gdp", _FINETUNE_STEP_2, "fine-tuning step 3"),
    ("gamma", _FINETUNE_STEP_2, "fine-tuning step 3"),
])
def test_sigint_then_resume_ends_like_an_uninterrupted_run(setup, references, tmp_path,  # noqa: F811
                                                           monkeypatch, method, stop_at, where):
    model, loader, _ = setup
    reference, reference_log = references(method)
    out, log = tmp_path / "out.onnx", tmp_path / "train.jsonl"
    work = tmp_path / "out.onnx.onnxmorph-work"
    monkeypatch.setenv("STOP_SIG", "2")
    monkeypatch.setenv("STOP_AT", str(stop_at))
    args = _args(model, loader, out, log, "--method", method)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130, result.output
    assert where in result.output and "--resume" in result.output, result.output
    assert not out.exists() and (work / "gates").is_dir()
    monkeypatch.delenv("STOP_AT")

    other = CliRunner().invoke(cli, [*args, "--resume", "--seed", "3"])
    assert other.exit_code == 2 and "seed was 0" in other.output, other.output

    result = CliRunner().invoke(cli, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    _assert_same_result(out, reference, log, reference_log)
    assert not work.exists()


def test_sigterm_of_gdp_in_a_subprocess_then_resume(setup, references, tmp_path):  # noqa: F811
    model, loader, _ = setup
    reference, reference_log = references("gdp")
    out, log = tmp_path / "out.onnx", tmp_path / "train.jsonl"
    args = _args(model, loader, out, log, "--method", "gdp")
    env = {**os.environ, "STOP_SIG": "15", "STOP_AT": str(_STRUCTURE_STEP_4)}
    command = [sys.executable, "-c", "from onnxmorph.cli.main import main; main()", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "onnxmorph: interrupted; structure learning step 5")
    assert "Traceback" not in done.stderr

    result = CliRunner().invoke(cli, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    _assert_same_result(out, reference, log, reference_log)

