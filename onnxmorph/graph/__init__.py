"""Import an ONNX seed network, find its channel groups and compute its cost.

The data flow is one straight line: `load_model` (file → normalised ModelProto with static
shapes) → `find_channel_groups` (which channels must be removed together) → `build_cost_model`
(MACs and params as functions of alive channels). `analyze` runs all three.
"""

from onnxmorph.graph.analysis import Analysis, analyze
from onnxmorph.graph.channels import ChannelAnalysis, ChannelGroup, Layout, find_channel_groups
from onnxmorph.graph.cost import CostExpr, CostModel, build_cost_model
from onnxmorph.graph.load import LoadedModel, load_model, parse_input_shapes

__all__ = [
    "Analysis",
    "ChannelAnalysis",
    "ChannelGroup",
    "CostExpr",
    "CostModel",
    "Layout",
    "LoadedModel",
    "analyze",
    "build_cost_model",
    "find_channel_groups",
    "load_model",
    "parse_input_shapes",
]
