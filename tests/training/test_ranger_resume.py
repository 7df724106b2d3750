"""`prune --optimizer ranger --resume`: Ranger's moments, slow weights and step count survive
an interruption, so the resumed run ends where an uninterrupted one ends."""

import onnx
from click.testing import CliRunner

from onnxmorph.cli.main import cli
from tests.onnx_builders import GraphBuilder
from tests.training.test_resume import _LOADER, _args, _assert_same_result


def test_sigint_during_structure_learning_with_ranger_then_resume(tmp_path, monkeypatch):
    b = GraphBuilder(0)
    t = b.conv_bn_relu(b.input("x", ["N", 1, 8, 8]), 8, name="conv1")
    t = b.conv_bn_relu(t, 8, name="conv2")
    model = tmp_path / "small.onnx"
    onnx.save(b.model([b.gemm(b.flatten(b.gap(t)), 2, name="fc")]), str(model))
    loader = tmp_path / "loader.py"
    loader.write_text(_LOADER)
    ranger = ("--optimizer", "ranger", "--lr-schedule", "one-cycle")
    reference, reference_log = tmp_path / "reference.onnx", tmp_path / "ref.jsonl"
    result = CliRunner().invoke(cli, _args(model, loader, reference, reference_log, *ranger))
    assert result.exit_code == 0, result.output

    out, log = tmp_path / "out.onnx", tmp_path / "train.jsonl"
    monkeypatch.setenv("STOP_SIG", "2")
    # During gate step 4: the checkpoint holds 5 Ranger steps; the resumed run crosses the
    # rectification switch and the first Lookahead synchronisation (both at step 6).
    monkeypatch.setenv("STOP_AT", str(4 + 2))
    result = CliRunner().invoke(cli, _args(model, loader, out, log, *ranger))
    assert result.exit_code == 130, result.output
    assert list((tmp_path / "out.onnx.onnxmorph-work" / "gates").glob("*/ort.ckpt.ranger.npz"))
    monkeypatch.delenv("STOP_AT")
    result = CliRunner().invoke(cli, _args(model, loader, out, log, "--resume", *ranger))
    assert result.exit_code == 0, result.output
    _assert_same_result(out, reference, log, reference_log)
