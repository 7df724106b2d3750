"""Small helpers to build readable ONNX test graphs with random float32 weights.

    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    y = b.relu(b.bn(b.conv(x, 8)))
    model = b.model([y])

Every method returns the name of the tensor it made. Input channel counts (a conv's Cin, a
BatchNormalization's C) are read from ONNX shape inference of the graph built so far, so tests
only say what they mean. Node names are the op type in lower case plus a counter unless given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

LIGHT_MODELS_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def light_model_path(name: str) -> str:
    """Path of one of the onnx wheel's light models, e.g. `light_model_path("resnet50")`."""
    return os.path.join(LIGHT_MODELS_DIR, f"light_{name}.onnx")


class GraphBuilder:
    def __init__(self, seed: int = 0, opset: int = OPSET, ir_version: int = IR_VERSION) -> None:
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.ir_version = ir_version
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.domains: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._shape_cache: dict[str, tuple[int, ...]] = {}
        self._cache_size = -1

    # ---------------------------------------------------------------- plumbing
    def fresh(self, prefix: str) -> str:
        """A name not used yet: `prefix_1`, `prefix_2`, ..."""
        used = {i.name for i in self.inputs} | {i.name for i in self.initializers}
        used |= {n.name for n in self.nodes} | {o for n in self.nodes for o in n.output}
        while True:
            self._counts[prefix] = self._counts.get(prefix, 0) + 1
            name = f"{prefix}_{self._counts[prefix]}"
            if name not in used:
                return name

    def input(self, name: str, shape: Sequence[int | str | None],
              elem_type: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def const(self, value, name: str | None = None, dtype=np.float32) -> str:
        """An initializer holding `value`."""
        name = name or self.fresh("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, value, name: str | None = None) -> str:
        return self.const(value, name, dtype=np.int64)

    def weight(self, shape: Sequence[int], name: str | None = None) -> str:
        value = self.rng.normal(0.0, 0.5, size=tuple(shape)).astype(np.float32)
        return self.const(value, name)

    def node(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1,
             name: str | None = None, domain: str = "", **attrs) -> str | list[str]:
        """Add a node; returns its output name (or list of names when it has several)."""
        name = name or self.fresh(op_type.lower())
        if isinstance(outputs, int):
            outputs = [name if outputs == 1 else f"{name}_out{i}" for i in range(outputs)]
        if domain:
            self.domains.setdefault(domain, 1)
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name,
                                           domain=domain or None, **attrs))
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def shape(self, tensor: str) -> tuple[int, ...]:
        """Static shape of `tensor` by ONNX shape inference of the graph so far."""
        if self._cache_size != len(self.nodes):
            graph = helper.make_graph(self.nodes, "partial", self.inputs, [],
                                      initializer=self.initializers)
            inferred = onnx.shape_inference.infer_shapes(self._wrap(graph), data_prop=True)
            self._shape_cache = {}
            for info in list(inferred.graph.input) + list(inferred.graph.value_info):
                dims = info.type.tensor_type.shape.dim
                self._shape_cache[info.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in dims
                )
            for init in self.initializers:
                self._shape_cache[init.name] = tuple(init.dims)
            self._cache_size = len(self.nodes)
        return self._shape_cache[tensor]

    def channels(self, tensor: str) -> int:
        return self.shape(tensor)[1]

    def _wrap(self, graph: onnx.GraphProto) -> onnx.ModelProto:
        opsets = [helper.make_opsetid("", self.opset)]
        opsets += [helper.make_opsetid(d, v) for d, v in self.domains.items()]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxmorph-tests")
        model.ir_version = self.ir_version
        return model

    def model(self, outputs: Sequence[str], check: bool = True) -> onnx.ModelProto:
        """The finished model; graph outputs get their inferred shapes."""
        out_infos = []
        for name in outputs:
            try:
                shape = list(self.shape(name))
            except KeyError:
                shape = None
            out_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        graph = helper.make_graph(self.nodes, "test", self.inputs, out_infos,
                                  initializer=self.initializers)
        model = self._wrap(graph)
        if check:
            onnx.checker.check_model(model)
        return model

    # ---------------------------------------------------------------- layers
    def conv(self, x: str, cout: int, k: int = 3, group: int = 1, stride: int = 1,
             pad: int | None = None, bias: bool = True, name: str | None = None) -> str:
        name = name or self.fresh("conv")
        cin = self.channels(x)
        pad = k // 2 if pad is None else pad
        inputs = [x, self.weight([cout, cin // group, k, k], f"{name}.W")]
        if bias:
            inputs.append(self.weight([cout], f"{name}.B"))
        return self.node("Conv", inputs, name=name, kernel_shape=[k, k], pads=[pad] * 4,
                         strides=[stride, stride], group=group)

    def conv_transpose(self, x: str, cout: int, k: int = 2, stride: int = 2, group: int = 1,
                       name: str | None = None) -> str:
        name = name or self.fresh("convT")
        cin = self.channels(x)
        w = self.weight([cin, cout // group, k, k], f"{name}.W")
        b = self.weight([cout], f"{name}.B")
        return self.node("ConvTranspose", [x, w, b], name=name, kernel_shape=[k, k],
                         strides=[stride, stride], group=group)

    def bn(self, x: str, name: str | None = None) -> str:
        name = name or self.fresh("bn")
        c = self.channels(x)
        scale = self.const(self.rng.uniform(0.5, 1.5, c), f"{name}.scale")
        bias = self.const(self.rng.normal(0, 0.1, c), f"{name}.bias")
        mean = self.const(self.rng.normal(0, 0.1, c), f"{name}.mean")
        var = self.const(self.rng.uniform(0.5, 1.5, c), f"{name}.var")
        return self.node("BatchNormalization", [x, scale, bias, mean, var], name=name)

    def instance_norm(self, x: str, name: str | None = None) -> str:
        name = name or self.fresh("in")
        c = self.channels(x)
        scale = self.const(self.rng.uniform(0.5, 1.5, c), f"{name}.scale")
        bias = self.const(self.rng.normal(0, 0.1, c), f"{name}.bias")
        return self.node("InstanceNormalization", [x, scale, bias], name=name)

    def relu(self, x: str, name: str | None = None) -> str:
        return self.node("Relu", [x], name=name)

    def sigmoid(self, x: str, name: str | None = None) -> str:
        return self.node("Sigmoid", [x], name=name)

    def add(self, a: str, b: str, name: str | None = None) -> str:
        return self.node("Add", [a, b], name=name)

    def mul(self, a: str, b: str, name: str | None = None) -> str:
        return self.node("Mul", [a, b], name=name)

    def concat(self, xs: Sequence[str], axis: int = 1, name: str | None = None) -> str:
        return self.node("Concat", list(xs), name=name, axis=axis)

    def gap(self, x: str, name: str | None = None) -> str:
        return self.node("GlobalAveragePool", [x], name=name)

    def maxpool(self, x: str, k: int = 2, name: str | None = None) -> str:
        return self.node("MaxPool", [x], name=name, kernel_shape=[k, k], strides=[k, k])

    def flatten(self, x: str, axis: int = 1, name: str | None = None) -> str:
        return self.node("Flatten", [x], name=name, axis=axis)

    def reshape(self, x: str, shape: Sequence[int], name: str | None = None) -> str:
        return self.node("Reshape", [x, self.ints(list(shape))], name=name)

    def transpose(self, x: str, perm: Sequence[int], name: str | None = None) -> str:
        return self.node("Transpose", [x], name=name, perm=list(perm))

    def gemm(self, x: str, nout: int, name: str | None = None) -> str:
        """y = x @ W^T + B with W [nout, nin] (transB=1, as PyTorch exports Linear)."""
        name = name or self.fresh("gemm")
        nin = self.shape(x)[-1]
        w = self.weight([nout, nin], f"{name}.W")
        b = self.weight([nout], f"{name}.B")
        return self.node("Gemm", [x, w, b], name=name, transB=1)

    def conv_bn_relu(self, x: str, cout: int, k: int = 3, group: int = 1,
                     name: str | None = None) -> str:
        return self.relu(self.bn(self.conv(x, cout, k=k, group=group, name=name)))


def conv_chain_model(widths: Sequence[int] = (8, 16, 4), in_shape=(1, 3, 8, 8),
                     seed: int = 0) -> onnx.ModelProto:
    """x → (Conv 3x3 → Relu) per width, the last Conv without Relu is the output 'y'."""
    b = GraphBuilder(seed)
    t = b.input("x", list(in_shape))
    for i, width in enumerate(widths):
        last = i == len(widths) - 1
        t = b.conv(t, width, name="y" if last else f"conv{i + 1}")
        if not last:
            t = b.relu(t, name=f"relu{i + 1}")
    return b.model([t])


# ---------------------------------------------------------------- reading an Analysis
def ids_of(analysis, tensor: str) -> np.ndarray:
    """Unit ids of the channels of `tensor` in `analysis` (an onnxmorph Analysis)."""
    return analysis.channels.layouts[tensor].ids


def groups_of(analysis, tensor: str) -> list:
    """The groups the channels of `tensor` belong to, in order of group id."""
    group_ids = np.unique(analysis.channels.unit_group[ids_of(analysis, tensor)])
    return [analysis.groups[int(g)] for g in group_ids]


def group_of(analysis, tensor: str):
    """The one group all channels of `tensor` belong to (fails if they span several)."""
    groups = groups_of(analysis, tensor)
    assert len(groups) == 1, f"{tensor} spans groups {[g.id for g in groups]}"
    return groups[0]
