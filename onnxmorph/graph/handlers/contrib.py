"""onnxruntime's fused transformer ops (com.microsoft, see graph/contrib_ops.py).

Attention's output [B, T, H·D] is the heads' context: H new units of D channels each, whose
removal slices the q, k and v columns of the packed weight and bias and lowers num_heads;
MultiHeadAttention ties head h of its separately projected Q, K and V into one unit.
BiasGelu and FastGelu keep the channels (their bias is sliced with them). The LayerNorm
fusions and the embedding lookup mix or make the residual stream: boundaries, with reasons.
"""

from __future__ import annotations

import numpy as np

from onnxmorph.graph.contrib_ops import CONTRIB, attention_hidden
from onnxmorph.graph.handlers.base import Coupling, Fresh, NodeContext, register


@register("Attention", domain=CONTRIB)
def attention(ctx: NodeContext) -> Coupling:
    layout, out = ctx.in_layouts[0], ctx.out_shapes[0]
    heads = int(ctx.attr("num_heads", 0))
    shapes = {n: s for n, s in zip(ctx.node.input, ctx.in_shapes) if s is not None}
    hidden = attention_hidden(ctx.node, shapes)
    if out is None or heads <= 0 or hidden is None or hidden % heads or ctx.attr(
            "qkv_hidden_sizes") or len(ctx.node.input) > 4 and any(ctx.node.input[4:]):
        return ctx.boundary(f"com.microsoft Attention '{ctx.name}' has a layout onnxmorph "
                            "does not slice (qkv_hidden_sizes, past state or bias inputs)")
    reason = (f"com.microsoft Attention '{ctx.name}' reads all of its input channels "
              "(the packed QKV weight's rows are not pruned)")
    pins = [(layout.ids, reason)] if layout is not None else []
    return Coupling(outputs=[Fresh(axis=len(out) - 1, count=heads, repeat=hidden // heads)]
                    + [None] * (len(ctx.out_shapes) - 1), pins=pins)


@register("MultiHeadAttention", domain=CONTRIB)
def multi_head_attention(ctx: NodeContext) -> Coupling:
    """Q, K, V projected apart ([B, T, H·D]): head h of each is one unit, the output's too."""
    heads = int(ctx.attr("num_heads", 0))
    parts = ctx.in_layouts[:3]
    shapes = ctx.in_shapes[:3]
    if heads <= 0 or len(parts) < 3 or any(
            layout is None or shape is None or len(shape) != 3
            or layout.axes != (2,) or layout.size != parts[0].size
            for layout, shape in zip(parts, shapes)) \
            or parts[0].size % heads or any(ctx.node.input[5:]):
        return ctx.boundary(f"com.microsoft MultiHeadAttention '{ctx.name}' has a layout "
                            "onnxmorph does not slice (packed or cached K/V, unequal widths)")
    per_head = [layout.ids.reshape(heads, -1) for layout in parts]
    first = per_head[0][:, :1]
    unify = [(np.repeat(first, ids.shape[1], axis=1), ids) for ids in per_head]
    return Coupling(outputs=[parts[2]] + [None] * (len(ctx.out_shapes) - 1), unify=unify)


@register("BiasGelu", "FastGelu", "Gelu", "QuickGelu", domain=CONTRIB)
def gelu(ctx: NodeContext) -> Coupling:
    layout, shape = ctx.in_layouts[0], ctx.in_shapes[0]
    if layout is None or shape is None or layout.axes != (len(shape) - 1,):
        return ctx.boundary(f"com.microsoft {ctx.node.op_type} '{ctx.name}' has channels off "
                            "its last axis")
    return ctx.passthrough()


@register("SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
          "SimplifiedLayerNormalization", "EmbedLayerNormalization", domain=CONTRIB)
def normalisation(ctx: NodeContext) -> Coupling:
    """LayerNorm over the channels (of x + skip, or of the embeddings): they stay, on the
    last axis, so the Linear layers after it still make prunable units."""
    reason = f"com.microsoft {ctx.node.op_type} '{ctx.name}' normalises across channels"
    pins = [(layout.ids, reason) for layout in ctx.in_layouts if layout is not None]
    # The normalised output, and the sum before normalising (Skip…'s output 3, Embed…'s 2);
    # the others are statistics or the mask index.
    embedding = ctx.node.op_type == "EmbedLayerNormalization"
    carrying = (0, 2) if embedding else (0, 3)
    outputs = [Fresh(axis=len(shape) - 1, count=shape[-1], pinned=reason)
               if shape and index in carrying else None
               for index, shape in enumerate(ctx.out_shapes)]
    return Coupling(outputs=outputs, pins=pins)
