"""Ops other than the weight layers: which ones onnxruntime fuses, how the rest are priced
(measured, roofline, synthetic), and that an op without a price is named, never free."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxmorph.graph.analysis import analyze
from onnxmorph.latency import other_ops as other_ops_module
from onnxmorph.latency import profile as profile_module
from onnxmorph.latency.expr import RUN_OVERHEAD, latency_expr
from onnxmorph.latency.layers import weight_layers
from onnxmorph.latency.measure import make_session, random_feeds
from onnxmorph.latency.other_ops import other_ops, single_op_model
from onnxmorph.latency.profile import profile_other_ops
from onnxmorph.latency.report import latency_report
from onnxmorph.latency.roofline import roofline_table
from onnxmorph.rewrite import slice_channels
from tests.latency.fixtures import synthetic_op_ms, synthetic_table
from tests.onnx_builders import GraphBuilder


def ops_model():
    """Conv-BN-ReLU stem, a residual Conv-BN-Add-ReLU, MaxPool, a HardSwish between two
    Convs, Concat, GlobalAveragePool, Flatten, Gemm."""
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 3, 16, 16])
    stem = b.relu(b.bn(b.conv(x, 16, name="c1"), name="b1"), name="r1")
    body = b.bn(b.conv(stem, 16, name="c2"), name="b2")
    res = b.relu(b.add(body, stem, name="a1"), name="r2")
    pooled = b.maxpool(res, name="mp")
    swish = b.node("HardSwish", [b.conv(pooled, 16, k=1, name="c3")], name="hs")
    wide = b.relu(b.conv(swish, 24, name="c4"), name="r4")
    joined = b.concat([wide, pooled], name="cat")
    y = b.gemm(b.flatten(b.gap(joined, name="gap"), name="flat"), 10, name="fc")
    return b.model([y])


@pytest.fixture(scope="module")
def analysis():
    return analyze(ops_model())


def test_fusions_and_layout_changes_follow_onnxruntime(analysis):
    names = {s.name for s in weight_layers(analysis)}
    ops = {op.name: op for op in other_ops(analysis, names)}
    fused = {name: op.fused_into for name, op in ops.items() if op.fused_into}
    # BN and activation into their Conv; the residual Add (and its ReLU) into the Conv whose
    # output it adds (onnxruntime's NCHWc Conv "sum" input).
    assert fused == {"b1": "c1", "r1": "c1", "b2": "c2", "a1": "c2", "r2": "c2", "r4": "c4"}
    assert set(ops) - set(fused) == {"mp", "hs", "cat", "gap", "flat"}
    assert ops["hs"].layout_changes == 2  # no blocked kernel: reorder out of c3, into c4
    assert ops["mp"].layout_changes == 0 and ops["cat"].channels == 40


def test_a_two_input_sum_fuses_like_add():
    b = GraphBuilder(seed=6)
    x = b.input("x", [1, 8, 8, 8])
    main = b.bn(b.conv(x, 8, name="ca"), name="ba")
    total = b.relu(b.node("Sum", [main, b.conv(x, 8, name="cb")], name="sum"), name="r")
    analysis = analyze(b.model([b.gap(total, name="gap")]))
    fused = {op.name: op.fused_into for op in other_ops(analysis, {"ca", "cb"})}
    assert fused == {"ba": "ca", "sum": "ca", "r": "ca", "gap": None}


def test_synthetic_prices_scale_with_alive_channels(analysis):
    expr = latency_expr(analysis, synthetic_table(analysis, ops=True))
    assert expr.unpriced == [] and set(expr.fused) == {"b1", "r1", "b2", "a1", "r2", "r4"}
    weights, others = expr.split()
    assert others == pytest.approx(sum(synthetic_op_ms(c) for c in (16, 16, 40, 40, 40)))
    assert expr() == pytest.approx(weights + others)
    group = next(g for g in analysis.channels.prunable_groups() if "c3" in g.tensors)
    alive = np.ones(expr.num_units)
    alive[group.units[:4]] = 0  # c3's output (HardSwish's tensor): 16 → 12
    assert expr.by_layer(alive)["hs"] == pytest.approx(synthetic_op_ms(16) * 12 / 16)
    assert expr.by_layer(alive)["cat"] == pytest.approx(synthetic_op_ms(40))


def test_run_overhead_is_a_constant_term(analysis):
    table = synthetic_table(analysis, ops=True)
    plain = latency_expr(analysis, table)
    table.overhead_ms = 0.05
    expr = latency_expr(analysis, table)
    assert expr() == pytest.approx(plain() + 0.05)
    alive = np.zeros(expr.num_units)
    assert expr.by_layer(alive)[RUN_OVERHEAD] == pytest.approx(0.05)
    assert expr.split(alive)[1] >= 0.05


def test_a_table_without_op_prices_names_every_op_in_the_report(analysis):
    expr = latency_expr(analysis, synthetic_table(analysis))  # weight layers only
    assert expr.split()[1] == 0
    assert {u["node"] for u in expr.unpriced} == {"mp", "hs", "cat", "gap", "flat"}
    assert all("profile --force" in u["reason"] for u in expr.unpriced)
    alive = np.ones(expr.num_units)
    sliced = slice_channels(analysis, alive).model
    report = latency_report(analysis, alive, sliced, expr=expr, measure=False)
    assert {u["op_type"] for u in report["predicted"]["unpriced_ops"]} == {
        "MaxPool", "HardSwish", "Concat", "GlobalAveragePool", "Flatten"}


def test_roofline_prices_other_ops_as_memory_traffic(analysis):
    table = roofline_table(analysis, device="v100")
    assert table.ops["r1"]["ms"] == 0.0 and table.ops["hs"]["ms"] > 0
    # HardSwish after the pool: 16 channels of 8x8 floats read and written, three passes
    # (itself and 2 reorders), at V100's 900 GB/s.
    assert table.ops["hs"]["ms"] == pytest.approx(3 * 4 * 2 * 16 * 64 / 900e9 * 1e3)
    expr = latency_expr(analysis, table)
    assert expr.unpriced == [] and expr.split()[1] > 0


def test_measured_op_prices_and_an_op_that_cannot_run_alone(analysis, monkeypatch):
    names = {s.name for s in weight_layers(analysis)}
    prices, unpriced = profile_other_ops(analysis, names, batch=2, threads=1)
    assert unpriced == {} and prices["r1"]["ms"] == 0.0
    assert all(prices[n]["ms"] > 0 for n in ("mp", "hs", "cat", "gap", "flat"))
    op = next(o for o in other_ops(analysis, names) if o.name == "cat")
    session = make_session(single_op_model(op, analysis, batch=2), 1)
    assert all(v.shape[0] == 2 for v in random_feeds(session, None).values())

    real = profile_module._op_session

    def refuse_concat(op, *args):
        if op.node.op_type == "Concat":
            raise RuntimeError("no kernel\nmore")
        return real(op, *args)

    monkeypatch.setattr(profile_module, "_op_session", refuse_concat)
    prices, unpriced = profile_other_ops(analysis, names, batch=1, threads=1)
    assert "cat" not in prices and unpriced["cat"].endswith("no kernel")
    assert other_ops_module.analysis_batch(analysis) == 1


def test_a_transformer_prices_its_attention_matmuls_as_other_ops(tmp_path):
    from onnxmorph.latency.model import measured_table

    fixture = Path(__file__).resolve().parents[1] / "fixtures/transformers/vit_op17_ts.onnx"
    vit = analyze(str(fixture))
    specs = weight_layers(vit)  # activation × activation MatMuls have no weight to time
    assert specs and all(not s.name.endswith(("MatMul_1", "MatMul_2")) for s in specs)
    table, _, _ = measured_table(vit, threads=1, table_path=tmp_path / "vit.json")
    expr = latency_expr(vit, table)
    assert expr.unpriced == []  # bool masks and int64 indices run alone with their types
    attention = [n for n in expr.layers[expr.weight_layers:] if n.endswith("MatMul_1")]
    assert attention and all(table.ops[n]["ms"] > 0 for n in attention)
