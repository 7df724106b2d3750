"""--device: the CUDA path where this onnxruntime build has CUDA, one clean error where not;
per-session thread counts."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxmorph.errors import TrainingError
from onnxmorph.training.artifacts import build_training_artifacts
from onnxmorph.training.session import TrainingSession, check_device
from onnxmorph.training.trainer import TrainOptions
from tests.sample_loaders import write_sample_loader

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="this onnxruntime build has no CUDA")
cpu_build_only = pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has CUDA")
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _artifacts(model, folder):
    return build_training_artifacts(model, folder, trainable=None, frozen=None,
                                    loss="cross-entropy", output_name="logits",
                                    cost_output=None, optimizer="sgd")


@cpu_build_only
def test_cuda_on_the_cpu_build_is_a_one_line_error():
    with pytest.raises(TrainingError) as info:
        TrainOptions(device="cuda")
    message = str(info.value)
    assert "\n" not in message and "CUDAExecutionProvider" in message and "README" in message


@cpu_build_only
def test_prune_cli_with_device_cuda_exits_2_and_writes_nothing(tmp_path):
    from onnxmorph.cli.main import cli

    loader = tmp_path / "loader.py"
    loader.write_text("import numpy as np\ndef train_batches():\n"
                      "    yield np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64)\n")
    out = tmp_path / "p.onnx"
    result = CliRunner().invoke(cli, ["prune", str(SAMPLES / "resnet_seed.onnx"), "--data",
                                      str(loader), "--device", "cuda", "-o", str(out)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--device cuda" in result.output
    assert list(tmp_path.iterdir()) == [loader]


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:1", ""])
def test_unknown_devices_are_refused(device):
    with pytest.raises(TrainingError, match="unknown device"):
        check_device(device)


def test_threads_must_be_positive():
    with pytest.raises(TrainingError, match="--threads"):
        TrainOptions(threads=0)


def test_one_thread_trains_like_the_default(conv_net, toy_data, tmp_path):
    x, y = toy_data
    paths = _artifacts(conv_net(with_cost=False), tmp_path)
    losses = []
    for threads in (None, 1):
        session = TrainingSession(paths, learning_rate=0.05, threads=threads)
        losses.append([session.train_step({"x": x}, y).loss for _ in range(5)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    assert losses[1][-1] < losses[1][0]


@needs_cuda
def test_training_steps_on_cuda_match_cpu(conv_net, toy_data, tmp_path):
    x, y = toy_data
    paths = _artifacts(conv_net(with_cost=False), tmp_path)
    sessions = [TrainingSession(paths, learning_rate=0.05, device=d) for d in ("cpu", "cuda")]
    losses = [[s.train_step({"x": x}, y).loss for _ in range(5)] for s in sessions]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)
    cpu, cuda = (s.parameters() for s in sessions)
    for name in cpu:
        np.testing.assert_allclose(cpu[name], cuda[name], rtol=1e-3, atol=1e-5)


@needs_cuda
def test_prune_learns_a_structure_on_cuda(tmp_path):
    import onnxmorph

    loader = write_sample_loader(tmp_path / "loader.py")
    result = onnxmorph.prune(str(SAMPLES / "resnet_seed.onnx"), data=str(loader), budget=0.5,
                             training={"steps": 10, "finetune_steps": 4, "device": "cuda"})
    report = result.report()
    assert report["ratio"]["macs"] <= 0.5 + 1e-9 and report["accuracy_after"] is not None
    assert report["learned"]["history"]
