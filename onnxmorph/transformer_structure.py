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
from onnxmorph.graph.contrib_ops import is_contrib
from onnxmorph.graph.layers import weight_layout
from onnxmorph.graph.onnx_utils import get_attribute, is_default_domain

_FUSED_ATTENTION = ("Attention", "MultiHeadAttention")
_NONLINEAR = ("Gelu", "Erf", "Relu", "Sigmoid", "Tanh", "BiasGelu", "FastGelu", "QuickGelu",
              "HardSigmoid", "HardSwish", "Mish", "Softplus", "Elu", "Selu", "LeakyRelu")


def transformer_structure(analysis: Analysis, alive: np.ndarray) -> dict | None:
    """{"attention": [...], "mlp": [...], "embedding": {...} or None (and "embedding_stages"
    when several stages have widths of their own)}, or None without attention layers."""
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
    embeddings = embedding_groups(analysis)
    consumers: dict[str, list[str]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    mlp, seen = [], set(head_groups) | {g.id for g in embeddings}
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
    widths = [{"channels_before": g.channels, "channels_after": int(alive[g.units].sum()),
               "group": g.id} for g in embeddings]
    section = {"attention": attention, "mlp": mlp,
               "embedding": widths[0] if len(widths) == 1 else None}
    if len(widths) > 1:
        section["embedding_stages"] = widths  # Swin: one width per stage
    return section


def embedding_groups(analysis: Analysis) -> list:
    """The groups of the residual stream when --prune-embedding made it prunable (what the
    LayerNorms normalise; one per stage of a hierarchical model such as Swin), in graph
    order; [] without the option."""
    if not analysis.channels.prune_embedding:
        return []
    layouts, unit_group = analysis.channels.layouts, analysis.channels.unit_group
    found: list[int] = []
    for node in analysis.loaded.model.graph.node:
        layout = layouts.get(node.input[0]) if node.input else None
        # LayerNormalization, or a decomposed one's ReduceMean (channels in, none out).
        if layout is not None and (node.op_type == "LayerNormalization" or (
                node.op_type == "ReduceMean" and node.output[0] not in layouts)):
            found += [g for g in np.unique(unit_group[layout.ids]).tolist() if g not in found]
    return [analysis.groups[g] for g in found]


def _head_rows(node, layouts, initializers) -> np.ndarray | None:
    """Unit ids [H, D] of an attention layer's heads, or None if `node` is not one."""
    if is_contrib(node) and node.op_type in _FUSED_ATTENTION:
        layout = layouts.get(node.output[0])
        heads = get_attribute(node, "num_heads", 0)
        if layout is None or heads <= 0 or layout.size % heads:
            return None
        return layout.ids.reshape(heads, -1)
    if node.op_type != "MatMul" or not is_default_domain(node) or any(
            name in initializers for name in node.input):
        return None
    out, scores = layouts.get(node.output[0]), layouts.get(node.input[0])
    # AV: the scores [B, H, T, T] carry only the head axis, the context [B, H, T, D] heads × D.
    if out is None or scores is None or len(scores.axes) != 1 or len(out.axes) != 2:
        return None
    return out.ids
