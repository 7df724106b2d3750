"""One interface for every method: the registry, api.prune's dispatch and the CLI's choices."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxmorph
from onnxmorph.api import METHODS
from onnxmorph.cli.prune_cmd import prune as prune_command
from onnxmorph.errors import PruningError
from onnxmorph.graph import analyze
from onnxmorph.methods import registry
from onnxmorph.methods.registry import MethodInput, UnitScores, get_method, method_names

CRITERIA = ("l1", "fpgm", "apoz", "activation", "taylor")


def test_every_method_is_listed_by_the_api_and_the_cli():
    names = method_names()
    assert set(names) == {"l1", "uniform", "gates", "gdp", "gamma", "group-lasso", *CRITERIA}
    assert METHODS == ("auto", *names)
    choices = next(p for p in prune_command.params if p.name == "method").type.choices
    assert list(choices) == list(METHODS)
    assert set(method_names(criteria_only=True)) == set(CRITERIA)
    assert [get_method(n).needs_data for n in CRITERIA] == [False, False, True, True, True]


@pytest.fixture
def reversed_l1():
    """A method registered from outside the package: keeps the lowest-L1 channels."""
    @registry.register_criterion("test-reversed-l1", summary="test only")
    def scores(request: MethodInput) -> UnitScores:
        from onnxmorph.methods.l1 import l1_unit_scores

        return UnitScores(1.0 / (1e-9 + l1_unit_scores(request.analysis)), {"seen": True})

    yield scores
    del registry._METHODS["test-reversed-l1"]


def test_a_registered_criterion_is_dispatched_with_the_shared_selection(tiny, reversed_l1):
    result = onnxmorph.prune(str(tiny.path), method="test-reversed-l1", budget=0.7,
                             min_channels=2, verify=True)
    assert result.method == "test-reversed-l1" and result.extra["seen"] is True
    assert result.costs["ratio"]["macs"] <= 0.7
    assert result.extra["verify"]["passed"]
    # The selection kept the weakest filters of Conv A: the opposite of L1.
    kept = onnx.numpy_helper.to_array(
        next(i for i in result.model.graph.initializer if i.name == "wa"))
    norms = np.abs(tiny.wa).sum(axis=1)
    weakest = np.sort(norms)[: kept.shape[0]]
    np.testing.assert_allclose(np.sort(np.abs(kept).sum(axis=(1, 2, 3))), weakest, rtol=1e-5)


def test_taken_names_are_refused():
    with pytest.raises(ValueError, match="taken"):
        registry.register_method("l1", summary="again")(lambda request: None)
    with pytest.raises(ValueError, match="taken"):
        registry.register_method("auto", summary="again")(lambda request: None)


@pytest.mark.parametrize("method", ["apoz", "activation", "taylor", "gates"])
def test_data_methods_without_data_say_so(tiny, method):
    with pytest.raises(PruningError, match=f"--method {method} needs data: pass --data"):
        onnxmorph.prune(str(tiny.path), method=method)


def test_sensitivity_refuses_a_method_that_does_not_rank(tiny):
    with pytest.raises(PruningError, match="does not rank channels"):
        onnxmorph.sensitivity(str(tiny.path), data=str(tiny.loader), method="uniform")


@pytest.mark.parametrize("method", CRITERIA)
def test_each_criterion_prunes_to_the_budget_with_the_rules(tiny, method):
    result = onnxmorph.prune(str(tiny.path), method=method, data=str(tiny.loader), budget=0.75,
                             exclude=["conv_a"], verify=True, calibration_batches=1,
                             training={"finetune_steps": 0})
    assert result.costs["ratio"]["macs"] <= 0.75
    structure = result.structure["layers"]
    assert structure["conv_a"]["channels_after"] == 3  # --exclude holds for every criterion
    assert structure["conv_b"]["channels_after"] < 4
    assert result.extra["verify"]["passed"]
    assert result.extra["accuracy_after_slice"] is not None


def test_bad_calibration_batches(tiny):
    with pytest.raises(PruningError, match="--calibration-batches"):
        onnxmorph.prune(str(tiny.path), method="apoz", data=str(tiny.loader),
                        calibration_batches=0)


def test_criteria_scores_rank_within_groups_on_a_real_model():
    from pathlib import Path

    seed = Path(__file__).resolve().parents[2] / "samples" / "mobilenet_seed.onnx"
    analysis = analyze(str(seed))
    scores = registry.unit_scores(get_method("fpgm"), MethodInput(analysis))
    for group in analysis.channels.prunable_groups():
        assert scores.values[group.units].mean() == pytest.approx(1.0)
