"""`sensitivity`: one group thinned at a time, evaluated; checked against numpy on the tiny
model, and through the CLI on the samples."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import onnxmorph
from onnxmorph.cli.main import cli
from onnxmorph.errors import PruningError

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _expected(tiny, fraction: float, group: str) -> float:
    """Top-1 agreement (or accuracy) with the lowest-L1 channels of one group zeroed."""
    weights = tiny.wa if group == "a" else tiny.wb
    count = min(int(round(fraction * len(weights))), len(weights) - 1)
    mask = np.ones(len(weights))
    mask[np.argsort(np.abs(weights).sum(axis=1), kind="stable")[:count]] = 0
    hits = total = 0
    for x, y in tiny.batches:
        pruned = tiny.forward(x, **{"ma" if group == "a" else "mb": mask})["logits"].argmax(1)
        reference = tiny.forward(x)["logits"].argmax(1) if y is None else y
        hits += int((pruned == reference).sum())
        total += len(x)
    return hits / total


@pytest.mark.parametrize("fixture", ["tiny", "tiny_unlabeled"])
def test_values_match_numpy_with_the_channels_zeroed(fixture, request):
    tiny = request.getfixturevalue(fixture)
    report = onnxmorph.sensitivity(str(tiny.path), data=str(tiny.loader), method="l1",
                                   fractions=(0.34, 0.67))
    assert report.metric == ("accuracy" if fixture == "tiny" else "agreement")
    by_layer = {row.layers[0]: row for row in report.groups}
    assert set(by_layer) == {"conv_a", "conv_b"}
    assert by_layer["conv_a"].removed == [1, 2] and by_layer["conv_b"].removed == [1, 3]
    for layer, group in (("conv_a", "a"), ("conv_b", "b")):
        assert by_layer[layer].values == [pytest.approx(_expected(tiny, f, group))
                                          for f in (0.34, 0.67)]
    if fixture == "tiny_unlabeled":
        assert report.baseline == 1.0
    for row in report.groups:  # more channels removed, fewer MACs left
        assert 1.0 > row.macs_ratio[0] > row.macs_ratio[1]


def test_bad_fractions(tiny):
    with pytest.raises(PruningError, match="must each lie in"):
        onnxmorph.sensitivity(str(tiny.path), data=str(tiny.loader), fractions=(0.5, 1.0))


def test_cli_json_file_and_heat_map(tiny, tmp_path):
    out = tmp_path / "sens.json"
    result = CliRunner().invoke(cli, ["sensitivity", str(tiny.path), "--data", str(tiny.loader),
                                      "--method", "fpgm", "--fractions", "0.5", "--json",
                                      "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == json.loads(out.read_text())
    assert printed["method"] == "fpgm" and printed["fractions"] == [0.5]
    assert {"id", "layers", "channels", "removed", "values", "macs_ratio"} <= set(
        printed["groups"][0])
    assert all(len(g["values"]) == 1 for g in printed["groups"])
    png = tmp_path / "sens.png"
    assert png.exists() == (importlib.util.find_spec("matplotlib") is not None)
    if png.exists():
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_fractions_is_one_line(tiny):
    result = CliRunner().invoke(cli, ["sensitivity", str(tiny.path), "--data", str(tiny.loader),
                                      "--fractions", "half"])
    assert result.exit_code == 2
    assert "--fractions 'half' is not a comma-separated list" in result.output


@pytest.fixture
def short_loader(tmp_path) -> Path:
    """samples/loader.py cut to 2 training batches and 1 evaluation batch (fast)."""
    path = tmp_path / "short_loader.py"
    path.write_text(f'''
import importlib.util, itertools
_spec = importlib.util.spec_from_file_location("sample_loader", {str(SAMPLES / "loader.py")!r})
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)
def train_batches():
    return itertools.islice(_base.train_batches(), 2)
def eval_batches():
    return itertools.islice(_base.eval_batches(), 1)
''')
    return path


def test_cli_sensitivity_on_the_mobilenet_sample(short_loader):
    result = CliRunner().invoke(cli, ["sensitivity", str(SAMPLES / "mobilenet_seed.onnx"),
                                      "--data", str(short_loader), "--method", "apoz",
                                      "--fractions", "0.5", "--calibration-batches", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("accuracy of the seed") and "by apoz" in lines[0]
    assert len(lines) == 3 + 10  # title, header, rule, one row per prunable group


@pytest.mark.parametrize("method", ["taylor"])
def test_cli_prune_with_a_criterion_on_the_resnet_sample(method, short_loader, tmp_path):
    out = tmp_path / "pruned.onnx"
    result = CliRunner().invoke(cli, [
        "prune", str(SAMPLES / "resnet_seed.onnx"), "--method", method, "--data",
        str(short_loader), "--calibration-batches", "2", "--finetune-steps", "2",
        "--budget", "0.6", "--round-to", "8", "-o", str(out), "--json"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["method"] == method and report["ratio"]["macs"] <= 0.6
    assert report["calibration_batches"] == 2 and report["finetune_steps"] == 2
    structure = json.loads((tmp_path / "pruned.structure.json").read_text())
    widths = [info["channels_after"] for info in structure["layers"].values()
              if info["channels_before"] % 8 == 0]
    assert all(w % 8 == 0 for w in widths)
    assert out.exists()


def test_cli_sensitivity_of_the_vit_embedding_only_when_asked(short_loader, tmp_path):
    """--prune-embedding adds the residual stream as one more group (off: it is a boundary)."""
    reports = {}
    for flag in ([], ["--prune-embedding"]):
        out = tmp_path / f"vit{len(flag)}.json"
        result = CliRunner().invoke(cli, ["sensitivity", str(SAMPLES / "vit_seed.onnx"),
                                          "--data", str(short_loader), "--fractions", "0.5",
                                          "-o", str(out), *flag], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        reports[bool(flag)] = json.loads(out.read_text())["groups"]
    plain = {tuple(g["layers"]) for g in reports[False]}
    extra = [g for g in reports[True] if tuple(g["layers"]) not in plain]
    assert len(reports[True]) == len(reports[False]) + 1 and len(extra) == 1
    (embedding,) = extra
    assert embedding["channels"] == 64 and embedding["removed"] == [32]
    assert len(embedding["layers"]) > 10  # every block reads and writes the residual stream
