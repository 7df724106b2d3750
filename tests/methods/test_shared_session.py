"""Every learning method trains through one session builder (training/trainer.py
`phase_session`): --optimizer and --lr-schedule reach structure learning and fine-tuning of
gates, gdp, gamma and group-lasso alike."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import onnxmorph
from onnxmorph.training.schedules import learning_rate
from onnxmorph.training.session import TrainingSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from regularizer_models import write_net_and_loader  # noqa: E402

STEPS, FINETUNE = 7, 5
LEARNING_METHODS = [("gates", {}), ("gdp", {}), ("gamma", {}),
                    ("group-lasso", {"batchnorm": False})]


@pytest.fixture
def sessions(monkeypatch):
    """Every TrainingSession opened, in order, with the rates set on it step by step."""
    opened: list[TrainingSession] = []
    rates: dict[int, list[float]] = {}
    original_init, original_set = TrainingSession.__init__, TrainingSession.set_learning_rate

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        opened.append(self)

    def set_rate(self, rate):
        rates.setdefault(id(self), []).append(rate)
        original_set(self, rate)

    monkeypatch.setattr(TrainingSession, "__init__", init)
    monkeypatch.setattr(TrainingSession, "set_learning_rate", set_rate)
    return opened, rates


@pytest.mark.parametrize("method, net", LEARNING_METHODS)
def test_ranger_and_the_schedule_drive_every_phase(tmp_path, sessions, method, net):
    opened, rates = sessions
    path, loader = write_net_and_loader(tmp_path, **net)
    result = onnxmorph.prune(str(path), method=method, data=str(loader), budget=0.7, round_to=1,
                             training={"steps": STEPS, "finetune_steps": FINETUNE,
                                       "learning_rate": 0.01, "optimizer": "ranger",
                                       "lr_schedule": "one-cycle"})
    assert result.report()["ratio"]["macs"] <= 0.7
    structure, finetune = opened  # one session per phase, both from phase_session
    for session, steps, phase in ((structure, STEPS, "structure"),
                                  (finetune, FINETUNE, "finetune")):
        assert session.ranger is not None and session.ranger.t == steps  # Ranger took each step
        expected = [learning_rate("one-cycle", 0.01, s, steps, phase=phase)
                    for s in range(steps)]
        assert rates[id(session)] == pytest.approx(expected)
    # Gate parameters are the method's own to move, never Ranger's; every weight is Ranger's.
    own = [n for n in structure.paths.trainable if n not in structure.ranger.names]
    assert bool(own) == (method in ("gates", "gdp"))
    assert all(n.startswith("onnxmorph") for n in own)
    history = result.extra["learned"]["history"]
    assert [row["learning_rate"] for row in history] == pytest.approx(
        [learning_rate("one-cycle", 0.01, row["step"], STEPS, phase="structure")
         for row in history])


@pytest.mark.parametrize("method, net", LEARNING_METHODS[1:])
def test_adamw_with_the_default_schedule(tmp_path, sessions, method, net):
    opened, rates = sessions
    path, loader = write_net_and_loader(tmp_path, **net)
    onnxmorph.prune(str(path), method=method, data=str(loader), budget=0.7, round_to=1,
                    training={"steps": 4, "finetune_steps": 3, "learning_rate": 0.01})
    structure, finetune = opened
    assert structure.ranger is None and finetune.ranger is None
    assert rates[id(structure)] == [0.01] * 4  # auto: constant while learning the structure
    assert rates[id(finetune)] == pytest.approx([learning_rate("cosine", 0.01, s, 3)
                                                 for s in range(3)])
