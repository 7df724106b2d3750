"""Latency tables: lookup, file round trip, cache key and location, LatencyExpr selection."""

from __future__ import annotations

import numpy as np
import pytest

from onnxmorph.latency.cache import cache_dir, cache_path, table_key
from onnxmorph.latency.expr import latency_expr
from onnxmorph.latency.layers import weight_layers
from onnxmorph.latency.model import measured_table
from onnxmorph.latency.profile import grid_counts
from onnxmorph.latency.table import LatencyTable, LatencyTableError
from onnxmorph.methods.l1 import l1_unit_scores
from onnxmorph.methods.select import SelectionRules, select_to_budget
from onnxmorph.methods.uniform import width_for_budget
from tests.latency.fixtures import synthetic_latency, synthetic_table, tiny_model


def test_lookup_hits_grid_values_and_interpolates_between(tiny_analysis):
    table = synthetic_table(tiny_analysis)
    grid = table.grid("conv_3")
    assert grid.grid_in == [8, 16] and grid.grid_out == [8, 16, 24]
    assert table.lookup("conv_3", 16, 24) == pytest.approx(synthetic_latency(16, 24))
    middle = table.lookup("conv_3", 12, 20)
    corners = [synthetic_latency(x, y) for x in (8, 16) for y in (16, 24)]
    assert min(corners) < middle < max(corners)
    assert middle == pytest.approx(np.mean(corners))  # bilinear at the cell's centre
    with pytest.raises(LatencyTableError, match="no entry for layer 'nope'"):
        table.lookup("nope", 1, 1)


def test_table_file_round_trip_and_bad_file(tiny_analysis, tmp_path):
    table = synthetic_table(tiny_analysis)
    path = table.save(tmp_path / "t.json")
    again = LatencyTable.load(path)
    assert again.configs == table.configs and again.layers == table.layers
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LatencyTableError, match="cannot read latency table"):
        LatencyTable.load(tmp_path / "bad.json")


def test_latency_expr_sums_layers_at_alive_counts(tiny_analysis):
    expr = latency_expr(tiny_analysis, synthetic_table(tiny_analysis))
    specs = {s.name: s for s in weight_layers(tiny_analysis)}
    seed = sum(synthetic_latency(s.out_full if s.depthwise else s.in_full, s.out_full)
               for s in specs.values())
    assert expr() == pytest.approx(seed)
    group = next(g for g in tiny_analysis.channels.prunable_groups() if g.channels == 24)
    alive = np.ones(expr.num_units)
    alive[group.units[:8]] = 0  # conv_3's output and the Gemm's input: 24 → 16
    by_layer = expr.by_layer(alive)
    assert by_layer["conv_3"] == pytest.approx(synthetic_latency(16, 16))
    assert by_layer["gemm_1"] == pytest.approx(synthetic_latency(16, 10))
    assert by_layer["conv_1"] == pytest.approx(synthetic_latency(3, 16))


def test_l1_and_uniform_select_to_a_latency_budget(tiny_analysis):
    expr = latency_expr(tiny_analysis, synthetic_table(tiny_analysis))
    scores = l1_unit_scores(tiny_analysis)
    for budget in (0.8, 0.5):
        alive = select_to_budget(tiny_analysis, scores, "latency", budget, cost=expr)
        assert expr(alive) <= budget * expr() * (1 + 1e-9)
        _, uniform = width_for_budget(tiny_analysis, "latency", budget, SelectionRules(),
                                      cost=expr)
        assert expr(uniform.astype(float)) <= budget * expr() * (1 + 1e-9)
    tiny_analysis.cost.latency = expr  # the target-name route goes through CostModel.expr
    try:
        assert tiny_analysis.cost.expr("latency") is expr
    finally:
        tiny_analysis.cost.latency = None


def test_cache_key_and_location(tiny_analysis, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "onnxmorph" / "latency"
    model, shapes = tiny_analysis.loaded.model, tiny_analysis.loaded.input_shapes
    key = table_key(model, shapes, "ort-cpu", None, 1, "g")
    assert key == table_key(model, shapes, "ort-cpu", None, 1, "g")
    others = [table_key(model, shapes, "ort-cpu", 2, 1, "g"),
              table_key(model, shapes, "ort-cpu", None, 8, "g"),
              table_key(model, {"x": (1, 3, 16, 16)}, "ort-cpu", None, 1, "g")]
    paths = {cache_path(k) for k in [key, *others]}
    assert len(paths) == 4 and all(p.parent == cache_dir() for p in paths)
    assert key["runtime_version"] and key["machine"]


def test_measured_table_is_cached_and_reused(monkeypatch, tmp_path):
    from onnxmorph.graph.analysis import analyze

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    analysis = analyze(tiny_model(dynamic_batch=True))  # batch 2 below
    table, path, measured = measured_table(analysis, threads=1)
    assert measured and path.exists() and path.parent == cache_dir()
    assert set(table.layers) == {"conv_1", "conv_2", "conv_3", "gemm_1"}
    assert all(v > 0 for g in table.configs.values() for row in g.ms for v in row)
    assert table.overhead_ms > 0 and table.ops["globalaveragepool_1"]["ms"] > 0
    again, same_path, measured_again = measured_table(analysis, threads=1)
    assert same_path == path and not measured_again and again.configs == table.configs
    _, other_path, _ = measured_table(analysis, threads=1, batch=2)
    assert other_path != path


def test_a_layer_of_one_block_is_profiled_on_a_finer_grid(tiny_analysis):
    from onnxmorph.latency.profile import layer_step

    conv = next(s for s in weight_layers(tiny_analysis) if s.name == "conv_3")  # 16 → 24
    # --round-to auto cuts a one-block group finer, so one grid point would price it as fixed.
    assert layer_step(conv, 16, 16) == 1 and layer_step(conv, 24, 8) == 8
    assert layer_step(conv, 32, 16) == 16 and layer_step(conv, 24, 16) == 1
    assert grid_counts(16, True, layer_step(conv, 16, 16)) == [4, 8, 12, 16]
