"""A few batches of the user's data, and per-channel statistics of intermediate tensors.

Activations come from onnxruntime: the tensors a criterion needs become extra outputs of a
copy of the inference graph, and each batch's values are reduced to per-channel numbers at
once, so memory stays at one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import helper

from onnxmorph.errors import DataError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.handlers.base import Layout
from onnxmorph.methods.registry import MethodInput

Reducer = Callable[[str, np.ndarray], np.ndarray]


def calibration_batches(request: MethodInput) -> list:
    """The first `request.calibration_batches` training batches of the loader."""
    from onnxmorph.training.data import DataSource

    # Labels are checked like the training loader's: range against the output width.
    loaded = request.analysis.loaded
    source = DataSource.for_model(request.data, loaded.model, loaded.shapes)
    batches = []
    for batch in source.train():
        batches.append(batch)
        if len(batches) >= request.calibration_batches:
            break
    if not batches:
        raise DataError(f"loader '{request.data}' train_batches() yielded no batches")
    return batches


def summed_over_batches(
    model: onnx.ModelProto, tensors: list[str], batches: Iterable, reduce: Reducer,
) -> dict[str, np.ndarray]:
    """For every tensor name: Σ over batches of `reduce(name, value of the tensor)`."""
    from onnxmorph.training.evaluate import inference_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inputs = {i.name for i in probe.graph.input}
    outputs = {o.name for o in probe.graph.output}
    computed = [name for name in tensors if name not in inputs]
    for name in computed:
        if name not in outputs:  # element type float: criteria read layer activations only
            probe.graph.output.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = inference_session(probe)
    totals: dict[str, np.ndarray] = {}
    for batch in batches:
        values = dict(zip(computed, session.run(computed, batch.inputs))) if computed else {}
        for name in tensors:
            value = values[name] if name in values else batch.inputs[name]
            reduced = reduce(name, np.asarray(value, dtype=np.float64))
            totals[name] = reduced if name not in totals else totals[name] + reduced
    return totals


def per_channel_rows(value: np.ndarray, layout: Layout) -> np.ndarray:
    """`value` as [channel index along the layout's axes (C order), everything else]."""
    moved = np.moveaxis(value, layout.axes, tuple(range(len(layout.axes))))
    return moved.reshape(layout.ids.size, -1)


def touches_prunable(analysis: Analysis, layout: Layout) -> bool:
    prunable = np.zeros(analysis.channels.num_units, dtype=bool)
    for group in analysis.channels.prunable_groups():
        prunable[group.units] = True
    return bool(prunable[layout.ids].any())
