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


LEARNING = ("gates", "gdp", "gamma", "group-lasso")


def test_the_readme_says_when_to_choose_every_method():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Methods\n", 1)[1].split("\n## ", 1)[0]
    rows = [re.split(r"(?<!\\)\|", line) for line in section.splitlines()
            if line.startswith("| `")]
    listed = {cells[1].strip().strip("`"): cells[3].strip() for cells in rows}
    assert set(listed) == set(method_names())  # a registered method missing here fails
    assert all(len(when) > 20 for when in listed.values())
    assert all(get_method(n).summary for n in method_names())


def test_what_each_method_declares():
    for name in method_names():
        method = get_method(name)
        assert method.learns == (name in LEARNING)
        assert method.needs_data == (name not in ("l1", "fpgm", "uniform"))
        assert method.targets == registry.ALL_TARGETS  # every built-in steers on every target
    # Every built-in keeps checkpoints of its structure learning (training/structure_loop.py).
    assert all(get_method(n).resumable for n in method_names())


@pytest.fixture
def flops_only():
    """A method registered from outside that can steer on FLOPs only and keeps no state."""
    @registry.register_method("test-flops-only", summary="test only", targets=("flops",),
                              resumable=False)
    def select(request: MethodInput):
        return get_method("l1").select(request)

    yield select
    del registry._METHODS["test-flops-only"]


def test_what_a_method_cannot_do_is_refused_before_any_work(tiny, flops_only, tmp_path):
    result = onnxmorph.prune(str(tiny.path), method="test-flops-only", budget=0.7)
    assert result.method == "test-flops-only" and result.costs["ratio"]["macs"] <= 0.7
    with pytest.raises(PruningError, match="supports --target flops; for --target params use "
                                           "one of l1, "):
        onnxmorph.prune(str(tiny.path), method="test-flops-only", target="params")
    from onnxmorph.errors import TrainingError

    with pytest.raises(TrainingError, match="--method test-flops-only keeps no "
                                            "checkpoint"):
        onnxmorph.prune(str(tiny.path), method="test-flops-only", data=str(tiny.loader),
                        training={"resume": True, "workdir": str(tmp_path)})


@pytest.fixture
def slices_badly():
    """A method that slices by itself and reports that its own check of the slice failed."""
    @registry.register_method("test-slices-badly", summary="test only")
    def select(request: MethodInput):
        from onnxmorph.methods.registry import Selection

        alive = np.ones(request.analysis.channels.num_units, dtype=bool)
        return Selection(alive, {"verify_own_slice": {"passed": False, "max_abs_diff": 1.0}},
                         model=request.analysis.loaded.model)

    yield select
    del registry._METHODS["test-slices-badly"]


def test_a_method_that_slices_itself_must_pass_its_own_verification(tiny, slices_badly):
    from onnxmorph.rewrite.postconditions import PostconditionError

    with pytest.raises(PostconditionError, match="own slice"):
        onnxmorph.prune(str(tiny.path), method="test-slices-badly")
    onnxmorph.prune(str(tiny.path), method="test-slices-badly", verify=False)  # --no-verify
