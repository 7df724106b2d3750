"""Structure JSON (channel counts per layer, kept indices) and the before/after cost report."""

from __future__ import annotations

import numpy as np

from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.layers import weight_layer_ops
from onnxmorph.transformer_structure import transformer_structure

_LAYER_OPS = weight_layer_ops()


def structure(analysis: Analysis, alive: np.ndarray) -> dict:
    """Per layer with output channels: counts before/after and kept indices.

    `alive_channels` per layer is what morph-net's StructureExporter writes; `kept` extends it
    so the structure can be re-applied to the seed.
    """
    layers = {}
    for node in analysis.loaded.model.graph.node:
        if node.op_type not in _LAYER_OPS:
            continue
        layout = analysis.channels.layouts.get(node.output[0])
        if layout is None:
            continue
        mask = alive[layout.ids].ravel()
        layers[node.name or node.output[0]] = {
            "op": node.op_type,
            "output": node.output[0],
            "channels_before": int(mask.size),
            "channels_after": int(mask.sum()),
            "kept": np.flatnonzero(mask).tolist(),
        }
    groups = [
        {"id": g.id, "channels_before": g.channels, "channels_after": int(alive[g.units].sum()),
         "prunable": g.prunable, "layers": list(g.layers)}
        for g in analysis.groups
    ]
    result = {"format": "onnxmorph-structure", "version": 1, "layers": layers, "groups": groups}
    transformer = transformer_structure(analysis, alive)
    if transformer is not None:  # heads per attention layer, MLP widths, embedding width
        result["transformer"] = transformer
    return result


def cost_report(analysis: Analysis, alive: np.ndarray) -> dict:
    """Seed and pruned MACs/params and their ratios."""
    weights = alive.astype(np.float64)
    seed = {"macs": analysis.cost.macs(), "params": analysis.cost.params()}
    pruned = {"macs": analysis.cost.macs(weights), "params": analysis.cost.params(weights)}
    return {
        "seed": {k: int(round(v)) for k, v in seed.items()},
        "pruned": {k: int(round(v)) for k, v in pruned.items()},
        "ratio": {k: (pruned[k] / seed[k] if seed[k] else 1.0) for k in seed},
    }
