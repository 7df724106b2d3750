"""Find which initializers to train and which to carry as frozen state (pure analysis)."""

from __future__ import annotations

import onnx

from onnxmorph.training.differentiable_ops import CONST_PREFIX

# (op_type, input index) slots that hold float initializers which are settings, not weights.
_SETTING_SLOTS = frozenset(
    {
        ("BatchNormalization", 3), ("BatchNormalization", 4), ("Clip", 1), ("Clip", 2),
        ("Pad", 2), ("Resize", 1), ("Resize", 2), ("Upsample", 1), ("Pow", 1), ("Dropout", 1),
        ("QuantizeLinear", 1), ("DequantizeLinear", 1), ("ConstantOfShape", 0),
    }
)  # fmt: skip


def batchnorm_running_stats(model: onnx.ModelProto) -> list[str]:
    """Running mean/var initializers (inputs 3 and 4) of every BatchNormalization node.

    ORT turns inference BN into training BN in the training graph; the updated statistics
    persist only when these names are passed as frozen parameters.
    """
    return _initializer_inputs(model, "BatchNormalization", 3, 5)


def layer_norm_parameters(model: onnx.ModelProto) -> list[str]:
    """Scale and bias initializers (inputs 1 and 2) of every LayerNormalization node.

    LayerNorm's gradient always computes these (per channel), even when they do not train;
    left as constants, ORT's graph optimisations may merge equal ones (every LayerNorm of a
    freshly initialised model has scale 1, bias 0) and the gradient graph then defines
    `<name>_grad` twice. Carried as frozen parameters they stay separate graph inputs.
    """
    return _initializer_inputs(model, "LayerNormalization", 1, 3)


def _initializer_inputs(model: onnx.ModelProto, op_type: str, start: int,
                        stop: int) -> list[str]:
    """Initializers at inputs [start, stop) of every `op_type` node, each once, in order."""
    inits = {i.name for i in model.graph.initializer}
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type != op_type:
            continue
        for name in node.input[start:stop]:
            if name in inits and name not in found:
                found.append(name)
    return found


def _ancestors(model: onnx.ModelProto, outputs: list[str]) -> set[str]:
    """All tensor names that `outputs` depend on (top-level graph)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is not None:
            stack.extend(i for i in node.input if i)
    return seen


def default_trainable(model: onnx.ModelProto, task_outputs: list[str]) -> list[str]:
    """Float initializers that act as weights of the task network.

    Kept: float32, rank >= 1 (scalars are constants like `x / 255`, and rank-0 trainables
    break ORT's gradient building), consumed at a weight slot by some node, and upstream of a
    task output. The last rule excludes cost-model constants (per-channel FLOP coefficients)
    that only feed the cost output: training them would let the optimizer "reduce" cost by
    shrinking the coefficients. BN running stats and our own rewrite constants are excluded.
    """
    stats = set(batchnorm_running_stats(model))
    needed = _ancestors(model, task_outputs)
    weight_uses: set[str] = set()
    for node in model.graph.node:
        for idx, name in enumerate(node.input):
            if (node.op_type, idx) not in _SETTING_SLOTS:
                weight_uses.add(name)
    return [
        init.name
        for init in model.graph.initializer
        if init.data_type == onnx.TensorProto.FLOAT
        and len(init.dims) >= 1
        and init.name not in stats
        and init.name in weight_uses
        and init.name in needed
        and not init.name.startswith(CONST_PREFIX)
    ]
