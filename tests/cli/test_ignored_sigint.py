"""A process started with SIGINT ignored (a job a script puts in the background with `&`):
onnxmorph leaves it ignored, before and during training, and the test suite still plays a
user's Ctrl-C correctly when it is started that way (tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.training.test_resume import _args, setup  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[2]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_an_ignored_sigint_stays_ignored_during_training(setup, tmp_path):  # noqa: F811
    model, loader, _ = setup
    out, log = tmp_path / "out.onnx", tmp_path / "train.jsonl"
    # The loader sends SIGINT to its own process at gate step 4 (see test_resume).
    env = {**os.environ, "STOP_SIG": "2", "STOP_AT": "6"}
    done = subprocess.run(
        [sys.executable, "-c", "from onnxmorph.cli.main import main; main()",
         *_args(model, loader, out, log)],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
        preexec_fn=_ignore_sigint)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "interrupted" not in done.stderr


def test_the_interrupt_tests_pass_when_the_suite_starts_with_sigint_ignored(tmp_path):
    """The full-suite-only failure: pytest run as a background job (SIGINT ignored, so no
    KeyboardInterrupt handler) saw the test's own SIGINT do nothing and the run finish."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/training/test_resume.py::test_interrupt_before_training_leaves_nothing_to_resume",
         "--basetemp", str(tmp_path / "base")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, preexec_fn=_ignore_sigint)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 passed" in done.stdout
