"""Validate before working: every refusal is one line, exit code 2, before any work starts,
and leaves the folder exactly as it was."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

import onnxmorph.cli.options as options
import onnxmorph.io as io
from onnxmorph.cli.main import cli
from onnxmorph.rewrite import verify as verify_module
from tests.cli.test_training_commands import loaders  # noqa: F401  (a fixture)

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RESNET = SAMPLES / "resnet_seed.onnx"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _assert_refused(result, folder: Path, before: dict[str, bytes], needle: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxmorph: error: "), result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert _snapshot(folder) == before


@pytest.fixture
def seed(tmp_path) -> Path:
    path = tmp_path / "seed.onnx"
    shutil.copy(RESNET, path)
    return path


def _same(seed: Path) -> Path:
    return seed


def _hard_link(seed: Path) -> Path:
    link = seed.with_name("hard.onnx")
    os.link(seed, link)
    return link


def _symlink(seed: Path) -> Path:
    link = seed.with_name("soft.onnx")
    link.symlink_to(seed)
    return link


@pytest.mark.parametrize("command", ["prune", "expand", "finetune"])
@pytest.mark.parametrize("alias", [_same, _hard_link, _symlink])
def test_output_that_is_the_input_is_refused(seed, command, alias, loaders):  # noqa: F811
    out = alias(seed)
    before = _snapshot(seed.parent)
    extra = {"prune": ["--method", "l1"], "expand": ["--width", "0.5"],
             "finetune": ["--data", loaders["labeled"]]}[command]
    result = invoke(command, seed, "-o", out, *extra)
    _assert_refused(result, seed.parent, before, "is the input")


def test_output_equal_to_the_loader_is_refused(seed, loaders):  # noqa: F811
    before = _snapshot(seed.parent)
    result = invoke("prune", seed, "--method", "l1", "--data", loaders["labeled"],
                    "-o", seed.parent / "out.onnx", "--log", loaders["labeled"])
    _assert_refused(result, seed.parent, before, "is the input")


def test_log_and_output_must_differ(seed):
    before = _snapshot(seed.parent)
    out = seed.parent / "out.onnx"
    result = invoke("prune", seed, "--method", "l1", "-o", out, "--log", out)
    _assert_refused(result, seed.parent, before, "two different outputs")


def test_log_in_a_missing_folder_is_refused_before_training(seed, loaders):  # noqa: F811
    before = _snapshot(seed.parent)
    result = invoke("prune", seed, "--data", loaders["labeled"], "-o", seed.parent / "o.onnx",
                    "--log", seed.parent / "missing" / "train.jsonl")
    _assert_refused(result, seed.parent, before, "does not exist")


def test_unwritable_output_folder_is_refused(seed, monkeypatch):
    def no_space(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", no_space)
    before = _snapshot(seed.parent)
    result = invoke("prune", seed, "--method", "l1", "-o", seed.parent / "out.onnx")
    _assert_refused(result, seed.parent, before, "cannot write to output folder")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_folder_is_refused(seed, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = invoke("prune", seed, "--method", "l1", "-o", folder / "out.onnx")
        assert result.exit_code == 2 and "cannot write" in result.stderr
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


RANGES = [
    (["prune", "--method", "l1", "--budget", "nan"], "budget"),
    (["prune", "--method", "l1", "--round-to", "0"], "--round-to"),
    (["prune", "--method", "l1", "--min-channels", "-1"], "--min-channels"),
    (["prune", "--method", "l1", "--strength", "-5"], "--strength"),
    (["prune", "--method", "l1", "--lr", "0"], "--lr"),
    (["prune", "--method", "l1", "--lr", "inf"], "--lr"),
    (["prune", "--method", "l1", "--steps", "0"], "--steps"),
    (["prune", "--method", "l1", "--finetune-steps", "-1"], "--finetune-steps"),
    (["prune", "--method", "l1", "--alive-threshold", "1"], "--alive-threshold"),
    (["prune", "--method", "l1", "--seed", "-1"], "--seed"),
    (["prune", "--method", "l1", "--atol", "-1"], "--atol"),
    (["prune", "--method", "l1", "--rtol", "nan"], "--rtol"),
    (["prune", "--method", "l1", "--threads", "0"], "--threads"),
    (["prune", "--method", "l1", "--batch", "0"], "--batch"),
    (["expand", "--width", "nan"], "--width"),
    (["expand", "--width", "9"], "--width"),
    (["expand", "--budget", "-2"], "--budget"),
    (["expand", "--width", "2", "--round-to", "0"], "--round-to"),
    (["finetune", "--data", "x.py", "--steps", "0"], "--steps"),
    (["finetune", "--data", "x.py", "--lr", "-1"], "--lr"),
    (["finetune", "--data", "x.py", "--threads", "0"], "--threads"),
]


@pytest.mark.parametrize("args,needle", RANGES, ids=[" ".join(a[-2:]) for a, _ in RANGES])
def test_numeric_options_out_of_range(seed, args, needle):
    before = _snapshot(seed.parent)
    command, *rest = args
    result = invoke(command, seed, "-o", seed.parent / "out.onnx", *rest)
    _assert_refused(result, seed.parent, before, needle)


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
@pytest.mark.parametrize("option", ["--atol", "--rtol"])
def test_verify_tolerances_out_of_range(seed, option, value):
    before = _snapshot(seed.parent)
    result = invoke("verify", seed, seed, option, value)
    _assert_refused(result, seed.parent, before, option)


def test_verify_old_tolerance_option_says_what_replaced_it(seed):
    before = _snapshot(seed.parent)
    result = invoke("verify", seed, seed, "--tolerance", "1e-4")
    _assert_refused(result, seed.parent, before, "--atol and --rtol")


def _renamed_input(tmp_path: Path) -> Path:
    model = onnx.load(str(RESNET))
    old = model.graph.input[0].name
    model.graph.input[0].name = "image"
    for node in model.graph.node:
        node.input[:] = ["image" if i == old else i for i in node.input]
    path = tmp_path / "renamed.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("command", ["verify", "eval", "finetune"])
def test_compared_models_must_take_the_same_inputs(seed, command, loaders):  # noqa: F811
    other = _renamed_input(seed.parent)
    before = _snapshot(seed.parent)
    args = {"verify": ["verify", seed, other],
            "eval": ["eval", seed, "--data", loaders["labeled"], "--reference", other],
            "finetune": ["finetune", seed, "--data", loaders["labeled"], "--teacher", other,
                         "--loss", "distill", "-o", seed.parent / "t.onnx"]}[command]
    result = invoke(*args)
    _assert_refused(result, seed.parent, before, "different inputs")
    assert "input" in result.stderr and "image" in result.stderr


def test_cli_tolerance_defaults_match_verify():
    assert options.DEFAULT_RTOL == verify_module.DEFAULT_RTOL
    assert options.AUTO_ATOL == verify_module.AUTO_ATOL
