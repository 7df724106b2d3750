"""Post-conditions: a model onnxmorph made that is broken is never written.

Each check is made to fail by breaking what the slicer (or the trainer) returns; the command
must end with exit code 1, one line naming the check and the node or output at fault, and no
file in the output folder.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

import onnxmorph.api
from onnxmorph.cli.main import cli
from onnxmorph.rewrite.postconditions import PostconditionError, offending_node
from tests.cli.test_training_commands import loaders  # noqa: F401  (a fixture)

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RESNET = SAMPLES / "resnet_seed.onnx"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _dangling_input(model: onnx.ModelProto) -> None:
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    conv.input[0] = "no_such_tensor"


def _unregistered_op(model: onnx.ModelProto) -> None:
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))


def _changed_weight(model: onnx.ModelProto) -> None:
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    value = numpy_helper.to_array(init).copy()
    value.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(value, init.name))


def _batch_folded(model: onnx.ModelProto) -> None:
    """The output reshaped to a constant [1, 10]: right at batch 1, wrong at any other."""
    out = model.graph.output[0].name
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 10], np.int64),
                                                           "folded_shape"))
    for node in model.graph.node:
        node.output[:] = [f"{o}_pre" if o == out else o for o in node.output]
    model.graph.node.append(helper.make_node("Reshape", [f"{out}_pre", "folded_shape"], [out],
                                             name="folded_reshape"))


BREAKS = {
    "checker": (_dangling_input, "'onnx.checker'", "/stages/stages.0/body/body.0/body.0.0/Conv"),
    "loads": (_unregistered_op, "'loads in onnxruntime'", "/stem/stem.1/Relu"),
    "verify": (_changed_weight, "'verify'", "output 'logits'"),
    "second_batch": (_batch_folded, "'verify (runs at two batch sizes)'", "folded_reshape"),
}


def _assert_refused(result, folder: Path, before: set[str], check: str, where: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxmorph: error: post-condition ")
    assert check in lines[0] and where in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert {p.name for p in folder.iterdir()} == before  # nothing written, no temporary


@pytest.mark.parametrize("case", list(BREAKS))
def test_prune_never_writes_a_broken_model(case, tmp_path, monkeypatch):
    breaks, check, where = BREAKS[case]
    real = onnxmorph.api.slice_channels

    def broken_slicer(*args, **kwargs):
        result = real(*args, **kwargs)
        breaks(result.model)
        return result

    monkeypatch.setattr(onnxmorph.api, "slice_channels", broken_slicer)
    seed = tmp_path / "seed.onnx"
    shutil.copy(RESNET, seed)
    result = invoke("prune", seed, "--method", "l1", "-o", tmp_path / "out.onnx")
    _assert_refused(result, tmp_path, {"seed.onnx"}, check, where)
    # --no-verify is the way to skip the checks (and --verify, the default, is still accepted)
    skipped = invoke("prune", seed, "--method", "l1", "-o", tmp_path / "out.onnx", "--no-verify")
    assert skipped.exit_code == 0, skipped.output
    assert (tmp_path / "out.onnx").is_file()


def test_expand_never_writes_a_broken_model(tmp_path, monkeypatch):
    expand_module = importlib.import_module("onnxmorph.expand")  # the package shadows it
    real = expand_module.grow_channels

    def broken_grow(*args, **kwargs):
        grown = real(*args, **kwargs)
        _changed_weight(grown.model)
        return grown

    monkeypatch.setattr(expand_module, "grow_channels", broken_grow)
    result = invoke("expand", RESNET, "--width", "1.5", "-o", tmp_path / "big.onnx", "--verify")
    _assert_refused(result, tmp_path, set(), "'verify'", "output 'logits'")


def test_finetune_never_writes_a_model_with_non_finite_outputs(loaders, tmp_path,  # noqa: F811
                                                              monkeypatch):
    import onnxmorph.training.trainer as trainer

    def nan_training(model, *args, **kwargs):
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        init = next(i for i in broken.graph.initializer if len(i.dims) == 4)
        value = numpy_helper.to_array(init).copy()
        value[:] = np.nan
        init.CopyFrom(numpy_helper.from_array(value, init.name))
        return broken

    monkeypatch.setattr(trainer, "finetune", nan_training)
    result = invoke("finetune", RESNET, "--data", loaders["labeled"], "--steps", "1",
                    "-o", tmp_path / "tuned.onnx")
    _assert_refused(result, tmp_path, set(), "'finite outputs'", "output 'logits'")


def test_prune_with_data_checks_the_slice_and_the_trained_model(loaders, tmp_path):  # noqa: F811
    out = tmp_path / "p.onnx"
    result = invoke("prune", RESNET, "--method", "l1", "--data", loaders["labeled"],
                    "--finetune-steps", "2", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verify"]["passed"] and report["verify"]["batch_sizes"] == [1, 3]
    assert report["postconditions"]["passed"]
    assert report["postconditions"]["batch_sizes"] == [1, 3]


def test_offending_node_reads_checker_and_runtime_messages():
    assert offending_node("Non-zero status code returned while running Reshape node. "
                          "Name:'folded_reshape' Status Message: x") == "folded_reshape"
    assert offending_node("input 'x' of node: \nname: conv1 OpType: Conv\n is not") == "conv1"
    assert offending_node("no node here") is None
    assert PostconditionError("x").exit_code == 1


def test_a_seed_that_does_not_run_is_bad_input_not_a_bug(tmp_path):
    """Flatten(axis=3) passes onnx's checks but feeds Gemm 1 feature instead of 64: the seed
    itself fails in onnxruntime, which is refused before any work (exit 2)."""
    model = onnx.load(str(RESNET))
    flatten = next(n for n in model.graph.node if n.op_type == "Flatten")
    flatten.attribute[0].i = 3
    seed = tmp_path / "seed.onnx"
    onnx.save(model, str(seed))
    result = invoke("prune", seed, "--method", "l1", "-o", tmp_path / "out.onnx")
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "the seed model fails to run" in lines[0]
    assert "/fc/Gemm" in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == ["seed.onnx"]


def test_an_unexpected_exception_is_one_line_and_exit_1(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.setattr(onnxmorph.api, "slice_channels", bug)
    result = invoke("prune", RESNET, "--method", "l1", "-o", tmp_path / "out.onnx")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxmorph: internal error: TypeError")
    assert "--debug" in lines[0] and list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError):  # --debug lets the traceback through
        invoke("--debug", "prune", RESNET, "--method", "l1", "-o", tmp_path / "out.onnx")


def test_a_seed_with_non_finite_outputs_is_bad_input(tmp_path):
    """BatchNormalization with epsilon -1 gives NaN: removing such a channel is not zeroing
    it, so nothing made from this seed can be verified (a case the fuzzer found)."""
    model = onnx.load(str(RESNET))
    norm = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    next(a for a in norm.attribute if a.name == "epsilon").f = -1.0
    seed = tmp_path / "seed.onnx"
    onnx.save(model, str(seed))
    result = invoke("prune", seed, "--method", "l1", "-o", tmp_path / "out.onnx")
    assert result.exit_code == 2, result.output
    assert "is not finite" in result.stderr and "--no-verify" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["seed.onnx"]
