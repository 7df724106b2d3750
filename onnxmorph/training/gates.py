"""Insert per-channel gates (FiGS logistic-sigmoid gates) and the differentiable cost term.

Every prunable group gets a vector of gate logits, one per unit. During training a gate is a
relaxed Bernoulli sample z = σ((logit + noise) / τ) with logistic noise fed from Python (so the
graph stays deterministic and differentiable), and multiplies the unit's channels wherever a
layer consumes them. The cost output is the cost model evaluated at the gate probabilities
σ(logit), divided by the seed's cost, so λ means the same thing for every model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.channels import ChannelGroup, mask_shape
from onnxmorph.graph.cost import CostExpr
from onnxmorph.graph.layers import weight_layer_ops
from onnxmorph.latency.expr import LatencyExpr

PREFIX = "onnxmorph_gate"
NOISE_INPUT = f"{PREFIX}_noise"
COST_OUTPUT = "onnxmorph_cost"
_CONSUMERS = weight_layer_ops()  # layers whose input channels a gate scales


@dataclass(frozen=True)
class GateSettings:
    init_logit: float = 3.0  # σ(3) ≈ 0.95: every gate starts open
    temperature: float = 0.5
    # Logits are stored divided by this, so one optimizer learning rate moves gates faster
    # than weights (AdamW steps are ~lr in parameter units).
    logit_scale: float = 10.0


@dataclass
class GatedModel:
    model: onnx.ModelProto
    groups: list[ChannelGroup]
    logit_names: list[str]  # one initializer per group, in `groups` order
    gated_units: np.ndarray  # unit index of each noise/probability entry
    settings: GateSettings
    num_units: int

    def probabilities(self, params: dict[str, np.ndarray]) -> np.ndarray:
        """Gate probability of every unit of the analysis (1 for units without a gate)."""
        raw = np.concatenate([params[name] for name in self.logit_names]).astype(np.float64)
        probs = np.ones(self.num_units)
        probs[self.gated_units] = 1.0 / (1.0 + np.exp(-raw * self.settings.logit_scale))
        return probs

    def noise(self, rng: np.random.Generator) -> np.ndarray:
        u = rng.uniform(1e-6, 1 - 1e-6, size=self.gated_units.size)
        return (np.log(u) - np.log1p(-u)).astype(np.float32)

    def no_noise(self) -> np.ndarray:
        return np.zeros(self.gated_units.size, dtype=np.float32)


def insert_gates(
    analysis: Analysis, groups: list[ChannelGroup], cost: CostExpr,
    settings: GateSettings = GateSettings(),
) -> GatedModel:
    """A copy of the seed with gates on every consumed tensor and a `onnxmorph_cost` output."""
    model = onnx.ModelProto()
    model.CopyFrom(analysis.loaded.model)
    graph = model.graph
    num_units = analysis.channels.num_units
    gated_units = np.concatenate([g.units for g in groups])
    logit_names = [f"{PREFIX}/logits/{g.id}" for g in groups]
    for name, group in zip(logit_names, groups):
        init = np.full(group.channels, settings.init_logit / settings.logit_scale, np.float32)
        graph.initializer.append(numpy_helper.from_array(init, name))
    graph.input.append(helper.make_tensor_value_info(
        NOISE_INPUT, onnx.TensorProto.FLOAT, [int(gated_units.size)]))
    nodes = _GateNodes(graph)
    sample, prob = nodes.gate_vectors(logit_names, settings, gated_units, num_units)
    gated_nodes = nodes.gate_consumers(analysis, sample)
    cost_nodes = (nodes.latency(cost, prob) if isinstance(cost, LatencyExpr)
                  else nodes.cost(cost, prob))
    graph.output.append(helper.make_tensor_value_info(COST_OUTPUT, onnx.TensorProto.FLOAT, [1]))
    _splice(graph, gated_nodes, nodes.head + cost_nodes)
    return GatedModel(model=model, groups=groups, logit_names=logit_names,
                      gated_units=gated_units, settings=settings, num_units=num_units)


class _GateNodes:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.head: list[onnx.NodeProto] = []  # nodes that depend on nothing but gate params
        self.counter = 0

    def const(self, value: np.ndarray, hint: str) -> str:
        self.counter += 1
        name = f"{PREFIX}/const/{hint}_{self.counter}"
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, sink: list, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        self.counter += 1
        out = f"{PREFIX}/{hint}_{self.counter}"
        sink.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def gate_vectors(self, logit_names, settings, gated_units, num_units) -> tuple[str, str]:
        """Per-unit sample z and probability p over all units (ungated units are 1)."""
        head = self.head
        logits = self.op(head, "Concat", logit_names, "logits", axis=0)
        scaled = self.op(head, "Mul", [logits, self.const(
            np.array([settings.logit_scale], np.float32), "scale")], "scaled")
        noisy = self.op(head, "Add", [scaled, NOISE_INPUT], "noisy")
        tempered = self.op(head, "Mul", [noisy, self.const(
            np.array([1.0 / settings.temperature], np.float32), "inv_temperature")], "tempered")
        gated_sample = self.op(head, "Sigmoid", [tempered], "sample")
        gated_prob = self.op(head, "Sigmoid", [scaled], "prob")
        # One Concat [samples, probabilities, ones for the rest] read by two Gathers.
        # A separate ones constant per vector is not enough: ORT's constant sharing merges
        # equal small initializers, and its gradient builder then defines the merged
        # constant's gradient twice ("Duplicate definition of name ..._grad").
        rest = np.setdiff1d(np.arange(num_units), gated_units)
        size = gated_units.size
        ones = self.const(np.ones(rest.size, np.float32), "ones")
        joined = self.op(head, "Concat", [gated_sample, gated_prob, ones], "joined", axis=0)
        full = []
        for offset, hint in ((0, "z"), (size, "p")):
            # `position` maps unit → entry of `joined`.
            position = np.empty(num_units, np.int64)
            position[gated_units] = offset + np.arange(size)
            position[rest] = 2 * size + np.arange(rest.size)
            index = self.const(position, f"{hint}_unit_order")
            full.append(self.op(head, "Gather", [joined, index], f"{hint}_units", axis=0))
        return full[0], full[1]

    def gate_consumers(self, analysis: Analysis, sample: str,
                       keep: Callable[[onnx.NodeProto], bool] | None = None,
                       ) -> dict[str, list[onnx.NodeProto]]:
        """Mul nodes gating each tensor that a layer consumes, keyed by that tensor
        (`keep`: only the layers it accepts)."""
        layouts, shapes = analysis.channels.layouts, analysis.loaded.shapes
        gated: dict[str, list[onnx.NodeProto]] = {}
        rename: dict[str, str] = {}
        for node in self.graph.node:
            if node.op_type not in _CONSUMERS or node.input[0] not in layouts:
                continue
            if keep is not None and not keep(node):
                continue
            tensor = node.input[0]
            if tensor not in rename:
                layout = layouts[tensor]
                nodes: list[onnx.NodeProto] = []
                ids = self.const(layout.ids.astype(np.int64), "ids")
                values = self.op(nodes, "Gather", [sample, ids], "gate_values", axis=0)
                shape = self.const(np.array(mask_shape(layout, len(shapes[tensor])), np.int64),
                                   "mask_shape")
                mask = self.op(nodes, "Reshape", [values, shape], "mask")
                rename[tensor] = self.op(nodes, "Mul", [tensor, mask], "gated")
                gated[tensor] = nodes
            node.input[0] = rename[tensor]
        return gated

    def cost(self, expr: CostExpr, prob: str) -> list[onnx.NodeProto]:
        """cost(p) / cost(1) as ONNX nodes: L = offsets + p·M; Σ coef·L[a]·L[b]."""
        nodes: list[onnx.NodeProto] = []
        seed = expr()
        forms = self.forms(nodes, expr, prob)
        first = self.op(nodes, "Gather", [forms, self.const(expr.first, "first")], "first",
                        axis=0)
        linear = expr.second < 0
        # Linear terms multiply by the constant form 1: append it and point at it.
        ones = self.op(nodes, "Concat", [forms, self.const(np.ones(1, np.float32), "one")],
                       "forms_one", axis=0)
        second_index = np.where(linear, expr.form_offsets.size, expr.second)
        second = self.op(nodes, "Gather", [ones, self.const(second_index, "second")], "second",
                         axis=0)
        coef = self.const((expr.coef / seed).astype(np.float32), "coef")
        terms = self.op(nodes, "Mul", [self.op(nodes, "Mul", [first, second], "pair"), coef],
                        "terms")
        total = self.op(nodes, "ReduceSum", [terms, self.const(np.array([0], np.int64), "ax")],
                        "total", keepdims=1)
        nodes.append(helper.make_node("Identity", [total], [COST_OUTPUT], name=COST_OUTPUT))
        return nodes

    def latency(self, expr: LatencyExpr, prob: str) -> list[onnx.NodeProto]:
        """latency(p) / latency(1): each layer's table interpolated at its expected alive
        counts, H_x(x) · V · H_y(y) with hat functions from Relu ramps (onnxmorph.latency)."""
        nodes: list[onnx.NodeProto] = []
        tables = expr.tables
        forms = self.forms(nodes, expr.forms_of, prob)
        x = self.op(nodes, "Gather", [forms, self.const(expr.input_forms, "lat_in")], "lat_x",
                    axis=0)
        y = self.op(nodes, "Gather", [forms, self.const(expr.output_forms, "lat_out")],
                    "lat_y", axis=0)
        hats_x = self.hats(nodes, x, tables.knots_x, tables.matrix_x, "x")
        hats_y = self.hats(nodes, y, tables.knots_y, tables.matrix_y, "y")
        values = self.const((tables.values / expr()).astype(np.float32), "lat_values")
        rows = self.op(nodes, "MatMul", [hats_x, values], "lat_rows")  # [L, 1, K]
        products = self.op(nodes, "Mul", [rows, hats_y], "lat_products")
        total = self.op(nodes, "ReduceSum", [products, self.const(
            np.array([0, 1, 2], np.int64), "lat_axes")], "lat_total", keepdims=1)
        nodes.append(helper.make_node("Reshape", [total, self.const(
            np.array([1], np.int64), "lat_shape")], [COST_OUTPUT], name=COST_OUTPUT))
        return nodes

    def hats(self, nodes: list, x: str, knots: np.ndarray, matrix: np.ndarray,
             hint: str) -> str:
        """[L, 1, K] hat-function values: C[0] + relu(x - knots) · C[1:] per layer."""
        constant = self.const(matrix[:, :1, :].astype(np.float32), f"hat_{hint}_const")
        if knots.shape[1] == 0:  # every layer's table is constant along this axis
            return constant
        column = self.op(nodes, "Unsqueeze", [x, self.const(np.array([1, 2], np.int64),
                                                            f"{hint}_axes")], f"{hint}_col")
        shifted = self.op(nodes, "Sub", [column, self.const(
            knots[:, None, :].astype(np.float32), f"knots_{hint}")], f"{hint}_shifted")
        ramps = self.op(nodes, "Relu", [shifted], f"{hint}_ramps")
        slopes = self.op(nodes, "MatMul", [ramps, self.const(
            matrix[:, 1:, :].astype(np.float32), f"hat_{hint}_slopes")], f"{hint}_sloped")
        return self.op(nodes, "Add", [slopes, constant], f"hats_{hint}")

    def forms(self, nodes: list, expr: CostExpr, prob: str) -> str:
        """The linear forms L = offsets + p·M (alive channel counts) as one vector."""
        matrix = self.const(expr.dense_forms().astype(np.float32), "forms")
        offsets = self.const(expr.form_offsets.astype(np.float32), "offsets")
        row = self.op(nodes, "Unsqueeze", [prob, self.const(np.array([0], np.int64), "axis0")],
                      "prob_row")
        product = self.op(nodes, "MatMul", [row, matrix], "forms_raw")
        flat = self.op(nodes, "Reshape", [product, self.const(np.array([-1], np.int64), "flat")],
                       "forms_flat")
        return self.op(nodes, "Add", [flat, offsets], "forms")


def _splice(graph: onnx.GraphProto, gated: dict[str, list[onnx.NodeProto]],
            head: list[onnx.NodeProto]) -> None:
    """Put gate nodes right after the producers of the tensors they gate."""
    ordered = list(head)
    for inp in graph.input:
        ordered.extend(gated.get(inp.name, []))
    for node in graph.node:
        ordered.append(node)
        for out in node.output:
            ordered.extend(gated.get(out, []))
    del graph.node[:]
    graph.node.extend(ordered)
