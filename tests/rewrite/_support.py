"""Shared checks for the slicing tests: random structures, zeroed seeds, onnxruntime runs.

The central check, `check_sliced`, slices a seed with an alive mask and asserts everything a
pruned model promises: it is valid ONNX (full check), its weights have exactly the kept
channels, its outputs keep their shapes, and onnxruntime computes what the seed computes with
the removed channels zeroed, both by `verify_models` and by an independent comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxmorph.graph import Analysis, analyze
from onnxmorph.rewrite import slice_channels, verify_models, zero_removed_channels
from onnxmorph.rewrite.slice_model import SliceResult
from tests.onnx_builders import GraphBuilder

REL_TOL = 1e-4


class HeBuilder(GraphBuilder):
    """GraphBuilder with He-scaled weights (std √(2/fan_in)) and small biases, so that
    activations keep their scale through a few layers and nothing saturates."""

    def weight(self, shape: Sequence[int], name: str | None = None) -> str:
        shape = tuple(shape)
        std = math.sqrt(2.0 / math.prod(shape[1:])) if len(shape) >= 2 else 0.1
        return self.const(self.rng.normal(0.0, std, size=shape).astype(np.float32), name)


# ------------------------------------------------------------------ structures
def random_alive(analysis: Analysis, seed: int, fraction: float = 0.5) -> np.ndarray:
    """Remove a random `fraction` of every prunable group's units (at least one stays)."""
    rng = np.random.default_rng(seed)
    alive = np.ones(analysis.channels.num_units, dtype=bool)
    for group in analysis.channels.prunable_groups():
        count = min(int(group.channels * fraction), group.channels - 1)
        if count > 0:
            alive[rng.choice(group.units, size=count, replace=False)] = False
    assert all(alive[u] for u in analysis.channels.pinned)
    return alive


def keep_masks(analysis: Analysis, alive: np.ndarray) -> dict[str, np.ndarray]:
    """Keep mask of every activation tensor (initializers have no channels to remove)."""
    inits = analysis.loaded.initializers
    return {name: alive[layout.ids] for name, layout in analysis.channels.layouts.items()
            if name not in inits}


def kept(analysis: Analysis, alive: np.ndarray, tensor: str, axis_size: int) -> int:
    """How many entries of `tensor`'s channel axis survive (all of them if it has none)."""
    layout = analysis.channels.layouts.get(tensor)
    return axis_size if layout is None else int(alive[layout.ids].sum())


# ------------------------------------------------------------------ running models
def session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def random_feeds(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                 seed: int = 123) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    return {i.name: rng.standard_normal(shapes[i.name]).astype(np.float32)
            for i in model.graph.input if i.name not in inits}


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session(model).run(None, feeds)


def assert_close(got: list[np.ndarray], want: list[np.ndarray], what: str) -> None:
    assert len(got) == len(want)
    scale = max(float(np.max(np.abs(w))) for w in want)
    assert scale > 1e-3, f"{what}: reference output is ~0; the test would prove nothing"
    for have, ref in zip(got, want):
        assert have.shape == ref.shape, f"{what}: shape {have.shape} != {ref.shape}"
        diff = float(np.max(np.abs(have.astype(np.float64) - ref)))
        assert diff <= REL_TOL * scale, f"{what}: max diff {diff:.3g} at scale {scale:.3g}"


def assert_differs(a: list[np.ndarray], b: list[np.ndarray], what: str) -> None:
    """The removal is visible in the outputs (so a passing comparison means something)."""
    scale = max(float(np.max(np.abs(x))) for x in b)
    diff = max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(a, b))
    assert diff > 1e-3 * scale, f"{what}: removing channels did not change the output"


# ------------------------------------------------------------------ independent zeroing
def manually_zeroed(analysis: Analysis, alive: np.ndarray) -> onnx.ModelProto:
    """The seed with the per-output-channel parameters of every dead channel set to zero.

    Every removed channel starts at a Conv/ConvTranspose/Gemm; zeroing its weights and bias,
    and the scale and shift of the per-channel ops after it (BatchNormalization, Add of a
    constant), makes the channel exactly 0 everywhere, which is what slicing it away computes
    as long as every op maps 0 to 0 (Relu, PRelu, pooling, reshapes, Mul ...).
    """
    model = onnx.ModelProto()
    model.CopyFrom(analysis.loaded.model)
    values = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    layouts = analysis.channels.layouts
    for node in model.graph.node:
        layout = layouts.get(node.output[0])
        if layout is None or len(layout.axes) != 1:
            continue
        dead = ~alive[layout.ids]
        if not dead.any():
            continue
        for name in node.input[1:]:
            assert users.get(name, 0) <= 1 or name not in values, f"{name} is shared"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            values[node.input[1]][dead] = 0
            _zero_vector(values, node, 2, dead)
        elif node.op_type == "ConvTranspose":
            weight = values[node.input[1]]
            groups = attrs.get("group", 1)
            per_group = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
            for channel in np.flatnonzero(dead):
                per_group[channel // weight.shape[1], :, channel % weight.shape[1]] = 0
            _zero_vector(values, node, 2, dead)
        elif node.op_type == "Gemm":
            if attrs.get("transB", 0):
                values[node.input[1]][dead] = 0
            else:
                values[node.input[1]][:, dead] = 0
            _zero_vector(values, node, 2, dead)
        elif node.op_type == "BatchNormalization":
            _zero_vector(values, node, 1, dead)
            _zero_vector(values, node, 2, dead)
        elif node.op_type in ("Add", "Sub"):
            for index in (0, 1):
                value = values.get(node.input[index])
                if value is None:
                    continue
                rank = len(analysis.loaded.shapes[node.output[0]])
                aligned = layout.axis - (rank - value.ndim)
                if aligned >= 0 and value.shape[aligned] == dead.size:
                    index_tuple = [slice(None)] * value.ndim
                    index_tuple[aligned] = dead
                    value[tuple(index_tuple)] = 0
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(values[init.name], init.name))
    return model


def _zero_vector(values: dict[str, np.ndarray], node: onnx.NodeProto, index: int,
                 dead: np.ndarray) -> None:
    if index < len(node.input) and node.input[index] in values:
        value = values[node.input[index]]
        if value.ndim == 1 and value.size == dead.size:
            value[dead] = 0


# ------------------------------------------------------------------ the check
def weight_shapes_match(analysis: Analysis, alive: np.ndarray, pruned: onnx.ModelProto) -> int:
    """Every Conv/ConvTranspose/Gemm/BatchNormalization constant has exactly the kept
    channels; returns how many weights got smaller."""
    seed_nodes = {n.name: n for n in analysis.loaded.model.graph.node}
    values = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    shapes = analysis.loaded.shapes
    shrunk = 0
    for node in pruned.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "BatchNormalization"):
            continue
        seed = seed_nodes[node.name]
        x, y = seed.input[0], seed.output[0]
        n_in = kept(analysis, alive, x, shapes[x][1])
        n_out = kept(analysis, alive, y, shapes[y][1])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        old_w = analysis.loaded.initializers[seed.input[1]]
        weight = values[node.input[1]]
        group = attrs.get("group", 1)
        if node.op_type == "Conv":
            assert weight.shape[0] == n_out, node.name
            assert weight.shape[1] * group == n_in, node.name
            assert weight.shape[2:] == old_w.shape[2:], node.name
        elif node.op_type == "ConvTranspose":
            assert weight.shape[0] == n_in, node.name
            assert weight.shape[1] * group == n_out, node.name
        elif node.op_type == "Gemm":
            expected = (n_out, n_in) if attrs.get("transB", 0) else (n_in, n_out)
            assert weight.shape == expected, node.name
        else:
            for name in node.input[1:]:
                assert values[name].shape == (n_out,), (node.name, name)
        if node.op_type != "BatchNormalization" and len(node.input) > 2 and node.input[2]:
            assert values[node.input[2]].shape == (n_out,), node.name
        shrunk += weight.size < old_w.size
    return shrunk


def check_sliced(analysis: Analysis, alive: np.ndarray, manual: bool = True,
                 seed: int = 123, exact_params: bool = True) -> SliceResult:
    """Slice and check everything; `manual` adds the independent weight-zeroing check;
    `exact_params` that the cost model's parameter count is the pruned model's."""
    before = analysis.loaded.model.SerializeToString()
    before_inits = {k: v.copy() for k, v in analysis.loaded.initializers.items()}
    result = slice_channels(analysis, alive)
    pruned = result.model
    # The seed is left alone.
    assert analysis.loaded.model.SerializeToString() == before
    for name, value in before_inits.items():
        np.testing.assert_array_equal(analysis.loaded.initializers[name], value)

    onnx.checker.check_model(pruned, full_check=True)
    removed_any = not alive.all()
    shrunk = weight_shapes_match(analysis, alive, pruned)
    assert shrunk > 0 or not removed_any
    seed_params = sum(v.size for v in analysis.loaded.initializers.values())
    pruned_params = sum(math.prod(i.dims) for i in pruned.graph.initializer)
    assert pruned_params < seed_params or not removed_any

    # Graph outputs keep their names and declared shapes.
    def declared(model):
        return [(o.name, [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim])
                for o in model.graph.output]

    assert declared(pruned) == declared(analysis.loaded.model)

    feeds = random_feeds(analysis.loaded.model, analysis.loaded.input_shapes, seed)
    original = run(analysis.loaded.model, feeds)
    got = run(pruned, feeds)
    assert [g.shape for g in got] == [o.shape for o in original]
    zeroed = zero_removed_channels(analysis.loaded.model, analysis.channels.layouts,
                                   analysis.loaded.shapes, keep_masks(analysis, alive))
    want = run(zeroed, feeds)
    assert_close(got, want, "pruned vs seed with removed channels masked")
    if manual:
        assert_close(got, run(manually_zeroed(analysis, alive), feeds),
                     "pruned vs seed with removed channels' weights zeroed")
    if removed_any:
        assert_differs(want, original, "masked seed vs seed")
    report = verify_models(analysis, pruned)
    assert report.passed, report.to_dict()

    # The cost model predicts the pruned model's cost exactly.
    again = analyze(pruned)
    weights = alive.astype(np.float64)
    assert again.macs == pytest.approx(analysis.cost.macs(weights), rel=1e-9)
    if exact_params:
        assert again.params == pytest.approx(analysis.cost.params(weights), rel=1e-9)
    return result


def nodes_by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


def init_value(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)
