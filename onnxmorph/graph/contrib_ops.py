"""onnxruntime's fused transformer ops (domain com.microsoft), as its transformer optimizer
writes them: output shapes (ONNX shape inference does not know them), MACs and parameters.

Attention reads [B, T, E_in] with a packed weight [E_in, 3·H·D] (q | k | v columns), a bias
[3·H·D] and `num_heads`, and writes the heads' context [B, T, H·D] (the output projection is
an ordinary MatMul after it). MultiHeadAttention reads Q, K, V already projected ([B, T, H·D]
each, packed bias [3·H·D]) and writes the same context. BiasGelu / FastGelu add a
per-channel bias and apply GELU; SkipLayerNormalization is LayerNorm(x + skip + bias);
EmbedLayerNormalization is the word, position and segment lookup plus LayerNorm. Other
com.microsoft ops stay unknown.
"""

from __future__ import annotations

import onnx

from onnxmorph.graph.onnx_utils import get_attribute

CONTRIB = "com.microsoft"
_SAME_AS_INPUT = ("BiasGelu", "FastGelu", "Gelu", "QuickGelu", "SkipLayerNormalization",
                  "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization")
# MACs each op is counted with: these add, normalise or look up, nothing multiplies-adds.
_ZERO_MACS = _SAME_AS_INPUT + ("EmbedLayerNormalization",)


# The com.microsoft ops onnxruntime-training builds a gradient for (its gradient builder
# registry): the GELU fusions and the LayerNorms without a skip input. Attention (packed QKV
# weight), MultiHeadAttention, SkipLayerNormalization and EmbedLayerNormalization have none.
TRAINABLE_CONTRIB = ("Gelu", "BiasGelu", "FastGelu", "QuickGelu", "LayerNormalization",
                     "SimplifiedLayerNormalization")
_WHAT = {"Attention": "fused attention with a packed QKV weight",
         "MultiHeadAttention": "fused multi-head attention",
         "SkipLayerNormalization": "fused residual add and LayerNorm",
         "EmbedLayerNormalization": "fused embedding lookup and LayerNorm"}


def untrainable_contrib_message(model: onnx.ModelProto) -> str | None:
    """One line naming the com.microsoft nodes onnxruntime-training cannot differentiate and
    what to do instead, or None if there are none."""
    nodes = [n for n in model.graph.node if is_contrib(n) and n.op_type not in TRAINABLE_CONTRIB]
    if not nodes:
        return None
    first = nodes[0]
    others = sorted({n.op_type for n in nodes[1:]} - {first.op_type})
    listed = "".join(f", {op}" for op in others)
    return ("this model cannot be trained (gates, gdp, regularizers, taylor, fine-tuning): "
            f"onnxruntime-training has no gradient for com.microsoft {first.op_type} "
            f"'{first.name or first.output[0]}' ({_WHAT.get(first.op_type, 'a contrib op')})"
            f"{listed} ({len(nodes)} nodes); prune it without --data (--method l1, uniform or "
            "fpgm), or export it before onnxruntime's transformer optimizer fuses it")


def is_contrib(node: onnx.NodeProto) -> bool:
    return node.domain == CONTRIB


def contrib_output_shapes(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]],
                          types: dict[str, int]) -> list[tuple[str, tuple[int, ...], int]]:
    """(output name, static shape, element type) of the outputs of a com.microsoft `node`
    that its known input shapes determine; [] when they do not (yet)."""
    if not is_contrib(node) or not node.input or node.input[0] not in shapes:
        return []
    x, dtype = shapes[node.input[0]], types.get(node.input[0], onnx.TensorProto.FLOAT)
    if node.op_type in _SAME_AS_INPUT:
        return [(node.output[0], x, dtype)] + (
            [(node.output[3], x, dtype)] if len(node.output) > 3 and node.output[3] else [])
    if node.op_type == "Attention":
        hidden = attention_hidden(node, shapes)
        return [] if hidden is None else [(node.output[0], (*x[:-1], hidden), dtype)]
    if node.op_type == "MultiHeadAttention" and len(node.input) > 2 \
            and len(shapes.get(node.input[2], ())) == 3:
        return [(node.output[0], (*x[:-1], shapes[node.input[2]][-1]), dtype)]
    if node.op_type == "EmbedLayerNormalization" and len(node.input) > 2 \
            and node.input[2] in shapes:
        embed = shapes[node.input[2]][-1]
        dtype = types.get(node.input[2], onnx.TensorProto.FLOAT)
        found = [(node.output[0], (*x, embed), dtype)]
        if len(node.output) > 1 and node.output[1]:
            found.append((node.output[1], (x[0],), onnx.TensorProto.INT32))
        if len(node.output) > 2 and node.output[2]:
            found.append((node.output[2], (*x, embed), dtype))
        return found
    return []


def set_contrib_shapes(model: onnx.ModelProto, inferred: onnx.ModelProto) -> bool:
    """Write into `model`'s value_info the outputs of com.microsoft nodes whose inputs
    `inferred` knows; True if any is new (then inference runs again to go past them)."""
    infos = list(inferred.graph.input) + list(inferred.graph.value_info) + \
        list(inferred.graph.output)
    shapes, types = {}, {}
    for info in infos:
        tensor = info.type.tensor_type
        types[info.name] = tensor.elem_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[info.name] = tuple(d.dim_value for d in tensor.shape.dim)
    for init in inferred.graph.initializer:
        shapes[init.name], types[init.name] = tuple(init.dims), init.data_type
    written = {info.name: info for info in model.graph.value_info}
    added = False
    for node in model.graph.node:
        for name, shape, dtype in contrib_output_shapes(node, shapes, types):
            if name in shapes:
                continue
            info = onnx.helper.make_tensor_value_info(name, dtype, list(shape))
            if name in written:
                written[name].CopyFrom(info)
            else:
                model.graph.value_info.append(info)
            added = True
    return added


def attention_hidden(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """Width H·D of Attention's output (its value part of the packed weight)."""
    sizes = get_attribute(node, "qkv_hidden_sizes")
    if sizes:
        return int(sizes[2])
    weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
    return None if weight is None or weight[-1] % 3 else weight[-1] // 3


def contrib_cost(builder, node: onnx.NodeProto) -> bool:
    """Add the MACs and the parameters (weights that shrink with the heads) of a com.microsoft
    node to `builder`; False for an op without a rule here (it is then uncounted)."""
    if not is_contrib(node):
        return False
    name = node.name or node.output[0]
    out = node.output[0]
    out_shape = builder.loaded.shapes.get(out)
    if node.op_type in _ZERO_MACS:
        builder.add("macs", name, 0.0, builder.constant_form())
        if node.op_type in ("BiasGelu", "FastGelu") and len(node.input) > 1 and out_shape:
            _per_output_channel(builder, node.input[1], name, out, out_shape, 1.0)
        return True
    if node.op_type == "MultiHeadAttention" and out_shape is not None:
        keys = builder.loaded.shapes.get(node.input[1]) if len(node.input) > 1 else None
        if keys is None or len(keys) != 3:
            return False
        # Q, K and V come projected: per alive channel its share of QKᵀ and AV.
        builder.add("macs", name, 2 * out_shape[0] * out_shape[1] * keys[1],
                    builder.form(out, out_shape[-1]))
        if len(node.input) > 3 and node.input[3]:
            _per_output_channel(builder, node.input[3], name, out, out_shape, 3.0)
        return True
    if node.op_type != "Attention" or out_shape is None:
        return False
    x_shape = builder.loaded.shapes.get(node.input[0])
    if x_shape is None or get_attribute(node, "qkv_hidden_sizes"):  # unequal q, k, v
        return False
    tokens, embed_in = x_shape[-2], x_shape[-1]
    positions = out_shape[0] * tokens  # B·T
    channels = out_shape[-1]
    # Per alive output channel (one of a head's D): its q, k and v columns of the projection
    # (3·E_in each position), and its share of QKᵀ and AV (T each position).
    builder.add("macs", name, positions * (3 * embed_in + 2 * tokens),
                builder.form(out, channels))
    _per_output_channel(builder, node.input[1], name, out, out_shape, 3.0 * embed_in)
    if len(node.input) > 2 and node.input[2]:
        _per_output_channel(builder, node.input[2], name, out, out_shape, 3.0)
    return True


def _per_output_channel(builder, constant: str, layer: str, out: str,
                        out_shape: tuple[int, ...], coef: float) -> None:
    if constant not in builder.values or constant in builder.counted:
        return
    builder.counted.add(constant)
    builder.add("params", layer, coef, builder.form(out, out_shape[-1]))
