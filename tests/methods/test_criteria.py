"""Each criterion's scores against a direct numpy computation on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from onnxmorph.graph import analyze
from onnxmorph.methods.registry import MethodInput, get_method


def _raw_scores(tiny, method: str, batches: int = 2) -> tuple[np.ndarray, np.ndarray, dict]:
    """The criterion's unnormalised scores of group A's and group B's channels."""
    analysis = analyze(str(tiny.path))
    layouts = analysis.channels.layouts
    scores = get_method(method).scores(MethodInput(analysis, data=str(tiny.loader),
                                                   calibration_batches=batches))
    return scores.values[layouts["ra"].ids], scores.values[layouts["f"].ids], scores.notes


def test_tiny_model_has_the_two_prunable_groups(tiny):
    analysis = analyze(str(tiny.path))
    prunable = analysis.channels.prunable_groups()
    assert sorted(g.channels for g in prunable) == [3, 4]


def _distance_sums(rows: np.ndarray) -> np.ndarray:
    return np.array([sum(np.linalg.norm(r - other) for other in rows) for r in rows])


def test_fpgm_is_the_sum_of_distances_to_the_layers_other_filters(tiny):
    a, b, _ = _raw_scores(tiny, "fpgm")
    np.testing.assert_allclose(a, _distance_sums(tiny.wa), rtol=1e-5)
    np.testing.assert_allclose(b, _distance_sums(tiny.wb), rtol=1e-5)


def test_fpgm_ranks_a_duplicate_filter_lowest():
    from onnxmorph.methods.fpgm import distance_sums

    rows = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
    sums = distance_sums(rows)
    assert sums[0] == sums[1] == sums.min()


def test_apoz_is_the_share_of_non_zeros_after_each_relu(tiny):
    a, b, notes = _raw_scores(tiny, "apoz")
    outs = [tiny.forward(x) for x, _ in tiny.batches]
    expected_a = 1 - np.mean([(o["ra"] == 0).mean(axis=(0, 2, 3)) for o in outs], axis=0)
    expected_b = 1 - np.mean([(o["rb"] == 0).mean(axis=(0, 2, 3)) for o in outs], axis=0)
    np.testing.assert_allclose(a, expected_a)
    np.testing.assert_allclose(b, expected_b)
    assert 0 < expected_a.min() < 1  # the data makes some zeros, so the check means something
    assert notes == {"calibration_batches": 2, "apoz_l1_fallback_groups": []}


def test_activation_is_weight_magnitude_times_input_norm(tiny):
    a, b, _ = _raw_scores(tiny, "activation")
    xs = np.concatenate([x for x, _ in tiny.batches]).astype(np.float64)
    ra = np.concatenate([tiny.forward(x)["ra"] for x, _ in tiny.batches])
    x_norm = np.sqrt((xs ** 2).sum(axis=(0, 2, 3)))
    ra_norm = np.sqrt((ra ** 2).sum(axis=(0, 2, 3)))
    np.testing.assert_allclose(a, (np.abs(tiny.wa) * x_norm).sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(b, (np.abs(tiny.wb) * ra_norm).sum(axis=1), rtol=1e-5)


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def _taylor_by_finite_differences(tiny) -> tuple[np.ndarray, np.ndarray]:
    """|dL/dm| of a per-channel multiplier at m = 1, averaged over the batches."""
    totals = [np.zeros(3), np.zeros(4)]
    eps = 1e-4
    for x, y in tiny.batches:
        labels = y if y is not None else tiny.forward(x)["logits"].argmax(axis=1)
        for which, size in ((0, 3), (1, 4)):
            for channel in range(size):
                step = np.zeros(size)
                step[channel] = eps
                up, down = ({"ma" if which == 0 else "mb": 1 + sign * step} for sign in (1, -1))
                gradient = (_cross_entropy(tiny.forward(x, **up)["logits"], labels)
                            - _cross_entropy(tiny.forward(x, **down)["logits"], labels)) / (2 * eps)
                totals[which][channel] += abs(gradient)
    return totals[0] / len(tiny.batches), totals[1] / len(tiny.batches)


@pytest.mark.parametrize("fixture", ["tiny", "tiny_unlabeled"])
def test_taylor_is_activation_times_gradient_per_channel(fixture, request):
    tiny = request.getfixturevalue(fixture)
    a, b, notes = _raw_scores(tiny, "taylor")
    expected_a, expected_b = _taylor_by_finite_differences(tiny)
    np.testing.assert_allclose(a, expected_a, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(b, expected_b, rtol=2e-3, atol=1e-6)
    assert expected_a.max() > 1e-3  # the gradients are not all zero
    labelled = fixture == "tiny"
    assert notes["taylor_loss"] == ("cross-entropy" if labelled
                                    else "cross-entropy on the seed's top-1")


def test_calibration_batches_limits_the_data_read(tiny):
    _, _, notes = _raw_scores(tiny, "apoz", batches=1)
    assert notes["calibration_batches"] == 1
    a, _, _ = _raw_scores(tiny, "activation", batches=1)
    x = tiny.batches[0][0].astype(np.float64)
    norm = np.sqrt((x ** 2).sum(axis=(0, 2, 3)))
    np.testing.assert_allclose(a, (np.abs(tiny.wa) * norm).sum(axis=1), rtol=1e-5)


def test_apoz_falls_back_to_l1_where_no_relu_follows(tmp_path):
    from tests.methods.conftest import make_tiny

    tiny = make_tiny(tmp_path)
    import onnx

    model = onnx.load(tiny.path)
    for node in model.graph.node:
        if node.name == "relu_a":
            node.op_type = "Sigmoid"
    onnx.save(model, tiny.path)
    analysis = analyze(str(tiny.path))
    scores = get_method("apoz").scores(MethodInput(analysis, data=str(tiny.loader)))
    group_a = analysis.channels.unit_group[analysis.channels.layouts["ra"].ids[0]]
    assert scores.notes["apoz_l1_fallback_groups"] == [int(group_a)]
    np.testing.assert_allclose(scores.values[analysis.channels.layouts["ra"].ids],
                               np.abs(tiny.wa).sum(axis=1), rtol=1e-5)


def _layout(op_type: str, weight: np.ndarray, **attrs):
    from onnx import helper

    from onnxmorph.graph.layers import weight_layout

    node = helper.make_node(op_type, ["x", "w"], ["y"], **attrs)
    return weight_layout(node, {"w": weight})


def test_input_scaling_follows_each_weight_layout():
    from onnxmorph.methods.activation import input_scaled

    rng = np.random.default_rng(0)
    norms = rng.uniform(1, 2, 6)
    grouped = rng.normal(size=(4, 3, 3, 3))  # Conv, 2 groups of 3 input channels
    scaled = input_scaled(_layout("Conv", grouped, group=2), grouped, norms)
    for out in range(4):
        for local in range(3):
            channel = (out // 2) * 3 + local
            np.testing.assert_allclose(scaled[out, local], grouped[out, local] * norms[channel])
    transposed = rng.normal(size=(6, 2, 3, 3))  # ConvTranspose [Cin, Cout/group, k, k]
    np.testing.assert_allclose(
        input_scaled(_layout("ConvTranspose", transposed, group=2), transposed, norms),
        transposed * norms[:, None, None, None])
    dense = rng.normal(size=(6, 5))  # [in, out]
    np.testing.assert_allclose(input_scaled(_layout("Gemm", dense), dense, norms),
                               dense * norms[:, None])
    np.testing.assert_allclose(input_scaled(_layout("Gemm", dense.T, transB=1), dense.T, norms),
                               dense.T * norms[None, :])
    np.testing.assert_allclose(input_scaled(_layout("MatMul", dense), dense, norms),
                               dense * norms[:, None])


def test_output_rows_of_a_grouped_conv_transpose():
    from onnxmorph.methods.l1 import output_channel_rows

    weight = np.arange(4 * 3 * 2 * 2, dtype=float).reshape(4, 3, 2, 2)  # 2 groups, Cout 6
    layout = _layout("ConvTranspose", weight, group=2)
    rows = output_channel_rows(layout, weight)
    assert rows.shape == (6, 2 * 4)
    # Output channel 4 is group 1's second output: input channels 2..3, column 1.
    np.testing.assert_array_equal(rows[4], weight[2:4, 1].reshape(-1))
    np.testing.assert_allclose(np.abs(rows).sum(axis=1), layout.output_channel_l1(weight))


def test_taylor_probe_with_folded_batchnorm_computes_the_seed():
    from pathlib import Path

    from onnxmorph.methods.taylor import taylor_probe
    from onnxmorph.training.evaluate import inference_session

    seed = Path(__file__).resolve().parents[2] / "samples" / "resnet_seed.onnx"
    analysis = analyze(str(seed))
    probe, multipliers = taylor_probe(analysis)
    assert not any(n.op_type == "BatchNormalization" for n in probe.graph.node)
    assert len(multipliers) >= len(analysis.channels.prunable_groups())
    x = np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype(np.float32)
    expected = inference_session(analysis.loaded.model).run(None, {"input": x})[0]
    np.testing.assert_allclose(inference_session(probe).run(None, {"input": x})[0], expected,
                               rtol=1e-4, atol=1e-4)
