"""`analyze`: load a model, find its channel groups and cost, and describe them."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx

from onnxmorph.graph.channels import ChannelAnalysis, ChannelGroup, find_channel_groups
from onnxmorph.graph.cost import CostModel, build_cost_model
from onnxmorph.graph.load import LoadedModel, load_model
from onnxmorph.graph.op_costs import Uncounted, check_counted


@dataclass
class Analysis:
    """Everything the later stages need: the loaded model, its channel groups and its cost."""

    loaded: LoadedModel
    channels: ChannelAnalysis
    cost: CostModel

    @property
    def groups(self) -> list[ChannelGroup]:
        return self.channels.groups

    @property
    def macs(self) -> float:
        return self.cost.macs()

    @property
    def params(self) -> float:
        return self.cost.params()

    @property
    def uncounted(self) -> list[Uncounted]:
        """Nodes whose MACs are not in `macs` (only with allow_uncounted)."""
        return self.cost.uncounted

    def all_alive(self) -> np.ndarray:
        return np.ones(self.channels.num_units)

    def group_dependent(self, group: ChannelGroup, target: str = "flops") -> float:
        """Cost that disappears if every channel of `group` is removed."""
        expr = self.cost.expr(target)
        alive = self.all_alive()
        alive[group.units] = 0.0
        return expr() - expr(alive)

    def to_dict(self) -> dict:
        return {
            "model": self.loaded.source,
            "input_shapes": {k: list(v) for k, v in self.loaded.input_shapes.items()},
            "macs": int(round(self.macs)),
            "params": int(round(self.params)),
            "uncounted": [u.to_dict() for u in self.uncounted],
            "groups": [
                {
                    "id": g.id,
                    "channels": g.channels,
                    "prunable": g.prunable,
                    "reason": g.reason,
                    "layers": list(g.layers),
                    "tensors": list(g.tensors),
                    "macs": int(round(self.group_dependent(g, "flops"))),
                    "params": int(round(self.group_dependent(g, "params"))),
                }
                for g in self.groups
            ],
        }


def analyze(
    model: str | os.PathLike | onnx.ModelProto | LoadedModel,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    allow_uncounted: bool = False,
    prune_embedding: bool = False,
) -> Analysis:
    """Analyse a seed model: `onnxmorph.analyze("model.onnx").macs`.

    A node whose MACs cannot be known raises UncountedCostError, unless `allow_uncounted`:
    then it is listed in `Analysis.uncounted` and left out of `macs`. `prune_embedding`
    makes the embedding dimension one group (see graph/handlers/spatial.py); off, every
    LayerNorm keeps the channels it normalises.
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model, input_shapes)
    channels = find_channel_groups(loaded, prune_embedding)
    cost = build_cost_model(loaded, channels)
    check_counted(cost.uncounted, allow_uncounted)
    return Analysis(loaded=loaded, channels=channels, cost=cost)
