"""Learning-rate schedules, step by step against their formulas, and in both training loops."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxmorph.errors import TrainingError
from onnxmorph.graph.analysis import analyze
from onnxmorph.methods.gated import _train_gates
from onnxmorph.methods.select import SelectionRules, prunable_groups
from onnxmorph.training import trainer
from onnxmorph.training.data import DataSource, model_input_specs
from onnxmorph.training.gates import insert_gates
from onnxmorph.training.schedules import SCHEDULES, learning_rate
from onnxmorph.training.session import TrainingSession
from onnxmorph.training.trainer import TrainOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_builders import GraphBuilder  # noqa: E402


def test_constant_is_the_base_rate_at_every_step():
    assert [learning_rate("constant", 0.01, s, 7) for s in range(7)] == [0.01] * 7


def test_cosine_warms_up_linearly_then_follows_half_a_cosine():
    base, total = 0.1, 40  # 5 % of 40: two warm-up steps
    rates = [learning_rate("cosine", base, s, total) for s in range(total)]
    assert rates[:2] == pytest.approx([base / 2, base])
    for s in range(2, total):  # half a cosine over the 38 remaining steps, from base to 0
        assert rates[s] == pytest.approx(base / 2 * (1 + math.cos(math.pi * (s - 2) / 38)))
    assert rates[2] == pytest.approx(base)
    assert 0 < rates[-1] < 0.002 * base
    assert all(b <= a for a, b in zip(rates[2:], rates[3:]))


def test_cosine_without_warm_up_on_a_short_phase():
    # 5 % of 9 steps rounds to no warm-up: the first step runs at the full rate.
    rates = [learning_rate("cosine", 1.0, s, 9) for s in range(9)]
    assert rates == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 9)) for s in range(9)])
    assert learning_rate("cosine", 0.3, 0, 1) == pytest.approx(0.3)


def test_one_cycle_rises_to_the_base_then_falls_far_below_the_start():
    base, total = 0.05, 20  # rises over 6 steps from base/25, falls over 13 to base/25/1e4
    rates = [learning_rate("one-cycle", base, s, total) for s in range(total)]
    start, end = base / 25, base / 25 / 1e4
    for s in range(6):
        assert rates[s] == pytest.approx(start + (base - start) * (1 - math.cos(math.pi * s / 6))
                                         / 2)
    for s in range(6, total):
        assert rates[s] == pytest.approx(end + (base - end) * (1 + math.cos(math.pi * (s - 6)
                                                                            / 13)) / 2)
    assert rates[0] == pytest.approx(start) and rates[6] == pytest.approx(base)
    assert rates[-1] == pytest.approx(end)
    assert max(rates) == pytest.approx(base)


@pytest.mark.parametrize(("args", "message"), [
    (("linear", 0.1, 0, 10), "unknown learning-rate schedule 'linear'"),
    (("cosine", 0.1, 10, 10), "step 10 of a 10-step phase"),
    (("cosine", 0.1, -1, 10), "step -1"),
])
def test_bad_requests_are_refused(args, message):
    with pytest.raises(TrainingError, match=message):
        learning_rate(*args)


def test_train_options_refuse_an_unknown_schedule():
    with pytest.raises(TrainingError, match="use one of auto, constant, cosine, one-cycle"):
        TrainOptions(lr_schedule="step")
    assert TrainOptions().lr_schedule in SCHEDULES


def test_auto_is_constant_in_structure_learning_and_cosine_in_fine_tuning():
    assert TrainOptions().lr_schedule == "auto"
    for s in range(20):
        assert learning_rate("auto", 0.1, s, 20, phase="structure") == 0.1
        assert learning_rate("auto", 0.1, s, 20) == learning_rate("cosine", 0.1, s, 20)
    with pytest.raises(TrainingError, match="unknown training phase 'warmup'"):
        learning_rate("auto", 0.1, 0, 20, phase="warmup")


# -- in the training loops ----------------------------------------------------------------------

_LOADER = """
import numpy as np
rng = np.random.default_rng(1)
X = rng.normal(size=(32, 1, 8, 8)).astype(np.float32)
Y = (np.arange(32) % 2).astype(np.int64)
X[Y == 1, :, :4, :] += 1.5
def train_batches():
    for i in range(0, 32, 16):
        yield X[i:i + 16], Y[i:i + 16]
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schedules")
    loader = folder / "loader.py"
    loader.write_text(_LOADER)
    b = GraphBuilder(0)
    x = b.input("x", [16, 1, 8, 8])
    t = b.conv_bn_relu(x, 4, name="conv1")
    model = b.model([b.gemm(b.flatten(b.gap(t)), 2, name="fc")])
    return model, DataSource(loader, model_input_specs(model)), folder


def test_finetune_runs_each_step_at_the_scheduled_rate(tiny, tmp_path, monkeypatch):
    model, source, _ = tiny
    seen = []
    original = TrainingSession.set_learning_rate
    monkeypatch.setattr(TrainingSession, "set_learning_rate",
                        lambda self, rate: seen.append(rate) or original(self, rate))
    log = tmp_path / "log.jsonl"
    options = TrainOptions(finetune_steps=7, learning_rate=0.04, lr_schedule="one-cycle",
                           log=str(log))
    trainer.finetune(model, source, options, "cross-entropy", None, 7)
    expected = [learning_rate("one-cycle", 0.04, s, 7) for s in range(7)]
    assert seen[-7:] == pytest.approx(expected)
    logged = [json.loads(line)["learning_rate"] for line in log.read_text().splitlines()]
    assert logged == pytest.approx(expected)


def test_structure_learning_runs_each_step_at_the_scheduled_rate(tiny, monkeypatch):
    model, source, folder = tiny
    analysis = analyze(model)
    gated = insert_gates(analysis, prunable_groups(analysis, SelectionRules()),
                         analysis.cost.macs)
    seen = []
    original = TrainingSession.set_learning_rate
    monkeypatch.setattr(TrainingSession, "set_learning_rate",
                        lambda self, rate: seen.append(rate) or original(self, rate))
    options = TrainOptions(steps=6, learning_rate=0.01, lr_schedule="constant", strength=0.0)
    _train_gates(gated, analysis, source, options, "cross-entropy", None, 0.5, "flops",
                 str(folder / "constant"))
    assert seen[-6:] == [0.01] * 6
    seen.clear()
    options = TrainOptions(steps=6, learning_rate=0.01, strength=0.0)  # auto: constant here
    _train_gates(gated, analysis, source, options, "cross-entropy", None, 0.5, "flops",
                 str(folder / "auto"))
    assert seen[-6:] == [0.01] * 6
    seen.clear()
    options = TrainOptions(steps=6, learning_rate=0.01, lr_schedule="one-cycle", strength=0.0)
    _train_gates(gated, analysis, source, options, "cross-entropy", None, 0.5, "flops",
                 str(folder / "one-cycle"))
    assert np.allclose(seen[-6:], [learning_rate("one-cycle", 0.01, s, 6) for s in range(6)])


@pytest.mark.parametrize("method", ["gamma", "group-lasso", "gdp"])
def test_every_structure_learning_method_follows_the_schedule(tiny, monkeypatch, method):
    import onnxmorph

    model, _, folder = tiny
    seen = []
    original = TrainingSession.set_learning_rate
    monkeypatch.setattr(TrainingSession, "set_learning_rate",
                        lambda self, rate: seen.append(rate) or original(self, rate))
    onnxmorph.prune(model, method=method, budget=0.8, data=str(folder / "loader.py"),
                    round_to=1, training=dict(steps=6, finetune_steps=3, strength=0.0
                                              if method != "gdp" else None,
                                              lr_schedule="one-cycle", learning_rate=0.01))
    structure = [learning_rate("one-cycle", 0.01, s, 6) for s in range(6)]
    finetune = [learning_rate("one-cycle", 0.01, s, 3) for s in range(3)]
    assert np.allclose(seen[:6], structure) and np.allclose(seen[-3:], finetune)
