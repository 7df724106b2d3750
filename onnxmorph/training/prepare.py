"""One training-graph preparation for every command that trains (prune, finetune).

The seed is loaded, folded and shape-resolved the way analysis does it
(`onnxmorph.graph.load_model`); ONNX Runtime then trains a *copy* of that graph:
- at opset >= 13: the Clip gradient emits LessOrEqual, which opset 11 lacks, and nodes we
  insert (gates, loss) use the opset-13 forms of Unsqueeze/ReduceSum;
- with every graph input fixed to the loader's batch shape: several ORT gradient builders
  (AveragePool, Mul with broadcasting) size their buffers from static shapes and build
  zero-sized tensors from symbolic ones — a SIGFPE in DenseNet's transition pools, "Can
  broadcast 0 by 0 or 1" in PaddleOCR's hard-swish;
- with ops that have no CPU gradient rewritten (`differentiable_ops`).
Trained weights are copied back by initializer name into the model at the seed's own opset,
so what is sliced and written keeps the seed's opset and dynamic batch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import onnx
from onnx import numpy_helper, version_converter

from onnxmorph.errors import TrainingError
from onnxmorph.graph.contrib_ops import untrainable_contrib_message
from onnxmorph.graph.onnx_utils import default_opset
from onnxmorph.graph.opset import MAX_IR_VERSION
from onnxmorph.graph.shapes import with_static_inputs
from onnxmorph.training.data import Batch, DataSource
from onnxmorph.training.differentiable_ops import (
    make_differentiable,
    non_differentiable_nodes,
    tensor_shapes,
)
from onnxmorph.training.isolate import run_isolated

TRAINING_OPSET = 13


def to_training_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` itself when its opset is >= 13, else a copy converted to opset 13."""
    version = default_opset(model, 0)
    if version >= TRAINING_OPSET:
        return model
    try:
        converted = version_converter.convert_version(model, TRAINING_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"the opset-{version} model could not be converted to opset "
                            f"{TRAINING_OPSET} for training ({first}); re-export it at opset "
                            f"{TRAINING_OPSET} or newer") from exc
    converted.ir_version = min(max(converted.ir_version, 7), MAX_IR_VERSION)
    return converted


def batch_shapes(batch: Batch) -> dict[str, tuple[int, ...]]:
    return {name: tuple(int(d) for d in array.shape) for name, array in batch.inputs.items()}


def training_copy(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                  rewrite: bool = True) -> onnx.ModelProto:
    """The graph ONNX Runtime trains: opset >= 13, inputs at `shapes` (the loader's batch),
    outputs with static shapes, and (with `rewrite`) ops without a CPU gradient rewritten.

    Gates are inserted into a copy made with `rewrite=False`, so they see the seed's layers
    (a ConvTranspose, not the Conv it becomes); `build_training_artifacts` rewrites the rest.
    Raises TrainingError naming the nodes that keep no gradient, before any training starts.
    """
    copy = with_static_inputs(to_training_opset(model), shapes)
    del copy.graph.value_info[:]
    for output in copy.graph.output:  # re-inferred below at the batch's shape
        output.type.tensor_type.ClearField("shape")
    def infer() -> dict[str, tuple[int, ...]]:
        try:
            sizes = tensor_shapes(copy)
            if any(not _static(sizes.get(o.name)) for o in copy.graph.output):
                sizes.update(_run_output_shapes(copy, shapes))
            return sizes
        except Exception as exc:
            raise TrainingError(f"shape inference failed on the training copy of the model at "
                                f"input shapes {shapes}: {str(exc).splitlines()[0]}") from exc

    # ONNX shape inference can die with SIGFPE on malformed graphs: run it in a worker.
    sizes = run_isolated(infer, "shape inference on the training copy")
    for output in copy.graph.output:
        dims = sizes.get(output.name)
        if dims is not None and all(d > 0 for d in dims):
            for value in dims:
                output.type.tensor_type.shape.dim.add().dim_value = value
    rewritten = make_differentiable(copy, sizes)
    check_differentiable(rewritten)
    return rewritten if rewrite else copy


def _static(dims: tuple[int, ...] | None) -> bool:
    return dims is not None and all(d > 0 for d in dims)


def _run_output_shapes(model: onnx.ModelProto,
                       shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Output shapes at the batch's input shapes, from one onnxruntime run on zeros.

    ONNX shape inference loses some outputs of dynamo exports (Swin's window reshapes), and
    an output without a shape makes onnxblock's full check fail ("Field 'shape' of 'type' is
    required but missing"); the loss also needs the output's static shape."""
    import numpy as np

    from onnxmorph.training.evaluate import inference_session

    feeds = {i.name: np.zeros(shapes[i.name], onnx.helper.tensor_dtype_to_np_dtype(
        i.type.tensor_type.elem_type)) for i in model.graph.input if i.name in shapes}
    names = [o.name for o in model.graph.output]
    outputs = inference_session(model).run(names, feeds)
    return {name: tuple(int(d) for d in out.shape) for name, out in zip(names, outputs)}


def check_differentiable(model: onnx.ModelProto) -> None:
    """One line naming the nodes ONNX Runtime cannot differentiate (after the rewrites)."""
    fused = untrainable_contrib_message(model)
    if fused:
        raise TrainingError(fused)
    blockers = non_differentiable_nodes(model)
    if blockers:
        raise TrainingError(
            f"node {', '.join(blockers[:5])} has no gradient in onnxruntime-training (CPU) and "
            "no differentiable rewrite at these shapes; this model cannot be trained — use "
            "--method l1 or --method uniform without --data")


def copy_trained_weights(model: onnx.ModelProto, trained: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose initializers take the values of `trained`'s same-named ones."""
    values = {i.name: i for i in trained.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        source = values.get(init.name)
        if source is not None and list(source.dims) == list(init.dims) \
                and source.data_type == init.data_type:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(source), init.name))
    return out


class SameShapeBatches(DataSource):
    """The loader's batches, training ones restricted to the shape the training graph has.

    A loader's last, smaller batch would not fit the static training graph; it is skipped
    (said once on stderr) instead of failing the run. Evaluation batches pass unchanged.
    """

    def __init__(self, source: DataSource, shapes: dict[str, tuple[int, ...]]) -> None:
        self.__dict__.update(source.__dict__)
        self.shapes = shapes
        self._told = False

    def train(self) -> Iterator[Batch]:
        for batch in super().train():
            if batch_shapes(batch) == self.shapes:
                yield batch
            elif not self._told:
                self._told = True
                print(f"onnxmorph: note: training batches shaped {batch_shapes(batch)} are "
                      f"skipped; the training graph is fixed at the first batch's "
                      f"{self.shapes}", file=sys.stderr)
