"""The `onnxmorph` command line: analyze, prune, verify, and how bad input is reported.

Bad input must end with exit code 2 and one line on stderr, `onnxmorph: error: ...`, with no
traceback (unless --debug), no output file left behind and the input file unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import onnxmorph
from onnxmorph.cli.main import cli
from tests.onnx_builders import GraphBuilder

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RESNET = SAMPLES / "resnet_seed.onnx"
MOBILENET = SAMPLES / "mobilenet_seed.onnx"


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def seed(tmp_path) -> Path:
    """A copy of the resnet sample in its own folder."""
    path = tmp_path / "model.onnx"
    shutil.copy(RESNET, path)
    return path


def _console_script() -> str | None:
    found = shutil.which("onnxmorph")
    if found:
        return found
    candidate = Path(sys.executable).parent / "onnxmorph"
    return str(candidate) if candidate.exists() else None


def _dynamic_model(path: Path) -> Path:
    """x[N, 3, H, W] → Conv → Relu → Conv: the spatial size is unknown until run time."""
    b = GraphBuilder(0)
    x = b.input("x", ["N", 3, "H", "W"])
    w1, w2 = b.weight([8, 3, 3, 3], "w1"), b.weight([4, 8, 1, 1], "w2")
    t = b.node("Relu", [b.node("Conv", [x, w1], name="conv1", kernel_shape=[3, 3],
                                pads=[1, 1, 1, 1])], name="relu1")
    y = b.node("Conv", [t, w2], name="conv2", kernel_shape=[1, 1])
    model = b.model([y])
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------ analyze
def test_analyze_text():
    result = invoke("analyze", RESNET)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "MACs:    20.18M" in out
    assert "params:  176.09k" in out
    assert "groups:  11 (9 prunable" in out
    assert "input=1x1x28x28" in out
    assert "non-prunable groups hidden" in out
    assert result.stderr == ""
    every = invoke("analyze", RESNET, "--all-groups").stdout
    assert "reaches graph output 'logits'" in every and "hidden" not in every


def test_analyze_json():
    result = invoke("analyze", MOBILENET, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    analysis = onnxmorph.analyze(MOBILENET)
    assert summary["macs"] == round(analysis.macs) and summary["params"] == round(analysis.params)
    assert summary["input_shapes"] == {"input": [1, 1, 28, 28]}
    assert len(summary["groups"]) == len(analysis.groups)
    for group, expected in zip(summary["groups"], analysis.groups):
        assert {"id", "channels", "prunable", "reason", "layers"} <= set(group)
        assert group["id"] == expected.id and group["channels"] == expected.channels
        assert group["prunable"] == expected.prunable and group["reason"] == expected.reason
        assert group["layers"] == list(expected.layers)
    assert sum(g["prunable"] for g in summary["groups"]) == 10


def test_analyze_with_input_shape(tmp_path):
    model = _dynamic_model(tmp_path / "dyn.onnx")
    result = invoke("analyze", model, "--input-shape", "x=1x3x16x16", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["input_shapes"] == {"x": [1, 3, 16, 16]}
    assert summary["macs"] == 16 * 16 * (8 * 3 * 9 + 4 * 8)


# ------------------------------------------------------------------ prune and verify
def test_prune_json_then_verify(seed, tmp_path):
    out = tmp_path / "out" / "small.onnx"
    out.parent.mkdir()
    before = seed.read_bytes()
    result = invoke("prune", seed, "--method", "l1", "--budget", "0.5", "-o", out, "--verify",
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["method"] == "l1" and report["budget"] == 0.5
    assert report["pruned"]["macs"] <= 0.52 * report["seed"]["macs"]
    assert report["verify"]["passed"] is True
    assert report["files"] == {"model": str(out),
                               "structure": str(out.with_name("small.structure.json")),
                               "report": str(out.with_name("small.report.json")),
                               "plot": str(out.with_name("small.structure.png"))}
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "small.onnx", "small.report.json", "small.structure.json", "small.structure.png"]
    assert seed.read_bytes() == before
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert round(onnxmorph.analyze(out).macs) == report["pruned"]["macs"]
    saved = json.loads(out.with_name("small.report.json").read_text())
    assert saved["pruned"] == report["pruned"]

    verified = invoke("verify", seed, out)
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith("passed:")
    as_json = json.loads(invoke("verify", seed, out, "--json").stdout)
    assert as_json["passed"] is True and as_json["max_abs_diff"] <= 1e-4
    assert as_json["batch_sizes"] == [1, 3]  # the sample's batch is dynamic


def test_prune_text_summary(seed, tmp_path):
    out = tmp_path / "p.onnx"
    result = invoke("prune", seed, "--method", "l1", "--budget", "0.4", "-o", out, "--verify",
                    "--round-to", "8")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "method l1, target flops, budget 0.4" in text
    assert "MACs" in text and "params" in text
    assert "verify: passed" in text
    assert f"wrote model: {out}" in text
    structure = json.loads((tmp_path / "p.structure.json").read_text())
    for layer in structure["layers"].values():
        if layer["channels_before"] % 8 == 0:
            assert layer["channels_after"] % 8 == 0


def test_prune_default_output_is_next_to_the_input(seed):
    before = seed.read_bytes()
    result = invoke("prune", seed, "--method", "l1")
    assert result.exit_code == 0, result.output
    folder = seed.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.onnx", "model.pruned.onnx", "model.pruned.report.json",
        "model.pruned.structure.json", "model.pruned.structure.png"]
    assert seed.read_bytes() == before
    assert invoke("verify", seed, folder / "model.pruned.onnx").exit_code == 0


@pytest.mark.parametrize("name,expected", [
    ("resnet.v2.onnx", "resnet.v2.pruned.onnx"),  # the whole name, not up to the first dot
    ("seed.pruned.onnx", "seed.pruned.pruned.onnx"),  # never the input itself
])
def test_prune_default_output_never_overwrites_the_input(tmp_path, name, expected):
    model = tmp_path / name
    shutil.copy(RESNET, model)
    before = model.read_bytes()
    result = invoke("prune", model, "--method", "l1")
    assert result.exit_code == 0, result.output
    assert model.read_bytes() == before
    assert (tmp_path / expected).is_file()


def test_verify_detects_a_different_model(seed, tmp_path):
    out = tmp_path / "p.onnx"
    assert invoke("prune", seed, "--method", "l1", "-o", out).exit_code == 0
    model = onnx.load(str(out))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    for init in model.graph.initializer:
        if init.name == conv.input[1]:
            value = numpy_helper.to_array(init).copy()
            value.flat[0] += 1.0
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    result = invoke("verify", seed, tampered)
    assert result.exit_code == 1
    assert result.stdout.startswith("FAILED")


def test_verify_of_the_seed_with_itself_passes(seed):
    result = invoke("verify", seed, seed)
    assert result.exit_code == 0 and "passed" in result.stdout


# ------------------------------------------------------------------ bad input
def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    data = RESNET.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_text("this is not an onnx model\n" * 20)
    return path


def _copy(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    shutil.copy(RESNET, path)
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "model.onnx"


BAD_PRUNE = {
    "missing_file": (_missing, [], "does not exist"),
    "not_onnx": (_not_onnx, [], "ONNX model"),
    "truncated": (_truncated, [], "ONNX model"),
    "budget_1.5": (_copy, ["--budget", "1.5"], "budget 1.5 is outside"),
    "budget_0": (_copy, ["--budget", "0"], "outside (0, 1]"),
    "exclude_nothing": (_copy, ["--exclude", "nothing_matches_*"], "matches no layer"),
    "malformed_input_shape": (_copy, ["--input-shape", "input=1xAx28"], "--input-shape"),
    "input_shape_unknown_name": (_copy, ["--input-shape", "image=1x1x28x28"], "image"),
    "input_shape_wrong_rank": (_copy, ["--input-shape", "input=1x28x28"], "dimensions"),
    "dynamic_spatial": (lambda p: _dynamic_model(p / "model.onnx"), [], "--input-shape"),
    "unreachable_budget": (_copy, ["--budget", "0.001"], "smallest reachable"),
}


def _assert_clean_failure(result, folder: Path, files_before: dict[str, bytes], needle: str):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxmorph: error: ")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    files_after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert files_after == files_before  # nothing written, input unchanged


@pytest.mark.parametrize("case", list(BAD_PRUNE))
def test_prune_bad_input(tmp_path, case):
    make, options, needle = BAD_PRUNE[case]
    model = make(tmp_path)
    files_before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    out = tmp_path / "out.onnx"
    result = invoke("prune", model, "--method", "l1", "-o", out, *options)
    _assert_clean_failure(result, tmp_path, files_before, needle)


@pytest.mark.parametrize("case", ["missing_file", "not_onnx", "truncated", "dynamic_spatial",
                                  "malformed_input_shape"])
def test_analyze_bad_input(tmp_path, case):
    make, options, needle = BAD_PRUNE[case]
    model = make(tmp_path)
    files_before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = invoke("analyze", model, *options)
    _assert_clean_failure(result, tmp_path, files_before, needle)


def test_prune_output_in_a_missing_folder(seed):
    files_before = {p.name: p.read_bytes() for p in seed.parent.iterdir()}
    result = invoke("prune", seed, "--method", "l1", "-o", seed.parent / "no" / "out.onnx")
    _assert_clean_failure(result, seed.parent, files_before, "does not exist")
    assert not (seed.parent / "no").exists()


def test_prune_output_is_a_folder(seed):
    (seed.parent / "folder.onnx").mkdir()
    before = {p.name: p.read_bytes() for p in seed.parent.iterdir() if p.is_file()}
    result = CliRunner().invoke(cli, ["prune", str(seed), "--method", "l1", "-o",
                                      str(seed.parent / "folder.onnx")])
    # click refuses a folder for a dir_okay=False path itself (usage error, exit 2).
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in seed.parent.iterdir() if p.is_file()} == before


def test_dynamic_spatial_message_names_input_shape(tmp_path):
    model = _dynamic_model(tmp_path / "dyn.onnx")
    result = invoke("prune", model, "--method", "l1", "-o", tmp_path / "o.onnx")
    assert result.exit_code == 2
    assert "--input-shape x=" in result.stderr
    assert "'H'" in result.stderr  # names the dynamic dimension
    fixed = invoke("prune", model, "--method", "l1", "-o", tmp_path / "o.onnx",
                   "--input-shape", "x=1x3x16x16", "--verify", "--json")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["verify"]["passed"]


@pytest.mark.parametrize("case", ["missing_seed", "missing_pruned", "not_onnx", "unrelated"])
def test_verify_bad_input(tmp_path, case):
    seed = _copy(tmp_path)
    other = tmp_path / "other.onnx"
    if case == "missing_seed":
        seed.unlink()
        shutil.copy(RESNET, other)
    elif case == "not_onnx":
        other.write_bytes(b"\x00\x01garbage")
    elif case == "unrelated":
        # A pruned mobilenet is not a pruned resnet.
        assert invoke("prune", MOBILENET, "--method", "l1", "-o", other).exit_code == 0
        for sidecar in tmp_path.glob("other.*.json"):
            sidecar.unlink()
    files_before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = invoke("verify", seed, other)
    needle = {"missing_seed": "does not exist", "missing_pruned": "does not exist",
              "not_onnx": "other.onnx",
              "unrelated": "the seed it was made from"}[case]
    _assert_clean_failure(result, tmp_path, files_before, needle)


def test_debug_shows_a_traceback(tmp_path):
    result = invoke("--debug", "prune", tmp_path / "missing.onnx", "--method", "l1")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "ModelLoadError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("onnxmorph: error: ")


# ------------------------------------------------------------------ the installed command
@pytest.fixture(scope="module")
def console_script() -> str:
    script = _console_script()
    if script is None:
        pytest.skip("the onnxmorph console script is not installed")
    return script


def _run(script: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([script, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_console_script_prune_and_verify(console_script, seed, tmp_path):
    out = tmp_path / "small.onnx"
    done = _run(console_script, "prune", seed, "--method", "l1", "--budget", "0.5", "-o", out,
                "--verify", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verify"]["passed"] and report["ratio"]["macs"] <= 0.52
    checked = _run(console_script, "verify", seed, out, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("passed")


def test_console_script_bad_input(console_script, tmp_path):
    model = _truncated(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    done = _run(console_script, "prune", model, "--method", "l1", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxmorph: error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_dynamic_model_helper_really_is_dynamic(tmp_path):
    model = onnx.load(str(_dynamic_model(tmp_path / "d.onnx")))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["N", "", "H", "W"]
    assert dims[1].dim_value == 3
