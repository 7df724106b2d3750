"""Gated structure learning end to end: gates respond to the cost term, the budget controller
steers λ, `onnxmorph.prune(..., data=...)` meets the budget and hands back a plain model."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxmorph
from onnxmorph.errors import PruningError, TrainingError
from onnxmorph.graph.analysis import analyze
from onnxmorph.methods.gated import _train_gates
from onnxmorph.methods.select import SelectionRules, prunable_groups
from onnxmorph.training.controller import BudgetController
from onnxmorph.training.data import DataSource, model_input_specs
from onnxmorph.training.gates import PREFIX, insert_gates
from onnxmorph.training.trainer import TrainOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_builders import GraphBuilder  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RESNET = SAMPLES / "resnet_seed.onnx"
MOBILENET = SAMPLES / "mobilenet_seed.onnx"

# 256 training images in batches of 32 and 64 test images: a few seconds per prune.
_FASHION_LOADER = """
import numpy as np
_npz = np.load({npz!r})
def _prep(x):
    return (((x.astype(np.float32) / 255.0) - 0.2860) / 0.3530)[:, None]
X = _prep(_npz["x_train"][:256]); Y = _npz["y_train"][:256].astype(np.int64)
XT = _prep(_npz["x_test"][:64]); YT = _npz["y_test"][:64].astype(np.int64)
def train_batches():
    for i in range(0, 256, 32):
        yield {train_item}
def eval_batches():
    yield {eval_item}
"""


def _fashion_loader(folder: Path, labels: bool, name: str) -> Path:
    path = folder / name
    path.write_text(_FASHION_LOADER.format(
        npz=str(SAMPLES / "fashion_mnist_subset.npz"),
        train_item="X[i:i + 32], Y[i:i + 32]" if labels else "X[i:i + 32]",
        eval_item="XT, YT" if labels else "XT"))
    return path


@pytest.fixture(scope="module")
def loaders(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loaders")
    return {"labeled": _fashion_loader(folder, True, "tiny_loader.py"),
            "unlabeled": _fashion_loader(folder, False, "tiny_loader_unlabeled.py")}


def _plain_session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _assert_plain_pruned_model(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model)
    for node in model.graph.node:
        assert not node.name.startswith(PREFIX), node.name
        assert not any(i.startswith(PREFIX) for i in node.input), node.name
    for init in model.graph.initializer:
        assert not init.name.startswith(PREFIX), init.name
    assert [i.name for i in model.graph.input if i.name.startswith("onnxmorph")] == []
    assert [o.name for o in model.graph.output] == ["logits"]
    x = np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype(np.float32)
    session = _plain_session(model)
    assert [i.name for i in session.get_inputs()] == ["input"]
    out = session.run(None, {"input": x})[0]
    assert out.shape == (3, 10)
    assert np.isfinite(out).all()


def _assert_report(report: dict, budget: float, loss: str, labels: bool) -> None:
    assert report["method"] == "gates"
    assert report["loss"] == loss
    assert report["ratio"]["macs"] <= budget + 0.01
    assert report["pruned"]["macs"] < report["seed"]["macs"]
    for key in ("accuracy_before", "accuracy_after", "accuracy_after_slice"):
        assert key in report
        if labels:
            assert 0.0 <= report[key] <= 1.0
        else:
            assert report[key] is None
    assert 0.0 <= report["agreement_with_seed"] <= 1.0
    assert report["verify_gates_folded"]["passed"] is True
    history = report["learned"]["history"]
    assert history and history[0]["step"] == 0
    assert all(math.isfinite(row["task_loss"]) for row in history)
    assert "model" not in report["learned"]  # the trained ModelProto stays out of the report
    json.dumps(report)  # the report is plain JSON


# -- budget controller --------------------------------------------------------------------------

def test_controller_grows_lambda_while_over_budget():
    controller = BudgetController(0.5)
    start = controller.lam
    lams = [controller.update(0.9) for _ in range(10)]
    assert lams[0] > start
    assert all(b > a for a, b in zip(lams, lams[1:]))


def test_controller_switches_cost_off_under_budget_and_resumes_gently():
    controller = BudgetController(0.5, initial=2.0)
    assert [controller.update(0.3) for _ in range(3)] == [0.0, 0.0, 0.0]
    # the stored strength decayed while under budget, so pressure resumes below 2.0
    resumed = controller.update(0.6)
    assert 0.0 < resumed < 2.0 * math.exp(0.1 * 0.2)
    assert BudgetController(0.5, initial=2.0).update(0.5) == 0.0


def test_controller_step_is_proportional_and_capped():
    def after_one(ratio: float) -> BudgetController:
        controller = BudgetController(0.5, initial=1.0, rate=0.1)
        controller.update(ratio)
        return controller

    assert after_one(0.6).lam < after_one(0.7).lam < after_one(1.0).lam
    assert after_one(1.0).lam == pytest.approx(after_one(5.0).lam)  # error capped at +1
    assert after_one(0.0).strength == pytest.approx(math.exp(0.1 * (-0.5 - 0.05)))


def test_controller_stays_in_range():
    high = BudgetController(0.5, initial=1e4)
    assert high.update(1.0) == 1e4
    low = BudgetController(0.5, initial=1e-4)
    low.update(0.0)
    assert low.strength == 1e-4


@pytest.mark.parametrize("strength", [0.0, 3.0, 20.0])
def test_fixed_strength_is_not_steered(strength):
    controller = BudgetController(0.5, strength=strength)
    assert controller.lam == strength
    assert [controller.update(r) for r in (1.0, 0.0, 0.5)] == [strength] * 3


# -- gate dynamics on a small model -------------------------------------------------------------

_SYNTHETIC_LOADER = """
import numpy as np
rng = np.random.default_rng(1)
X = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
Y = (np.arange(64) % 2).astype(np.int64)
X[Y == 1, :, :4, :] += 1.5  # class 1: brighter top half
def train_batches():
    for i in range(0, 64, 16):
        yield X[i:i + 16], Y[i:i + 16]
"""


def _small_net() -> onnx.ModelProto:
    b = GraphBuilder(0)
    x = b.input("x", ["N", 1, 8, 8])
    t = b.conv_bn_relu(x, 8, name="conv1")
    t = b.conv_bn_relu(t, 8, name="conv2")
    return b.model([b.gemm(b.flatten(b.gap(t)), 2, name="fc")])


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    loader = folder / "synthetic.py"
    loader.write_text(_SYNTHETIC_LOADER)
    analysis = analyze(_small_net())
    return analysis, DataSource(loader, model_input_specs(analysis.loaded.model)), folder


def _learn(small_setup, name: str, **options):
    analysis, source, folder = small_setup
    groups = prunable_groups(analysis, SelectionRules())
    gated = insert_gates(analysis, groups, analysis.cost.macs)
    # Gate logits move by the GateOptimizer's step (with momentum), whatever the weights' rate.
    opts = TrainOptions(**{"steps": 80, "learning_rate": 0.02, **options})
    probs, log = _train_gates(gated, analysis, source, opts, "cross-entropy", None, 0.5,
                              "flops", str(folder / name))
    return probs[gated.gated_units], log


def test_gates_close_under_a_strong_cost_and_stay_open_without(small_setup):
    closed, closed_log = _learn(small_setup, "strong", strength=200.0)
    opened, open_log = _learn(small_setup, "none", strength=0.0)
    assert closed.mean() < 0.2, closed
    assert opened.mean() > 0.8, opened
    assert (closed < 0.1).mean() > 0.8  # most gates end below the alive threshold
    assert np.median(opened) > 0.9
    # the strong cost drove the expected cost down; without it the structure is untouched
    assert closed_log["history"][-1]["cost"] < 0.2
    assert open_log["alive_cost_ratio"] == 1.0
    assert closed_log["alive_cost_ratio"] < 0.5
    # λ was the fixed strength throughout
    assert {row["lambda"] for row in closed_log["history"]} == {200.0}
    # without the cost term the task was learned
    assert open_log["history"][-1]["task_loss"] < 0.5 * open_log["history"][0]["task_loss"]


def test_budget_controller_in_the_loop_raises_lambda_while_over_budget(small_setup):
    _, log = _learn(small_setup, "controlled", steps=30, learning_rate=2e-3)
    lams = [row["lambda"] for row in log["history"]]
    # every structure read back is still over a 0.5 budget, so λ only grows
    assert all(row["alive_cost_ratio"] > 0.5 for row in log["history"])
    assert all(b > a for a, b in zip(lams, lams[1:]))
    assert log["final_lambda"] > lams[0]


def test_training_log_is_written(small_setup, tmp_path):
    log_path = tmp_path / "train.jsonl"
    _, log = _learn(small_setup, "logged", steps=6, log=str(log_path))
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 5]
    assert rows == json.loads(json.dumps(log["history"]))
    assert set(rows[0]) >= {"task_loss", "cost", "alive_cost_ratio", "lambda", "alive"}


# -- onnxmorph.prune with data ------------------------------------------------------------------

def test_prune_with_labels_meets_the_budget(loaders, tmp_path):
    result = onnxmorph.prune(str(RESNET), data=str(loaders["labeled"]), budget=0.5,
                             training=dict(steps=30, finetune_steps=5))
    report = result.report()
    _assert_report(report, 0.5, "ce+distill", labels=True)
    assert report["steps"] == 30 and report["finetune_steps"] == 5
    _assert_plain_pruned_model(result.model)
    # the structure agrees with the model that was written
    assert analyze(result.model).macs == pytest.approx(report["pruned"]["macs"], rel=1e-6)
    paths = result.save(tmp_path / "pruned.onnx")
    out = _plain_session(paths["model"]).run(
        None, {"input": np.zeros((2, 1, 28, 28), np.float32)})[0]
    assert out.shape == (2, 10)
    saved = json.loads(paths["report"].read_text())
    assert saved["ratio"]["macs"] == report["ratio"]["macs"]
    assert saved["verify_gates_folded"]["passed"] is True


def test_prune_label_free_distills_from_the_seed(loaders):
    result = onnxmorph.prune(str(RESNET), data=str(loaders["unlabeled"]), budget=0.5,
                             training=dict(steps=20, finetune_steps=3))
    _assert_report(result.report(), 0.5, "distill", labels=False)
    _assert_plain_pruned_model(result.model)


def test_prune_params_target(loaders):
    result = onnxmorph.prune(str(RESNET), data=str(loaders["labeled"]), target="params",
                             budget=0.6, training=dict(steps=10))
    assert result.report()["ratio"]["params"] <= 0.61
    _assert_plain_pruned_model(result.model)


def test_hardswish_model_trains_through_the_gated_path(loaders, tmp_path):
    seed_ops = {n.op_type for n in onnx.load(str(MOBILENET)).graph.node}
    assert {"HardSwish", "HardSigmoid"} <= seed_ops
    log = tmp_path / "mobilenet.jsonl"
    result = onnxmorph.prune(str(MOBILENET), data=str(loaders["labeled"]), budget=0.7,
                             training=dict(steps=12, finetune_steps=3, log=str(log)))
    report = result.report()
    _assert_report(report, 0.7, "ce+distill", labels=True)
    _assert_plain_pruned_model(result.model)
    # the hard activations are rebuilt for training only; the output keeps the seed's ops
    assert {"HardSwish", "HardSigmoid"} <= {n.op_type for n in result.model.graph.node}
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["structure"] * 4 + ["finetune"] * 3
    assert [r["step"] for r in rows] == [0, 5, 10, 11, 0, 1, 2]  # gates: every 5th and last
    assert all(math.isfinite(r["task_loss"]) for r in rows)


# -- failures -----------------------------------------------------------------------------------

def test_nan_loss_names_the_step(tmp_path):
    loader = tmp_path / "nan_loader.py"
    loader.write_text(textwrap.dedent("""
        import numpy as np
        rng = np.random.default_rng(0)
        def _batch(i):
            x = rng.normal(size=(8, 1, 28, 28)).astype(np.float32)
            if i == 3:  # finite, but overflows inside the network (NaN inputs are refused)
                x[0] = 3e38
            return x, np.arange(8) % 10
        def train_batches():
            for i in range(6):
                yield _batch(i)
        def eval_batches():
            yield _batch(0)
        """))
    out = tmp_path / "pruned.onnx"
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) at training step 3") as info:
        onnxmorph.prune(str(RESNET), data=str(loader), budget=0.5,
                        training=dict(steps=10)).save(out)
    assert "check the data for NaN" in str(info.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [loader]


def test_unreachable_budget_fails_before_training(tmp_path):
    calls = tmp_path / "calls.txt"
    loader = tmp_path / "loader.py"
    loader.write_text(textwrap.dedent(f"""
        import numpy as np
        def train_batches():
            open({str(calls)!r}, "a").write("train\\n")
            yield np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64)
        """))
    workdir = tmp_path / "work"
    with pytest.raises(PruningError, match=r"budget 0.001 cannot be met"):
        onnxmorph.prune(str(RESNET), data=str(loader), budget=0.001,
                        training=dict(steps=5, workdir=str(workdir)))
    assert not calls.exists()  # the loader was never asked for a batch
    assert not workdir.exists()


def test_min_channels_can_make_the_budget_unreachable(tmp_path):
    loader = _fashion_loader(tmp_path, True, "loader.py")
    with pytest.raises(PruningError, match=r"cannot be met.*--min-channels"):
        onnxmorph.prune(str(RESNET), data=str(loader), budget=0.3, min_channels=64,
                        training=dict(steps=5))
