"""First-order Taylor importance (Molchanov et al. 2017/2019), with ONNX Runtime training.

Removing a channel changes the loss by about −Σ activation × ∂L/∂activation over the places
it is consumed. A probe copy of the seed multiplies every tensor a layer consumes by a
per-channel vector of ones, the only trainable parameter; ORT's gradient of that vector is
exactly Σ_{batch, positions} a·∂L/∂a per channel. A unit's score is |Σ of its channels'
gradients| (a residual unit sums over every layer that reads it, since removing it removes it
everywhere), averaged over the calibration batches.

The loss is cross-entropy with integer labels, MSE with float targets, and without labels
cross-entropy against the seed's own top-1 predictions: distillation from the seed has a zero
gradient at the seed itself, so it cannot rank anything. BatchNormalization is folded into
per-channel constants in the probe, so the gradients are those of the inference-mode model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.channels import mask_shape
from onnxmorph.graph.onnx_utils import get_attribute
from onnxmorph.methods.calibration import calibration_batches, touches_prunable
from onnxmorph.methods.registry import MethodInput, UnitScores, register_criterion

PROBE_PREFIX = "onnxmorph_taylor"
_CONSUMERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@register_criterion("taylor", summary="first-order Taylor: |activation × gradient| per "
                                      "channel on --data (ORT training)", needs_data=True)
def taylor_scores(request: MethodInput) -> UnitScores:
    from onnxmorph.training.artifacts import build_training_artifacts
    from onnxmorph.training.parameters import batchnorm_running_stats, layer_norm_parameters
    from onnxmorph.training.session import TrainingSession
    from onnxmorph.training.trainer import choose_loss, output_name, work_folder

    analysis = request.analysis
    batches = calibration_batches(request)
    probe, multipliers = taylor_probe(analysis)
    loss = choose_loss(request.training.get("loss", "auto"), batches[0])
    if loss == "ce+distill":  # a gradient criterion: the labels' cross-entropy is enough
        loss = "cross-entropy"
    pseudo_labels = loss == "distill"
    seed_session = _seed_session(analysis) if pseudo_labels else None
    layouts = analysis.channels.layouts
    classes = analysis.loaded.shapes[output_name(probe)][1]
    scores = np.zeros(analysis.channels.num_units)
    with work_folder(request.training.get("workdir")) as folder:
        # Cross-entropy is trained as distillation from one-hot "teacher logits": the same
        # loss and gradient, without ORT 1.19.2's SoftmaxCrossEntropyLoss gradient, which
        # fails on graphs without BatchNormalization ("i < node_->OutputDefs().size()").
        paths = build_training_artifacts(
            probe, f"{folder}/taylor", trainable=list(multipliers.values()),
            frozen=batchnorm_running_stats(probe) + layer_norm_parameters(probe),
            loss="mse" if loss == "mse" else "distill", output_name=output_name(probe),
            cost_output=None, optimizer="sgd")
        session = TrainingSession(paths, learning_rate=0.0)  # gradients only, no updates
        for batch in batches:
            if loss == "mse":
                target = batch.labels
            else:
                labels = (np.argmax(seed_session.run(None, batch.inputs)[0], axis=1)
                          if pseudo_labels else batch.labels)
                target = one_hot_logits(labels, classes)
            session.train_step(batch.inputs, target)
            per_unit = np.zeros(analysis.channels.num_units)
            for tensor, parameter in multipliers.items():
                np.add.at(per_unit, layouts[tensor].ids.ravel(),
                          session.gradient(parameter).astype(np.float64).ravel())
            scores += np.abs(per_unit)
    notes = {"calibration_batches": len(batches),
             "taylor_loss": "cross-entropy on the seed's top-1" if pseudo_labels else loss}
    return UnitScores(scores / len(batches), notes)


def one_hot_logits(labels: np.ndarray, classes: int) -> np.ndarray:
    """Logits whose softmax is the one-hot of `labels` (class axis 1) in float32."""
    labels = np.asarray(labels, dtype=np.int64)
    logits = np.full((labels.shape[0], classes, *labels.shape[1:]), -1e4, np.float32)
    np.put_along_axis(logits, labels[:, None], 0.0, axis=1)
    return logits


def taylor_probe(analysis: Analysis) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The seed with a ones multiplier on every consumed prunable tensor; returns the probe
    and, per multiplied tensor, the name of its multiplier parameter."""
    probe = onnx.ModelProto()
    probe.CopyFrom(analysis.loaded.model)
    graph = probe.graph
    _fold_batchnorms(graph, analysis)
    _untie_frozen_weights(graph)
    layouts, shapes = analysis.channels.layouts, analysis.loaded.shapes
    inits = {i.name for i in graph.initializer}
    multipliers: dict[str, str] = {}
    inserted: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        tensor = node.input[0] if node.input else ""
        if node.op_type not in _CONSUMERS or tensor not in layouts or tensor in inits:
            continue
        if tensor not in multipliers:
            if not touches_prunable(analysis, layouts[tensor]):
                continue
            index = len(multipliers)
            name = f"{PROBE_PREFIX}/multiplier_{index}"
            ones = np.ones(mask_shape(layouts[tensor], len(shapes[tensor])), np.float32)
            graph.initializer.append(numpy_helper.from_array(ones, name))
            multiplied = f"{PROBE_PREFIX}/multiplied_{index}"
            inserted[tensor] = helper.make_node("Mul", [tensor, name], [multiplied],
                                                name=f"{PROBE_PREFIX}/mul_{index}")
            multipliers[tensor] = name
        node.input[0] = inserted[tensor].output[0]
    _place_after_producers(graph, inserted)
    return probe, multipliers


def _fold_batchnorms(graph: onnx.GraphProto, analysis: Analysis) -> None:
    """Inference-mode BatchNormalization → Mul and Add by per-channel constants, so the
    gradients are the deployed model's (ORT would train BN with the batch's statistics)."""
    constants = analysis.loaded.initializers
    nodes = []
    for index, node in enumerate(graph.node):
        names = list(node.input[1:5])
        if (node.op_type != "BatchNormalization" or len(node.output) != 1 or len(names) != 4
                or not all(n in constants for n in names)):
            nodes.append(node)
            continue
        gamma, beta, mean, var = (constants[n].astype(np.float64) for n in names)
        scale = gamma / np.sqrt(var + float(get_attribute(node, "epsilon", 1e-5)))
        shape = (-1,) + (1,) * (len(analysis.loaded.shapes[node.input[0]]) - 2)
        prefix = f"{PROBE_PREFIX}/bn_{index}"
        graph.initializer.extend([
            numpy_helper.from_array(scale.reshape(shape).astype(np.float32), f"{prefix}/scale"),
            numpy_helper.from_array((beta - mean * scale).reshape(shape).astype(np.float32),
                                    f"{prefix}/shift")])
        nodes.append(helper.make_node("Mul", [node.input[0], f"{prefix}/scale"],
                                      [f"{prefix}/scaled"], name=f"{prefix}/mul"))
        nodes.append(helper.make_node("Add", [f"{prefix}/scaled", f"{prefix}/shift"],
                                      [node.output[0]], name=f"{prefix}/add"))
    del graph.node[:]
    graph.node.extend(nodes)


def _untie_frozen_weights(graph: onnx.GraphProto) -> None:
    """Give every node after the first its own copy of an initializer it shares.

    ORT names a gradient `<input>_grad` whether the input trains or not, so two
    LayerNormalizations reading one frozen scale (the dynamo exporter merges equal-valued
    weights, e.g. every LayerNorm of a freshly initialised ViT) define it twice and building
    the probe's gradient graph fails. Nothing but the multipliers trains here, so copies are
    exact."""
    inits = {i.name: i for i in graph.initializer}
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                copy = f"{PROBE_PREFIX}/untied_{index}_{slot}"
                graph.initializer.append(numpy_helper.from_array(
                    numpy_helper.to_array(inits[name]), copy))
                node.input[slot] = copy
            seen.add(name)


def _place_after_producers(graph: onnx.GraphProto, inserted: dict[str, onnx.NodeProto]) -> None:
    ordered = [inserted[i.name] for i in graph.input if i.name in inserted]
    for node in graph.node:
        ordered.append(node)
        ordered.extend(inserted[out] for out in node.output if out in inserted)
    del graph.node[:]
    graph.node.extend(ordered)


def _seed_session(analysis: Analysis):
    from onnxmorph.training.evaluate import inference_session

    return inference_session(analysis.loaded.model)
