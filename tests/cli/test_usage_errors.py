"""click's usage errors (unknown option or command, bad choice, missing argument) are one line
on stderr and exit code 2, like every other refusal; `--help` and `--version` are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from onnxmorph.cli.main import cli

SEED = str(Path(__file__).resolve().parents[2] / "samples" / "resnet_seed.onnx")


@pytest.mark.parametrize("args, needle, where", [
    (["--bogus", "prune", SEED], "No such option '--bogus'", "'onnxmorph --help'"),
    (["prune", SEED, "--bogus"], "No such option '--bogus'", "'onnxmorph prune --help'"),
    (["prune", SEED, "--method", "nonsense"], "'nonsense' is not one of", "prune --help"),
    (["prune", SEED, "--budget", "abc"], "'abc' is not a valid float", "prune --help"),
    (["prune"], "Missing argument 'MODEL'", "prune --help"),
    (["verify", SEED], "Missing argument 'PRUNED'", "verify --help"),
    (["nocommand"], "No such command 'nocommand'", "'onnxmorph --help'"),
])
def test_usage_errors_are_one_line_and_exit_2(args, needle, where, tmp_path):
    result = CliRunner().invoke(cli, args, prog_name="onnxmorph", catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxmorph: error: ") and needle in lines[0], lines[0]
    assert where in lines[0] and "Usage:" not in result.output
    assert result.stdout == ""


def test_help_and_version_still_work():
    for args in (["--help"], ["prune", "--help"], ["--version"]):
        result = CliRunner().invoke(cli, args, prog_name="onnxmorph")
        assert result.exit_code == 0 and result.stdout and not result.stderr, args


def test_bare_command_still_shows_the_help():
    result = CliRunner().invoke(cli, [], prog_name="onnxmorph")
    assert "Usage: onnxmorph" in result.output and "Commands:" in result.output
