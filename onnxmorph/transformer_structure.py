"""The transformer part of a structure: heads kept per attention layer, MLP widths per block
and the embedding width (residual stream), read from the channel analysis.

An attention layer is the MatMul of the scores with V (its output [B, H, T, D] carries the
heads as rows of its layout, one unit each) or onnxruntime's fused Attention /
MultiHeadAttention (num_heads heads of D channels on the output). An MLP block is a group of
single-channel units made by a Linear whose channels pass a nonlinearity (GELU, ReLU, ...)
before the next Linear: the hidden units. A model without attention has no such section.
"""

from __future__ import annotations

import numpy as np

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.layers import weight_layout

_FUSED_ATTENTION = ("Attention", "MultiHeadAttention")
_NONLINEAR = ("Gelu", "Erf", "Relu", "Sigmoid", "Tanh", "BiasGelu", "FastGelu", "QuickGelu",
              "HardSigmoid", "HardSwish", "Mish", "Softplus", "Elu", "Selu", "LeakyRelu")


def transformer_structure(analysis: Analysis, alive: np.ndarray) -> dict | None:
    """{"attention": [...], "mlp": [...], "embedding": {...} or None}, or None without
    attention layers."""
    layouts, unit_group = analysis.channels.layouts, analysis.channels.unit_group
    nodes = analysis.loaded.model.graph.node
    attention, head_groups = [], set()
    for node in nodes:
        rows = _head_rows(node, layouts, analysis.loaded.initializers)
        if rows is None:
            continue
        head_groups.update(np.unique(unit_group[rows]).tolist())
        attention.append({"name": node.name or node.output[0], "op": node.op_type,
                          "heads_before": int(rows.shape[0]),
                          "heads_after": int(alive[rows[:, 0]].sum()),
                          "head_dim": int(rows.shape[1])})
    if not attention:
        return None
    embedding = embedding_group(analysis)
    consumers: dict[str, list[str]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    mlp, seen = [], set(head_groups) | ({embedding.id} if embedding is not None else set())
    for node in nodes:
        if weight_layout(node, analysis.loaded.initializers) is None:
            continue
        layout = layouts.get(node.output[0])
        if layout is None or len(layout.axes) != 1:
            continue
        groups = np.unique(unit_group[layout.ids]).tolist()
        if len(groups) != 1 or groups[0] in seen or np.unique(layout.ids).size != layout.size:
            continue
        group = analysis.groups[groups[0]]
        if not any(op in _NONLINEAR for t in group.tensors for op in consumers.get(t, ())):
            continue
        seen.add(group.id)
        mlp.append({"name": node.name or node.output[0], "units_before": group.channels,
                    "units_after": int(alive[group.units].sum()), "group": group.id})
    return {"attention": attention, "mlp": mlp, "embedding": None if embedding is None else {
        "channels_before": embedding.channels,
        "channels_after": int(alive[embedding.units].sum()), "group": embedding.id}}


def embedding_group(analysis: Analysis):
    """The group of the residual stream when --prune-embedding made it one (the input of
    every LayerNormalization in one group), else None."""
    if not getattr(analysis.channels, "prune_embedding", False):
        return None
    layouts, unit_group = analysis.channels.layouts, analysis.channels.unit_group
    found = set()
    for node in analysis.loaded.model.graph.node:
        if node.op_type == "LayerNormalization" and node.input[0] in layouts:
            found.update(np.unique(unit_group[layouts[node.input[0]].ids]).tolist())
    return analysis.groups[found.pop()] if len(found) == 1 else None


def _head_rows(node, layouts, initializers) -> np.ndarray | None:
    """Unit ids [H, D] of an attention layer's heads, or None if `node` is not one."""
    if node.domain == "com.microsoft" and node.op_type in _FUSED_ATTENTION:
        layout = layouts.get(node.output[0])
        heads = next((a.i for a in node.attribute if a.name == "num_heads"), 0)
        if layout is None or heads <= 0 or layout.size % heads:
            return None
        return layout.ids.reshape(heads, -1)
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or any(
            name in initializers for name in node.input):
        return None
    out, scores = layouts.get(node.output[0]), layouts.get(node.input[0])
    # AV: the scores [B, H, T, T] carry only the head axis, the context [B, H, T, D] heads × D.
    if out is None or scores is None or len(scores.axes) != 1 or len(out.axes) != 2:
        return None
    return out.ids
