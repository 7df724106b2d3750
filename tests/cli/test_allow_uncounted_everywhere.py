"""--allow-uncounted reaches every analysis a command makes, the internal re-analyses too
(expand's grown copies, sensitivity, verify from a path), not only the first one."""

from __future__ import annotations

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxmorph.cli.main import cli

_LOADER = """
import numpy as np
def train_batches():
    rng = np.random.default_rng(0)
    for _ in range(3):
        yield rng.standard_normal((4, 3, 8, 8)).astype(np.float32), np.arange(4) % 4
"""


def _det_after_convs() -> onnx.ModelProto:
    """Det has no cost rule (uncounted) but runs in onnxruntime, so results can be verified."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["b"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Det", ["b"], ["y"], name="det"),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
             for n, s in (("w1", (8, 3, 3, 3)), ("w2", (4, 8, 3, 3)))]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_expand_sensitivity_and_verify_honour_allow_uncounted(tmp_path):
    seed, grown = tmp_path / "seed.onnx", tmp_path / "grown.onnx"
    onnx.save(_det_after_convs(), str(seed))
    refused = _invoke("expand", seed, "--width", "1.5", "-o", grown)
    assert refused.exit_code == 2 and "--allow-uncounted" in refused.output
    assert not grown.exists()
    # By budget, expand re-analyses each grown candidate: those must be allowed too.
    allowed = _invoke("expand", seed, "--budget", "2", "--allow-uncounted", "-o", grown)
    assert allowed.exit_code == 0, allowed.output
    assert onnx.load(str(grown)).graph.initializer[0].dims[0] > 8

    verified = _invoke("verify", seed, grown)  # verify reports no cost: nothing to refuse
    assert verified.exit_code == 0, verified.output

    loader = tmp_path / "loader.py"
    loader.write_text(_LOADER)
    assert _invoke("sensitivity", seed, "--data", loader).exit_code == 2
    result = _invoke("sensitivity", seed, "--data", loader, "--allow-uncounted",
                     "--fractions", "0.5")
    assert result.exit_code == 0, result.output
