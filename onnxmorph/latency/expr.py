"""LatencyExpr: predicted latency of a structure, with CostExpr's call interface.

latency(alive) = Σ_layers table_l(L[in_l](alive), L[out_l](alive)), where L are the MAC cost
model's linear forms (alive input/output channels of the layer) and table_l interpolates the
layer's measured (or roofline) grid bilinearly; plus Σ_ops ms_o · L[out_o](alive) / seed
channels for the other ops (other_ops.py), whose forms are added to the MAC model's. Gate
probabilities in place of a 0/1 mask give the expected counts, and the same formula becomes
ONNX nodes in the training graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.cost import CostExpr
from onnxmorph.latency.interpolate import BilinearTable, StackedTables
from onnxmorph.latency.layers import weight_layers
from onnxmorph.latency.other_ops import other_ops
from onnxmorph.latency.table import LatencyTable, LatencyTableError

RUN_OVERHEAD = "(session run overhead)"


@dataclass
class LatencyExpr:
    forms_of: CostExpr  # the MAC cost model whose forms count alive channels
    input_forms: np.ndarray  # [L] form index read as x (the output form for depthwise)
    output_forms: np.ndarray  # [L]
    tables: StackedTables
    layers: list[str] = field(default_factory=list)
    unit: str = "ms"
    source: dict = field(default_factory=dict)  # the table's key and info
    weight_layers: int = 0  # the first `weight_layers` entries of `layers`; then other ops
    fused: dict[str, str] = field(default_factory=dict)  # op → Conv it is fused into (0 ms)
    unpriced: list[dict] = field(default_factory=list)  # ops the prediction leaves out, why

    @property
    def num_units(self) -> int:
        return self.forms_of.num_units

    def terms(self, alive: np.ndarray) -> np.ndarray:
        forms = self.forms_of.forms(alive)
        return self.tables(forms[self.input_forms], forms[self.output_forms])

    def derivative(self, alive: np.ndarray) -> np.ndarray:
        """∂latency/∂alive_u at `alive`, as CostExpr.derivative: each layer's table sloped
        at its alive counts (from below on a knot), chained through the MAC model's forms.
        A measured table can dip where a width fits the runtime's blocks better; the slope
        is floored at 0, since a regularizer or proximal step with a negative weight would
        grow a channel to save time, which channels never do here."""
        forms = self.forms_of.forms(alive)
        dx, dy = self.tables.partials(forms[self.input_forms], forms[self.output_forms])
        per_form = (np.bincount(self.input_forms, weights=dx, minlength=forms.size)
                    + np.bincount(self.output_forms, weights=dy, minlength=forms.size))
        return np.maximum(self.forms_of.chain(per_form), 0.0)

    # Same call interface as CostExpr, from the same code: total and per-layer sums of terms.
    __call__ = CostExpr.__call__
    by_layer = CostExpr.by_layer

    def split(self, alive: np.ndarray | None = None) -> tuple[float, float]:
        """(weight layers, other ops) latency."""
        alive = np.ones(self.num_units) if alive is None else alive
        terms = self.terms(alive)
        return float(terms[:self.weight_layers].sum()), float(terms[self.weight_layers:].sum())


def latency_expr(analysis: Analysis, table: LatencyTable) -> LatencyExpr:
    """The latency of `analysis`' weight layers and other ops as priced by `table`."""
    expr = analysis.cost.macs
    specs = weight_layers(analysis, expr)
    grids = [table.grid(spec.name) for spec in specs]
    for spec, grid in zip(specs, grids):
        if grid.grid_out[-1] != spec.out_full or (
                not spec.depthwise and grid.grid_in[-1] != spec.in_full):
            raise LatencyTableError(
                f"the latency table's widths for layer '{spec.name}' do not match the model "
                "(it was made for another one): run `onnxmorph profile` on this model")
    tables = [g.table() for g in grids]
    names = [s.name for s in specs]
    inputs = [s.form_out if s.depthwise else s.form_in for s in specs]
    outputs = [s.form_out for s in specs]
    fused, unpriced, tensors = {}, [], []
    for op in other_ops(analysis, set(names)):
        if op.fused_into is not None:  # by the graph, whatever table prices the rest
            fused[op.name] = op.fused_into
            continue
        price = None if table.ops is None else table.ops.get(op.name)
        if price is None:
            reason = ("the latency table prices weight layers only (made by an older "
                      "onnxmorph): run `onnxmorph profile --force`" if table.ops is None else
                      table.unpriced.get(op.name, "not in the latency table"))
            unpriced.append({"node": op.name, "op_type": op.node.op_type, "reason": reason})
            continue
        if price["channels"] != op.channels:
            raise LatencyTableError(
                f"the latency table's channels for op '{op.name}' do not match the model (it "
                "was made for another one): run `onnxmorph profile` on this model")
        # Linear in the alive channels of its output: constant along x, knots 0 and full.
        tables.append(BilinearTable.from_grid([op.channels], [0, op.channels],
                                              [[0.0, price["ms"]]]))
        names.append(op.name)
        tensors.append(op.tensor)
    if table.overhead_ms > 0:  # per inference, whatever the widths
        tables.append(BilinearTable.from_grid([1], [1], [[table.overhead_ms]]))
        names.append(RUN_OVERHEAD)
        tensors.append(None)
    forms, indices = extend_forms(expr, analysis.channels.layouts, tensors)
    return LatencyExpr(
        forms_of=forms,
        input_forms=np.array(inputs + indices, dtype=np.int64),
        output_forms=np.array(outputs + indices, dtype=np.int64),
        tables=StackedTables.of(tables),
        layers=names,
        source={"key": table.key, "info": table.info},
        weight_layers=len(specs), fused=fused, unpriced=unpriced,
    )


def extend_forms(expr: CostExpr, layouts: dict,
                 tensors: list[str | None]) -> tuple[CostExpr, list[int]]:
    """`expr` with one more linear form per tensor (its alive channels; None: the constant
    1); their indices."""
    rows, units, counts = [expr.form_rows], [expr.form_units], [expr.form_counts]
    offsets = list(expr.form_offsets)
    indices = []
    for tensor in tensors:
        if tensor is None:
            indices.append(len(offsets))
            offsets.append(1.0)
            continue
        ids, count = np.unique(layouts[tensor].ids, return_counts=True)
        indices.append(len(offsets))
        rows.append(np.full(ids.size, len(offsets), dtype=np.int64))
        units.append(ids.astype(np.int64))
        counts.append(count.astype(np.float64))
        offsets.append(0.0)
    return replace(expr, form_rows=np.concatenate(rows), form_units=np.concatenate(units),
                   form_counts=np.concatenate(counts),
                   form_offsets=np.asarray(offsets, dtype=np.float64)), indices
