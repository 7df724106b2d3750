"""--quiet and --json mean nothing on stderr while training, onnxruntime's own warnings
included (they are written by C++ to file descriptor 2, hence a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sample_loaders import write_sample_loader

SEED = Path(__file__).resolve().parents[2] / "samples" / "resnet_seed.onnx"


@pytest.mark.parametrize("flag", ["--quiet", "--json"])
def test_training_prints_nothing_on_stderr(tmp_path, flag):
    loader = write_sample_loader(tmp_path / "loader.py")
    # taylor's gradient session warned about every unused initializer of its eval graph.
    done = subprocess.run(
        [sys.executable, "-c", "from onnxmorph.cli.main import main; main()", "prune",
         str(SEED), "--method", "taylor", "--data", str(loader), "--calibration-batches", "1",
         "--finetune-steps", "2", "--no-measure-latency", "-o", str(tmp_path / "p.onnx"), flag],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
    if flag == "--json":
        assert json.loads(done.stdout)["method"] == "taylor"
