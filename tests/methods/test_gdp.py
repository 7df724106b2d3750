"""`--method gdp` end to end: the CLI reaches the budget, writes a verified model, and the
report shows that accuracy right after slicing is the gated model's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

import onnxmorph
from onnxmorph.cli.main import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sample_loaders import write_sample_loader  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_prune_gdp_reaches_the_budget_and_the_slice_is_the_gated_model(tmp_path):
    loader = write_sample_loader(tmp_path / "loader.py")
    out = tmp_path / "resnet_gdp.onnx"
    result = CliRunner().invoke(cli, [
        "prune", str(SAMPLES / "resnet_seed.onnx"), "--data", str(loader), "--method", "gdp",
        "--budget", "0.6", "--steps", "12", "--finetune-steps", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "accuracy gated:" in result.output and "accuracy after slice:" in result.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["method"] == "gdp" and report["ratio"]["macs"] <= 0.6
    gdp = report["gdp"]
    assert gdp["closed_gates"] > 0 and gdp["closed_by_budget_or_rules"] == 0
    # No retraining gap: the sliced model computes the gated one.
    assert report["verify_gates_absorbed"]["passed"]
    assert report["output_error_sliced_vs_gated"] < 1e-5
    assert report["accuracy_after_slice"] == report["accuracy_gated"]
    assert report["learned"]["history"][-1]["alive_cost_ratio"] <= 0.6
    pruned = onnxmorph.analyze(str(out))
    assert pruned.macs <= 0.6 * onnxmorph.analyze(str(SAMPLES / "resnet_seed.onnx")).macs
    assert not any(i.name.startswith("onnxmorph") for i in onnx.load(out).graph.initializer)


def test_the_structure_steered_on_is_the_one_the_rules_keep():
    from onnxmorph.graph.analysis import analyze
    from onnxmorph.methods.gdp import _kept_by_rules
    from onnxmorph.methods.select import SelectionRules, prunable_groups

    analysis = analyze(SAMPLES / "resnet_seed.onnx")
    rules = SelectionRules(round_to=8, min_channels=2)
    groups = prunable_groups(analysis, rules)
    open_units = np.zeros(analysis.channels.num_units, dtype=bool)
    first, second = groups[0], groups[1]
    open_units[first.units[:9]] = True  # 9 open → 16 kept; none open → min-channels, rounded
    kept = _kept_by_rules(open_units, groups, rules)
    assert kept[first.units].sum() == 16 and kept[first.units[:9]].all()
    assert kept[second.units].sum() == 8
    assert (kept | ~open_units).all()  # never closes an open unit
