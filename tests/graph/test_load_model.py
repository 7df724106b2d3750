"""load_model: reading files safely, folding constant weights, opsets and input shapes."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxmorph.errors import (
    ModelLoadError,
    OnnxMorphError,
    ShapeResolutionError,
    UnsupportedModelError,
)
from onnxmorph.graph import analyze, load_model, parse_input_shapes
from onnxmorph.graph.onnx_utils import default_opset
from onnxmorph.graph.shapes import resolve_input_shapes
from tests.onnx_builders import GraphBuilder, conv_chain_model, group_of, light_model_path

CHAIN_MACS = 124416  # conv_chain_model((8, 16, 4)) at 1x3x8x8, see test_groups_structures


def node_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def init_names(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer}


# ------------------------------------------------------------------------- constant weights
def _conv_with_weight_node(make_weight) -> tuple[onnx.ModelProto, np.ndarray]:
    """x → Conv(W) → y where W comes from nodes make_weight(b) adds (returns W's name)."""
    b = GraphBuilder(seed=11)
    x = b.input("x", [1, 3, 8, 8])
    w, value = make_weight(b)
    y = b.node("Conv", [x, w], name="y", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return b.model([y]), value


def test_constant_node_weights_become_initializers():
    value = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)

    def make(b):
        b.node("Constant", [], ["W"], name="wconst", value=numpy_helper.from_array(value, "v"))
        return "W", value

    model, _ = _conv_with_weight_node(make)
    loaded = load_model(model)
    assert node_types(loaded.model) == ["Conv"]
    assert "W" in init_names(loaded.model)
    np.testing.assert_array_equal(loaded.initializers["W"], value)
    assert analyze(loaded).macs == 64 * 4 * 27


@pytest.mark.parametrize("fill", [0.5, None])
def test_constant_of_shape_weights_become_initializers(fill):
    def make(b):
        attrs = {} if fill is None else {
            "value": numpy_helper.from_array(np.array([fill], dtype=np.float32), "v")}
        b.node("ConstantOfShape", [b.ints([4, 3, 3, 3], "W_shape")], ["W"], name="cos", **attrs)
        return "W", None

    model, _ = _conv_with_weight_node(make)
    loaded = load_model(model)
    assert node_types(loaded.model) == ["Conv"]
    assert "W_shape" not in init_names(loaded.model)  # no longer used
    weight = loaded.initializers["W"]
    assert weight.dtype == np.float32 and weight.shape == (4, 3, 3, 3)
    assert np.all(weight == (fill or 0.0))


def test_identity_aliased_initializers_are_resolved():
    def make(b):
        value = b.rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
        b.const(value, "W_orig")
        b.node("Identity", ["W_orig"], ["W"], name="alias")
        return "W", value

    model, value = _conv_with_weight_node(make)
    loaded = load_model(model)
    assert node_types(loaded.model) == ["Conv"]
    assert init_names(loaded.model) == {"W"}
    np.testing.assert_array_equal(loaded.initializers["W"], value)


def test_shape_chain_computing_reshape_target_is_folded():
    b = GraphBuilder(seed=12)
    x = b.input("x", [1, 3, 8, 8])
    feat = b.conv(x, 4, name="feat")
    shape = b.node("Shape", [feat], name="shape")
    batch = b.node("Gather", [shape, b.ints([0])], name="batch", axis=0)
    target = b.node("Concat", [batch, b.ints([-1])], name="target", axis=0)
    flat = b.node("Reshape", [feat, target], name="flat")
    loaded = load_model(b.model([b.gemm(flat, 3, name="fc")]))
    assert node_types(loaded.model) == ["Conv", "Reshape", "Gemm"]
    np.testing.assert_array_equal(loaded.initializers["target"], [1, -1])
    assert loaded.shapes["flat"] == (1, 256)
    a = analyze(loaded)
    assert group_of(a, "flat") is group_of(a, "feat") and group_of(a, "feat").prunable


def test_input_model_proto_is_not_modified():
    # Opset 9, IR 3 (initializers listed as inputs), a Constant weight and an Identity alias:
    # loading converts, drops inputs and folds, all on a copy.
    b = GraphBuilder(seed=13, opset=9, ir_version=3)
    x = b.input("x", ["N", 3, 8, 8])
    value = np.ones((4, 3, 3, 3), dtype=np.float32)
    b.node("Constant", [], ["W"], name="wconst", value=numpy_helper.from_array(value, "v"))
    b.const(np.zeros(4), "B_orig")
    b.node("Identity", ["B_orig"], ["B"], name="alias")
    y = b.node("Conv", [x, "W", "B"], name="y", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = b.model([y], check=False)
    model.graph.input.append(helper.make_tensor_value_info("B_orig", TensorProto.FLOAT, [4]))
    before = model.SerializeToString()
    loaded = load_model(model)
    assert model.SerializeToString() == before
    assert loaded.model is not model
    assert default_opset(loaded.model) == 13
    assert [i.name for i in loaded.model.graph.input] == ["x"]
    assert node_types(loaded.model) == ["Conv"]


# ------------------------------------------------------------------------- files
def test_load_from_path_records_source(tmp_path):
    path = tmp_path / "chain.onnx"
    onnx.save(conv_chain_model(), str(path))
    loaded = load_model(path)
    assert loaded.source == str(path)
    assert load_model(conv_chain_model()).source is None
    assert analyze(str(path)).macs == CHAIN_MACS


def test_external_data_inside_the_folder_loads(tmp_path):
    model = conv_chain_model()
    expected = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").is_file()
    assert os.path.getsize(path) < 2000  # the weights really are outside
    loaded = load_model(path)
    assert set(loaded.initializers) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded.initializers[name], value)
    assert analyze(loaded).macs == CHAIN_MACS


def _with_external_weight(tmp_path, location: str, write: bool = True):
    """Model file in tmp_path/model/ whose conv weight lives at `location` (relative)."""
    model = conv_chain_model()
    folder = tmp_path / "model"
    folder.mkdir()
    tensor = model.graph.initializer[0]
    data = tensor.raw_data or numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data
    if write:
        target = folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    tensor.raw_data = data
    onnx.external_data_helper.set_external_data(tensor, location=location, length=len(data))
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_in_a_subfolder_loads(tmp_path):
    path = _with_external_weight(tmp_path, "data/w.bin")
    assert analyze(path).macs == CHAIN_MACS


@pytest.mark.parametrize("location", ["../x.bin", "../../etc/passwd", "data/../../x.bin"])
def test_external_data_outside_the_folder_is_rejected(tmp_path, location):
    (tmp_path / "x.bin").write_bytes(b"\0" * 4096)
    path = _with_external_weight(tmp_path, location, write=False)
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(path)


def test_missing_external_data_file_is_a_load_error(tmp_path):
    path = _with_external_weight(tmp_path, "gone.bin", write=False)
    with pytest.raises(ModelLoadError, match="gone.bin.*missing"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not a file"):
        load_model(tmp_path)


@pytest.mark.parametrize("content", [b"", b"this is not an onnx model\n" * 20,
                                     bytes(range(256)) * 8])
def test_non_onnx_files_are_load_errors(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError):
        load_model(path)


@pytest.mark.parametrize("source", ["chain", "squeezenet"])
def test_truncated_model_is_a_load_error(tmp_path, source):
    if source == "chain":
        data = conv_chain_model().SerializeToString()
    else:
        with open(light_model_path("squeezenet"), "rb") as f:
            data = f.read()
    path = tmp_path / "half.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="half.onnx"):
        load_model(path)


def test_invalid_graph_is_unsupported(tmp_path):
    model = conv_chain_model()
    model.graph.node[1].input[0] = "undefined_tensor"
    with pytest.raises(UnsupportedModelError, match="not valid ONNX"):
        load_model(model)


def test_errors_share_a_base_class():
    for cls in (ModelLoadError, UnsupportedModelError, ShapeResolutionError):
        assert issubclass(cls, OnnxMorphError)


# ------------------------------------------------------------------------- opsets
def _small_net(opset: int, ir_version: int = 8) -> onnx.ModelProto:
    b = GraphBuilder(seed=14, opset=opset, ir_version=ir_version)
    x = b.input("x", [1, 3, 8, 8])
    t = b.maxpool(b.relu(b.bn(b.conv(x, 8, name="c1"))), k=2)
    t = b.flatten(b.relu(b.conv(t, 4, name="c2")), name="flat")
    return b.model([b.gemm(t, 5, name="fc")])


def test_opset_9_model_is_converted():
    old = _small_net(9, ir_version=4)
    a = analyze(old)
    assert default_opset(a.loaded.model) == 13
    new = analyze(_small_net(17))
    assert a.macs == new.macs == 64 * 8 * 27 + 16 * 4 * 8 * 9 + 64 * 5
    assert a.params == new.params
    assert [g.channels for g in a.groups] == [g.channels for g in new.groups]
    assert [g.prunable for g in a.groups] == [g.prunable for g in new.groups]


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_supported_opsets_are_kept(opset):
    loaded = load_model(_small_net(opset))
    assert default_opset(loaded.model) == opset


@pytest.mark.parametrize("opset", [22, 23])
def test_too_new_opset_is_unsupported(opset):
    model = _small_net(17)
    model.opset_import[0].version = opset
    with pytest.raises(UnsupportedModelError, match=f"opset {opset} is newer"):
        load_model(model)


def test_model_without_default_opset_is_unsupported():
    model = _small_net(17)
    model.opset_import[0].domain = "com.example"
    with pytest.raises(UnsupportedModelError, match="no default ONNX opset"):
        load_model(model)


@pytest.mark.parametrize("ir, expected", [(3, 7), (7, 7), (8, 8), (10, 10)])
def test_ir_version_is_clamped(ir, expected):
    model = _small_net(17)
    if ir == 3:  # IR 3 lists initializers as graph inputs
        model.graph.input.extend(
            helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
            for i in model.graph.initializer
        )
    model.ir_version = ir
    loaded = load_model(model)
    assert loaded.model.ir_version == expected
    assert [i.name for i in loaded.model.graph.input] == ["x"]


# ------------------------------------------------------------------------- input shapes
def _dynamic_chain(dims) -> onnx.ModelProto:
    model = conv_chain_model()
    shape = model.graph.input[0].type.tensor_type.shape
    for dim, value in zip(shape.dim, dims, strict=True):
        dim.Clear()
        if isinstance(value, str):
            dim.dim_param = value
        elif value is not None:
            dim.dim_value = value
    _dynamic_outputs(model)
    return model


def _dynamic_outputs(model: onnx.ModelProto) -> None:
    for out in model.graph.output:
        for axis, dim in enumerate(out.type.tensor_type.shape.dim):
            dim.Clear()
            dim.dim_param = f"out{axis}"


def test_dynamic_spatial_dims_need_input_shape():
    model = _dynamic_chain(["N", 3, "H", "W"])
    with pytest.raises(ShapeResolutionError) as info:
        load_model(model)
    message = str(info.value)
    assert "'x'" in message and "--input-shape" in message and "'H'" in message


def test_dynamic_dims_resolved_by_input_shape():
    model = _dynamic_chain(["N", 3, "H", "W"])
    loaded = load_model(model, {"x": (1, 3, 8, 8)})
    assert loaded.input_shapes == {"x": (1, 3, 8, 8)}
    assert loaded.shapes["y"] == (1, 4, 8, 8)
    assert analyze(loaded).macs == CHAIN_MACS
    # Twice the batch and twice the side: 8x the MACs.
    assert analyze(model, parse_input_shapes(["x=2x3x16x16"])).macs == 8 * CHAIN_MACS


def test_dynamic_batch_resolves_to_one_and_stays_dynamic_in_the_model():
    model = _dynamic_chain(["batch", 3, 8, 8])
    loaded = load_model(model)
    assert loaded.input_shapes == {"x": (1, 3, 8, 8)}
    assert loaded.shapes["conv1"] == (1, 8, 8, 8)
    assert loaded.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert analyze(loaded).macs == CHAIN_MACS


def test_input_without_rank_needs_input_shape():
    # The checker rejects graph inputs without a shape, so only resolution itself sees them.
    model = conv_chain_model()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(ShapeResolutionError, match="'x' has no known rank.*--input-shape x="):
        resolve_input_shapes(model, {})
    assert resolve_input_shapes(model, {"x": (1, 3, 8, 8)}) == {"x": (1, 3, 8, 8)}
    with pytest.raises(OnnxMorphError):
        load_model(model)


@pytest.mark.parametrize(
    "given, match",
    [({"z": (1, 3, 8, 8)}, "names no model input: z .the inputs are: x"),
     ({"x": (1, 3, 8)}, "has 3 dimensions but the input has 4"),
     ({"x": (1, 4, 8, 8)}, "sets axis 1 to 4 but the model fixes it at 3")],
)
def test_bad_input_shapes(given, match):
    with pytest.raises(ShapeResolutionError, match=match):
        load_model(conv_chain_model(), given)


def test_input_shape_overrides_batch():
    loaded = load_model(_dynamic_chain(["N", 3, 8, 8]), {"x": (4, 3, 8, 8)})
    assert loaded.shapes["y"] == (4, 4, 8, 8)
    assert resolve_input_shapes(conv_chain_model(), {}) == {"x": (1, 3, 8, 8)}


def test_parse_input_shapes():
    assert parse_input_shapes(["x=1x3x8x8"]) == {"x": (1, 3, 8, 8)}
    assert parse_input_shapes(["images=2x3x224x224", " mask=1x1 ", "t=7"]) == {
        "images": (2, 3, 224, 224), "mask": (1, 1), "t": (7,)}
    assert parse_input_shapes(["input:0=1x3x8x8"]) == {"input:0": (1, 3, 8, 8)}
    assert parse_input_shapes(None) == {} and parse_input_shapes([]) == {}


@pytest.mark.parametrize(
    "spec", ["x", "x=", "=1x3", "x=1,3,8,8", "x=1x3xHx8", "x=1x3x", "x=-1x3", "x=1 x 3",
             "x=1.5x3"],
)
def test_parse_input_shapes_rejects_bad_specs(spec):
    with pytest.raises(ShapeResolutionError, match="NAME=1x3x224x224"):
        parse_input_shapes([spec])


def test_parse_input_shapes_rejects_zero_dims():
    with pytest.raises(ShapeResolutionError, match="not > 0"):
        parse_input_shapes(["x=0x3x8x8"])


def test_output_of_unknown_shape_is_unsupported():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    b.node("Foo", [b.conv(x, 4, name="c")], name="foo", domain="com.example")
    model = b.model(["foo"], check=False)
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_param = "n"
    with pytest.raises(UnsupportedModelError, match="shape of output 'foo'.*--input-shape"):
        load_model(model)
