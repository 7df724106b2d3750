"""The picture of a result: `<stem>.structure.png` from `save`, and `onnxmorph report`."""

from __future__ import annotations

import functools
import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import onnxmorph
from onnxmorph.cli.main import cli
from onnxmorph.plot import SKIP_NOTE, short_name, write_structure_plot

needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib is not installed")

RESNET = Path(__file__).resolve().parent.parent / "samples" / "resnet_seed.onnx"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY = [{"step": s, "task_loss": 2.3 - 0.01 * s, "cost": 1.0 - 0.002 * s,
            "alive_cost_ratio": 1.0 - 0.0015 * s, "lambda": 0.1 * s, "alive": {"0": 16}}
           for s in range(0, 250, 10)]


@functools.cache
def _pruned() -> onnxmorph.PruneResult:
    return onnxmorph.prune(RESNET, method="l1", budget=0.5)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def _invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _no_matplotlib(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` → ImportError


@needs_matplotlib
def test_save_writes_structure_png(tmp_path):
    paths = _pruned().save(tmp_path / "out.onnx")
    assert paths["plot"] == tmp_path / "out.structure.png"
    width, height = _png_size(paths["plot"])
    assert width > 0 and height > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.onnx", "out.report.json", "out.structure.json", "out.structure.png"]


@needs_matplotlib
def test_history_adds_the_training_panel(tmp_path):
    result = _pruned()
    plain = result.save(tmp_path / "plain.onnx")["plot"]
    learned = onnxmorph.PruneResult(
        model=result.model, analysis=result.analysis, alive=result.alive, method="gates",
        target=result.target, budget=result.budget, extra={"learned": {"history": HISTORY}})
    with_history = learned.save(tmp_path / "learned.onnx")["plot"]
    (w1, h1), (w2, h2) = _png_size(plain), _png_size(with_history)
    assert w1 == w2 and h2 > h1  # a second panel below the channel bars


def test_save_without_matplotlib_skips_only_the_plot(tmp_path, monkeypatch):
    _no_matplotlib(monkeypatch)
    paths = _pruned().save(tmp_path / "out.onnx")
    assert paths["plot"] == SKIP_NOTE and "pip install 'onnxmorph[plot]'" in SKIP_NOTE
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.onnx", "out.report.json", "out.structure.json"]
    assert write_structure_plot(_pruned().structure, tmp_path / "x.png") is False
    assert not (tmp_path / "x.png").exists()


@needs_matplotlib
def test_prune_command_prints_the_plot_or_the_skip_note(tmp_path, monkeypatch):
    out = tmp_path / "p.onnx"
    result = _invoke("prune", RESNET, "-o", out, "--method", "l1")
    assert result.exit_code == 0, result.output
    assert f"wrote plot: {tmp_path / 'p.structure.png'}" in result.output

    _no_matplotlib(monkeypatch)
    out.with_name("p.structure.png").unlink()
    result = _invoke("prune", RESNET, "-o", out, "--method", "l1")
    assert result.exit_code == 0, result.output
    assert f"plot: {SKIP_NOTE}" in result.output
    assert not out.with_name("p.structure.png").exists()


def _structure_file(tmp_path) -> Path:
    path = tmp_path / "m.structure.json"
    path.write_text(json.dumps(_pruned().structure))
    return path


@needs_matplotlib
def test_report_command_table_and_png(tmp_path):
    structure = _structure_file(tmp_path)
    result = _invoke("report", structure)
    assert result.exit_code == 0, result.output
    assert "/fc/Gemm" in result.output and "10 → 10" in result.output
    assert "total" in result.output and "570 →" in result.output
    default = tmp_path / "m.structure.png"
    assert f"wrote plot: {default}" in result.output
    plain = _png_size(default)

    log = tmp_path / "train.jsonl"
    log.write_text("".join(json.dumps(row) + "\n" for row in HISTORY))
    out = tmp_path / "with_log.png"
    result = _invoke("report", structure, "--log", log, "-o", out)
    assert result.exit_code == 0, result.output
    assert "training log: 25 rows, last step 240" in result.output
    with_log = _png_size(out)
    assert with_log[0] == plain[0] and with_log[1] > plain[1]


def test_report_command_without_matplotlib(tmp_path, monkeypatch):
    structure = _structure_file(tmp_path)
    _no_matplotlib(monkeypatch)
    result = _invoke("report", structure)
    assert result.exit_code == 0, result.output
    assert f"plot: {SKIP_NOTE}" in result.output and "/fc/Gemm" in result.output
    assert not (tmp_path / "m.structure.png").exists()


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist"),
    ("{not json", "is not JSON"),
    ('{"format": "something-else", "layers": {}}', "not an onnxmorph structure file"),
    ('{"layers": {"a": {"channels_before": "x"}}}', "not an onnxmorph structure file"),
    ("[1, 2]", "not an onnxmorph structure file"),
], ids=["missing", "not-json", "other-format", "bad-layer", "list"])
def test_report_command_bad_structure(tmp_path, content, needle):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    result = _invoke("report", path)
    assert result.exit_code == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["s.json"])


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist"),
    ('{"step": 0}\nnot json\n', "line 2 is not a JSON object"),
    ("\n", "is empty"),
], ids=["missing", "bad-line", "empty"])
def test_report_command_bad_log(tmp_path, content, needle):
    structure = _structure_file(tmp_path)
    log = tmp_path / "train.jsonl"
    if content is not None:
        log.write_text(content)
    result = _invoke("report", structure, "--log", log)
    assert result.exit_code == 2 and needle in result.stderr
    assert not (tmp_path / "m.structure.png").exists()


def test_report_command_missing_output_folder(tmp_path):
    result = _invoke("report", _structure_file(tmp_path), "-o", tmp_path / "no" / "x.png")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_short_layer_names():
    assert short_name("/stages/stages.2/body/body.0/body.0.0/Conv", "Conv") == \
        "stages.2/body.0.0"
    assert short_name("/fc/Gemm", "Gemm") == "fc"
    assert short_name("Conv_0", "Conv") == "Conv_0"
