"""A write that fails midway (disk full, `ulimit -f`) names the file that failed — the PNG
too, not a temporary — keeps the old result and leaves no temporary behind."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

SEED = Path(__file__).resolve().parents[2] / "samples" / "resnet_seed.onnx"


@pytest.mark.parametrize("limit, failing", [
    (4_000, "p.structure.json"),  # the structure JSON is about 12 kB
    (30_000, "p.structure.png"),  # the PNG about 45 kB, the model about 320 kB
    (150_000, "p.onnx"),
])
def test_the_failing_file_is_named_and_the_old_result_kept(tmp_path, limit, failing):
    if failing.endswith(".png"):
        pytest.importorskip("matplotlib")
    out = tmp_path / "p.onnx"
    old = {tmp_path / name: f"old {name}".encode()
           for name in ("p.onnx", "p.structure.json", "p.report.json", "p.structure.png")}
    for path, data in old.items():
        path.write_bytes(data)

    def ulimit() -> None:  # Python ignores SIGXFSZ: the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-c", "from onnxmorph.cli.main import main; main()", "prune",
         str(SEED), "--method", "l1", "--no-measure-latency", "-o", str(out)],
        capture_output=True, text=True, preexec_fn=ulimit, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"could not write '{tmp_path / failing}': File too large" in lines[0], lines[0]
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == old  # no .tmp, nothing replaced
