"""Output files: a result's files are replaced all together or not at all, never leave a
temporary behind, and get the mode the umask says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import onnxmorph
from onnxmorph import io

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _old_set(folder: Path) -> dict[Path, bytes]:
    files = {folder / name: f"old {name}".encode() for name in ("m.structure.json", "m.onnx",
                                                                 "m.report.json")}
    for path, data in files.items():
        path.write_bytes(data)
    return files


def _new_set(folder: Path) -> dict[Path, bytes]:
    return {folder / name: f"new {name}".encode() for name in ("m.structure.json", "m.onnx",
                                                                "m.report.json")}


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_set_is_written_in_order_with_the_report_last(tmp_path, monkeypatch):
    renamed = []
    real = os.replace
    monkeypatch.setattr(io.os, "replace", lambda a, b: (renamed.append(Path(b).name),
                                                        real(a, b)))
    written = io.write_file_set(_new_set(tmp_path))
    assert renamed == ["m.structure.json", "m.onnx", "m.report.json"]
    assert [p.name for p in written] == renamed
    assert _contents(tmp_path) == {p.name: d for p, d in _new_set(tmp_path).items()}


def test_a_write_that_fails_midway_leaves_the_old_set(tmp_path):
    old = _old_set(tmp_path)
    files = _new_set(tmp_path)

    def disk_full(path: Path) -> bool:
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    files[tmp_path / "m.onnx"] = disk_full
    with pytest.raises(io.OutputWriteError, match="could not write .*m.onnx.*No space"):
        io.write_file_set(files)
    assert _contents(tmp_path) == {p.name: d for p, d in old.items()}  # no .tmp either


def test_a_file_size_limit_is_one_line_and_exit_2_with_the_old_result_kept(tmp_path):
    """`ulimit -f` (the kernel's EFBIG) while writing: the environment's fault, not a bug."""
    import resource

    out = tmp_path / "p.onnx"
    old = {out: b"old model", out.with_suffix(".report.json"): b"old report"}
    for path, data in old.items():
        path.write_bytes(data)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))  # noqa: E731
    result = subprocess.run(
        [sys.executable, "-c", "from onnxmorph.cli.main import main; main()", "prune",
         str(SAMPLES / "resnet_seed.onnx"), "--method", "l1", "--no-measure-latency",
         "-o", str(out)], capture_output=True, text=True, preexec_fn=limit)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not write" in lines[0] and "File too large" in lines[0]
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == old


def test_a_rename_that_fails_midway_puts_the_old_files_back(tmp_path, monkeypatch):
    old = _old_set(tmp_path)
    (tmp_path / "m.structure.json").unlink()  # a first run without structure file
    real, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).name == "m.report.json" and len(calls) == 3:
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(io.OutputWriteError, match="Input/output"):
        io.write_file_set(_new_set(tmp_path))
    expected = {p.name: d for p, d in old.items() if p.name != "m.structure.json"}
    assert _contents(tmp_path) == expected


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        io.write_file_set({tmp_path / "a.json": b"{}"})
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_prune_result_save_failing_midway_keeps_the_previous_result(tmp_path, monkeypatch):
    out = tmp_path / "p.onnx"
    first = onnxmorph.prune(SAMPLES / "resnet_seed.onnx", method="l1", budget=0.5)
    first.save(out)
    before = _contents(tmp_path)
    second = onnxmorph.prune(SAMPLES / "resnet_seed.onnx", method="l1", budget=0.3)
    real = io.Path.write_bytes

    def fail_on_model(self, data):
        if self.name.startswith(".p.onnx."):
            raise OSError(27, "File too large")
        return real(self, data)

    monkeypatch.setattr(io.Path, "write_bytes", fail_on_model)
    with pytest.raises(io.OutputWriteError, match="too large"):
        second.save(out)
    assert _contents(tmp_path) == before


def test_sigterm_during_the_write_completes_the_set_and_leaves_no_temporary(tmp_path):
    """SIGTERM arriving while temporaries exist is held until the set is in place."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from onnxmorph.io import write_file_set
        folder = Path({str(tmp_path)!r})
        def interrupted(path):
            os.kill(os.getpid(), signal.SIGTERM)  # the default action would kill us here
            path.write_bytes(b"model")
            return True
        write_file_set({{folder / "m.onnx": interrupted, folder / "m.report.json": b"report"}})
        print("not reached: SIGTERM is delivered when the set is written")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert "not reached" not in done.stdout
    assert _contents(tmp_path) == {"m.onnx": b"model", "m.report.json": b"report"}


def test_output_checks(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    os.link(model, tmp_path / "link.onnx")
    with pytest.raises(io.OutputPathError, match="is the input"):
        io.check_output_path(tmp_path / "link.onnx", inputs=[model])
    with pytest.raises(io.OutputPathError, match="does not exist"):
        io.check_output_path(tmp_path / "no" / "m.onnx")
    with pytest.raises(io.OutputPathError, match="two different outputs"):
        io.check_distinct_outputs([tmp_path / "a", tmp_path / "." / "a"])
    assert io.check_output_path(tmp_path / "new.onnx", inputs=[model, None]).name == "new.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.onnx", "m.onnx"]  # no probe
