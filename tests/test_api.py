"""The Python API on the two sample seeds: `onnxmorph.prune`, `PruneResult.save`, `analyze`."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxmorph
from onnxmorph.errors import OnnxMorphError, PruningError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
RESNET = SAMPLES / "resnet_seed.onnx"
MOBILENET = SAMPLES / "mobilenet_seed.onnx"
SEEDS = [RESNET, MOBILENET]
IDS = ["resnet", "mobilenet"]


@functools.cache
def _pruned(path: Path, **options) -> onnxmorph.PruneResult:
    return onnxmorph.prune(path, method="l1", budget=0.5, **options)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


@pytest.mark.parametrize("path", SEEDS, ids=IDS)
def test_prune_l1_half_budget(path):
    before = path.read_bytes()
    result = _pruned(path, verify=True)
    assert path.read_bytes() == before  # the seed file is never touched
    report = result.report()
    assert report["method"] == "l1" and report["target"] == "flops"
    assert report["budget"] == 0.5
    assert report["pruned"]["macs"] <= 0.52 * report["seed"]["macs"]
    assert 0 < report["ratio"]["macs"] <= 0.52
    assert report["pruned"]["params"] < report["seed"]["params"]
    assert report["verify"]["passed"], report["verify"]
    assert report["verify"]["batch_sizes"] == [1, 3]
    onnx.checker.check_model(result.model, full_check=True)

    # The report's numbers are the cost model's, which match re-analysing both models.
    seed = onnxmorph.analyze(path)
    assert report["seed"] == {"macs": round(seed.macs), "params": round(seed.params)}
    again = onnxmorph.analyze(result.model)
    assert round(again.macs) == report["pruned"]["macs"]
    assert round(again.params) == report["pruned"]["params"]
    # And onnxruntime agrees with an independent run of both models.
    check = onnxmorph.verify(path, result.model)
    assert check.passed and check.batch_sizes == [1, 3]


@pytest.mark.parametrize("path", SEEDS, ids=IDS)
def test_save_writes_model_structure_and_report(path, tmp_path):
    result = _pruned(path, verify=True)
    paths = result.save(tmp_path / "out.onnx")
    assert paths == {"model": tmp_path / "out.onnx",
                     "structure": tmp_path / "out.structure.json",
                     "report": tmp_path / "out.report.json",
                     "plot": tmp_path / "out.structure.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.onnx", "out.report.json", "out.structure.json",
        "out.structure.png"]  # no temporary files left

    saved = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(saved, full_check=True)
    assert onnxmorph.verify(path, tmp_path / "out.onnx").passed

    report = json.loads((tmp_path / "out.report.json").read_text())
    assert {"method", "target", "budget", "seed", "pruned", "ratio", "verify"} <= set(report)
    for key in ("seed", "pruned", "ratio"):
        assert set(report[key]) == {"macs", "params"}
    assert report["pruned"] == result.report()["pruned"]
    assert report["verify"]["passed"] is True

    structure = json.loads((tmp_path / "out.structure.json").read_text())
    assert structure["format"] == "onnxmorph-structure" and structure["version"] == 1
    seed = onnxmorph.analyze(path)
    seed_nodes = _nodes(seed.loaded.model)
    conv_and_gemm = {n.name for n in seed.loaded.model.graph.node
                     if n.op_type in ("Conv", "Gemm")}
    assert set(structure["layers"]) == conv_and_gemm
    saved_nodes, saved_inits = _nodes(saved), _initializers(saved)
    shrunk = 0
    for name, layer in structure["layers"].items():
        assert {"op", "output", "channels_before", "channels_after", "kept"} <= set(layer)
        assert layer["op"] == seed_nodes[name].op_type
        assert layer["output"] == seed_nodes[name].output[0]
        kept = layer["kept"]
        assert len(kept) == layer["channels_after"] >= 1
        assert kept == sorted(set(kept)) and kept[-1] < layer["channels_before"]
        seed_w = seed.loaded.initializers[seed_nodes[name].input[1]]
        pruned_w = saved_inits[saved_nodes[name].input[1]]
        if layer["op"] == "Conv":
            assert layer["channels_before"] == seed_w.shape[0]
            assert pruned_w.shape[0] == layer["channels_after"]
            assert pruned_w.shape[0] == len(kept)
        shrunk += layer["channels_after"] < layer["channels_before"]
    assert shrunk > 0
    # The kept indices are the seed's channels: the stem conv reads the 1-channel image, so
    # its pruned weight is exactly the seed's kept rows.
    stem = next(n for n in seed.loaded.model.graph.node if n.op_type == "Conv")
    rows = structure["layers"][stem.name]["kept"]
    np.testing.assert_array_equal(saved_inits[saved_nodes[stem.name].input[1]],
                                  seed.loaded.initializers[stem.input[1]][rows])
    # The output layer keeps all its channels.
    fc = next(n for n in seed.loaded.model.graph.node if n.op_type == "Gemm")
    assert structure["layers"][fc.name]["channels_after"] == 10
    for group in structure["groups"]:
        assert {"id", "channels_before", "channels_after", "prunable", "layers"} <= set(group)
        if not group["prunable"]:
            assert group["channels_after"] == group["channels_before"]


@pytest.mark.parametrize("path", SEEDS, ids=IDS)
def test_round_to_8(path, tmp_path):
    result = _pruned(path, round_to=8)
    assert result.costs["pruned"]["macs"] <= 0.52 * result.costs["seed"]["macs"]
    result.save(tmp_path / "r8.onnx")
    structure = json.loads((tmp_path / "r8.structure.json").read_text())
    checked = 0
    for layer in structure["layers"].values():
        if layer["channels_before"] % 8 == 0:
            assert layer["channels_after"] % 8 == 0, layer
            checked += 1
    for group in structure["groups"]:
        if group["channels_before"] % 8 == 0:
            assert group["channels_after"] % 8 == 0, group
    assert checked > 5
    assert any(g["channels_after"] < g["channels_before"] for g in structure["groups"])
    # The saved weights have those widths too.
    saved = onnx.load(str(tmp_path / "r8.onnx"))
    inits, nodes = _initializers(saved), _nodes(saved)
    for name, layer in structure["layers"].items():
        if layer["op"] == "Conv":
            assert inits[nodes[name].input[1]].shape[0] == layer["channels_after"]


@pytest.mark.parametrize("path", SEEDS, ids=IDS)
def test_min_channels(path):
    result = _pruned(path, min_channels=12)
    assert result.costs["ratio"]["macs"] <= 0.5
    analysis = result.analysis
    for group in analysis.channels.prunable_groups():
        assert result.alive[group.units].sum() >= min(12, group.channels)
    # Without the floor, l1 takes some group below 12.
    free = _pruned(path)
    assert any(free.alive[g.units].sum() < min(12, g.channels)
               for g in analysis.channels.prunable_groups())


def test_exclude_leaves_matched_layers_untouched():
    pattern = "/stages/stages.4/*"
    result = _pruned(RESNET, exclude=(pattern,))
    assert result.costs["ratio"]["macs"] <= 0.5
    seed = result.analysis
    seed_nodes = _nodes(seed.loaded.model)
    pruned_nodes, pruned_inits = _nodes(result.model), _initializers(result.model)
    matched = [n for n in seed_nodes if n.startswith("/stages/stages.4/")
               and seed_nodes[n].op_type in ("Conv", "BatchNormalization")]
    assert len(matched) >= 5
    for name in matched:
        for index, tensor in enumerate(seed_nodes[name].input[1:], start=1):
            np.testing.assert_array_equal(
                pruned_inits[pruned_nodes[name].input[index]], seed.loaded.initializers[tensor],
                err_msg=f"{name} input {index}")
    structure = result.structure["layers"]
    for name in matched:
        if name in structure:
            assert structure[name]["channels_after"] == structure[name]["channels_before"]
    # Other layers were pruned, harder than without the exclusion.
    free = _pruned(RESNET)
    assert sum(layer["channels_after"] for layer in structure.values()) < sum(
        layer["channels_before"] for layer in structure.values())
    assert free.structure["layers"] != structure


def test_exclude_exact_name():
    name = "/stages/stages.0/body/body.0/body.0.0/Conv"
    result = _pruned(RESNET, exclude=(name,))
    layer = result.structure["layers"][name]
    assert layer["channels_after"] == layer["channels_before"] == 16
    free = _pruned(RESNET)
    assert free.structure["layers"][name]["channels_after"] < 16  # it would have been pruned


@pytest.mark.parametrize("options,message", [
    ({"exclude": ("no_such_layer*",)}, "matches no layer"),
    ({"budget": 0}, "outside \\(0, 1\\]"),
    ({"budget": 1.5}, "outside \\(0, 1\\]"),
    ({"budget": -0.5}, "outside \\(0, 1\\]"),
    ({"target": "energy"}, "unknown target 'energy'"),
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"round_to": 0}, "at least 1"),
    ({"min_channels": -1}, "at least 0"),
    ({"method": "gates"}, "--data"),
])
def test_bad_requests_raise_pruning_error(options, message):
    with pytest.raises(PruningError, match=message):
        onnxmorph.prune(RESNET, **{"method": "l1", **options})


@pytest.mark.parametrize("path", SEEDS, ids=IDS)
def test_unreachable_budget_names_the_smallest_reachable_cost(path):
    with pytest.raises(PruningError, match="smallest reachable") as info:
        onnxmorph.prune(path, method="l1", budget=0.001, round_to=1)
    analysis = onnxmorph.analyze(path)
    alive = np.ones(analysis.channels.num_units)
    for group in analysis.channels.prunable_groups():
        alive[group.units[1:]] = 0  # each prunable group down to one channel
    smallest = analysis.cost.macs(alive) / analysis.macs
    stated = float(re.search(r"cost is ([0-9.]+) of the seed", str(info.value)).group(1))
    assert stated == pytest.approx(smallest, abs=1e-3)
    assert "0.001" in str(info.value)


def test_budget_one_keeps_everything():
    result = onnxmorph.prune(RESNET, method="l1", budget=1.0)
    assert result.alive.all()
    assert result.costs["pruned"] == result.costs["seed"]


def test_params_target():
    result = onnxmorph.prune(MOBILENET, method="l1", target="params", budget=0.4, verify=True)
    report = result.report()
    assert report["target"] == "params"
    assert report["pruned"]["params"] <= 0.4 * report["seed"]["params"] + 1
    assert round(onnxmorph.analyze(result.model).params) == report["pruned"]["params"]
    assert report["verify"]["passed"]


def test_prune_accepts_a_model_proto_and_leaves_it_alone():
    proto = onnx.load(str(MOBILENET))
    before = proto.SerializeToString()
    result = onnxmorph.prune(proto, method="l1", budget=0.5)
    assert proto.SerializeToString() == before
    assert result.costs == _pruned(MOBILENET).costs


@pytest.mark.parametrize("path", SEEDS, ids=IDS)
def test_analyze_api(path):
    analysis = onnxmorph.analyze(path)
    assert analysis.macs > 0 and analysis.params > 0
    summary = analysis.to_dict()
    assert summary["model"] == str(path)
    assert summary["input_shapes"] == {"input": [1, 1, 28, 28]}
    assert summary["macs"] == round(analysis.macs) and summary["params"] == round(analysis.params)
    groups = summary["groups"]
    assert len(groups) == len(analysis.groups)
    assert [g["id"] for g in groups] == list(range(len(groups)))
    for group in groups:
        assert {"id", "channels", "prunable", "reason", "layers", "tensors", "macs",
                "params"} <= set(group)
        assert (group["reason"] is None) == group["prunable"]
        assert group["channels"] >= 1
    prunable = [g for g in groups if g["prunable"]]
    assert prunable and all(0 < g["macs"] < summary["macs"] for g in prunable)
    assert not groups[0]["prunable"] and "graph input" in groups[0]["reason"]
    assert any("graph output" in (g["reason"] or "") for g in groups)
    # Parameters: the seed's initializers hold exactly what the cost model counts.
    total = sum(v.size for v in analysis.loaded.initializers.values()
                if v.dtype.kind == "f")
    assert analysis.params == total


def test_missing_model_is_an_onnxmorph_error(tmp_path):
    with pytest.raises(OnnxMorphError, match="does not exist"):
        onnxmorph.prune(tmp_path / "nope.onnx", method="l1")
