"""LatencyExpr: predicted latency of a structure, with CostExpr's call interface.

latency(alive) = Σ_layers table_l(L[in_l](alive), L[out_l](alive)), where L are the MAC cost
model's linear forms (alive input/output channels of the layer) and table_l interpolates the
layer's measured (or roofline) grid bilinearly. Gate probabilities in place of a 0/1 mask give
the expected counts, and the same formula becomes ONNX nodes in the training graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.cost import CostExpr
from onnxmorph.latency.interpolate import StackedTables
from onnxmorph.latency.layers import weight_layers
from onnxmorph.latency.table import LatencyTable


@dataclass
class LatencyExpr:
    forms_of: CostExpr  # the MAC cost model whose forms count alive channels
    input_forms: np.ndarray  # [L] form index read as x (the output form for depthwise)
    output_forms: np.ndarray  # [L]
    tables: StackedTables
    layers: list[str] = field(default_factory=list)
    unit: str = "ms"
    source: dict = field(default_factory=dict)  # the table's key and info

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


def latency_expr(analysis: Analysis, table: LatencyTable) -> LatencyExpr:
    """The latency of `analysis`' weight layers as priced by `table`."""
    expr = analysis.cost.macs
    specs = weight_layers(analysis, expr)
    grids = [table.grid(spec.name) for spec in specs]
    for spec, grid in zip(specs, grids):
        if grid.grid_out[-1] != spec.out_full or (
                not spec.depthwise and grid.grid_in[-1] != spec.in_full):
            from onnxmorph.latency.table import LatencyTableError

            raise LatencyTableError(
                f"the latency table's widths for layer '{spec.name}' do not match the model "
                "(it was made for another one): run `onnxmorph profile` on this model")
    return LatencyExpr(
        forms_of=expr,
        input_forms=np.array([s.form_out if s.depthwise else s.form_in for s in specs],
                             dtype=np.int64),
        output_forms=np.array([s.form_out for s in specs], dtype=np.int64),
        tables=StackedTables.of([g.table() for g in grids]),
        layers=[s.name for s in specs],
        source={"key": table.key, "info": table.info},
    )
