"""Rewrites of the differentiable-ops table that need static sizes or constant inputs.

Each function receives the `_Emitter` of one node and returns False (node left as it is) when
the size it needs is dynamic or a setting is not a constant; the node is then reported by
`non_differentiable_nodes` before training starts. Index maps (Pad, Resize) become Gathers,
window reductions (LRN, ReduceMax) become Conv/MaxPool: all ops with CPU gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxmorph.graph.onnx_utils import get_attribute


def _text(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _axes(e, attribute_until: int) -> list[int] | None:
    """Reduction axes: an attribute before opset `attribute_until`, input 1 from then on."""
    if e.opset < attribute_until:
        axes = get_attribute(e.node, "axes")
        return None if axes is None else list(axes)
    value = e.constant_input(1)
    return None if value is None else [int(a) for a in value.reshape(-1)]


def _reduce(e, op_type: str, x: str, axes: list[int], keepdims: int, out=None) -> str:
    input_axes_from = 13 if op_type == "ReduceSum" else 18
    if e.opset >= input_axes_from:
        return e.op(op_type, [x, e.tensor(np.array(axes, np.int64), "axes")], out,
                    keepdims=keepdims)
    return e.op(op_type, [x], out, axes=axes, keepdims=keepdims)


def _reduced_axes(e, shape: tuple[int, ...], attribute_until: int) -> list[int] | None:
    axes = _axes(e, attribute_until)
    if axes is None or not axes:
        if axes is not None and get_attribute(e.node, "noop_with_empty_axes", 0):
            return None  # an identity; rare enough to leave to the report
        return list(range(len(shape)))
    return sorted(a % len(shape) for a in axes)


def _max_over_axes(e, x: str, shape: tuple[int, ...], axes: list[int], out: str,
                   keepdims: bool) -> None:
    """Max over `axes` as one MaxPool: move them last, flatten to [rest, 1, 1, R]."""
    kept = [a for a in range(len(shape)) if a not in axes]
    moved = e.op("Transpose", [x], perm=kept + axes)
    size = int(np.prod([shape[a] for a in axes]))
    rest = int(np.prod([shape[a] for a in kept])) if kept else 1
    flat = e.op("Reshape", [moved, e.tensor(np.array([rest, 1, 1, size], np.int64), "flat")])
    pooled = e.op("MaxPool", [flat], kernel_shape=[1, size])
    final = [1 if a in axes else shape[a] for a in range(len(shape))] if keepdims else \
        [shape[a] for a in kept]
    e.op("Reshape", [pooled, e.tensor(np.array(final, np.int64), "out_shape")], out)


def _global_max_pool(e) -> bool:
    shape = e.static_shape(e.node.input[0])
    if shape is None:
        return False
    _max_over_axes(e, e.node.input[0], shape, list(range(2, len(shape))), e.node.output[0],
                   keepdims=True)
    return True


def _reduction(e) -> tuple[tuple[int, ...], list[int], int] | None:
    """(input shape, reduced axes, keepdims) of a Reduce* node, None when not static."""
    shape = e.static_shape(e.node.input[0])
    axes = _reduced_axes(e, shape, 18) if shape is not None else None
    if axes is None:
        return None
    return shape, axes, int(get_attribute(e.node, "keepdims", 1))


def _reduce_max(e) -> bool:
    found = _reduction(e)
    if found is not None:
        shape, axes, keepdims = found
        _max_over_axes(e, e.node.input[0], shape, axes, e.node.output[0], bool(keepdims))
    return found is not None


def _reduce_sum_square(e) -> bool:
    found = _reduction(e)
    if found is not None:
        x, (_, axes, keepdims) = e.node.input[0], found
        _reduce(e, "ReduceSum", e.op("Mul", [x, x]), axes, keepdims, e.node.output[0])
    return found is not None


def _lrn(e) -> bool:
    # y = x / (bias + alpha / size * Σ_window x²)^beta; the channel window sum is a 1×1 Conv
    # with a band matrix of ones (C² MACs per pixel, small next to the convs around an LRN).
    shape = e.static_shape(e.node.input[0])
    if shape is None or len(shape) < 3:
        return False
    size = int(get_attribute(e.node, "size"))
    alpha = get_attribute(e.node, "alpha", 1e-4)
    beta, bias = get_attribute(e.node, "beta", 0.75), get_attribute(e.node, "bias", 1.0)
    channels, below, above = shape[1], (size - 1) // 2, size // 2
    c = np.arange(channels)
    band = ((c[None, :] >= c[:, None] - below) & (c[None, :] <= c[:, None] + above))
    weight = band.astype(np.float32).reshape(channels, channels, *[1] * (len(shape) - 2))
    x = e.node.input[0]
    window = e.op("Conv", [e.op("Mul", [x, x]), e.tensor(weight, "band")])
    base = e.op("Add", [e.op("Mul", [window, e.const(alpha / size, "alpha")]),
                        e.const(bias, "bias")])
    e.op("Div", [x, e.op("Pow", [base, e.const(beta, "beta")])], e.node.output[0])
    return True


def _pad_index(length: int, before: int, after: int, mode: str) -> np.ndarray:
    index = np.arange(-before, length + after)
    if mode == "edge":
        return np.clip(index, 0, length - 1)
    if mode == "wrap":
        return np.mod(index, length)
    period = 2 * (length - 1)  # reflect without repeating the edge
    folded = np.mod(index, period) if period else np.zeros_like(index)
    return np.where(folded < length, folded, period - folded)


def _pad(e) -> bool:
    mode = _text(get_attribute(e.node, "mode"), "constant")
    shape = e.static_shape(e.node.input[0])
    pads = e.constant_input(1)
    axes = e.constant_input(3)
    if mode == "constant" or shape is None or pads is None:
        return False
    rank = len(shape)
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes.reshape(-1)]
    pads = [int(p) for p in pads.reshape(-1)]
    current = e.node.input[0]
    steps = [(axis, pads[i], pads[i + len(axes)]) for i, axis in enumerate(axes)
             if pads[i] or pads[i + len(axes)]]
    if not steps:
        e.op("Identity", [current], e.node.output[0])
        return True
    for n, (axis, before, after) in enumerate(steps):
        if mode == "reflect" and (before >= shape[axis] or after >= shape[axis]):
            return False
        index = _pad_index(shape[axis], before, after, mode)
        out = e.node.output[0] if n == len(steps) - 1 else None
        current = e.op("Gather", [current, e.tensor(index.astype(np.int64), "index")], out,
                       axis=axis)
    return True


def _source_coordinates(mode: str, out_size: int, in_size: int, scale: float) -> np.ndarray:
    i = np.arange(out_size, dtype=np.float64)
    if mode == "asymmetric":
        return i / scale
    if mode == "align_corners":
        return i * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(i)
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(i)
    if mode == "tf_half_pixel_for_nn":
        return (i + 0.5) / scale
    return (i + 0.5) / scale - 0.5  # half_pixel


def _nearest(coords: np.ndarray, rounding: str, in_size: int) -> np.ndarray:
    if rounding == "floor":
        index = np.floor(coords)
    elif rounding == "ceil":
        index = np.ceil(coords)
    elif rounding == "round_prefer_ceil":
        index = np.floor(coords + 0.5)
    else:  # round_prefer_floor
        index = np.ceil(coords - 0.5)
    return np.clip(index, 0, in_size - 1).astype(np.int64)


def _resize_axis(e, x: str, axis: int, rank: int, in_size: int, out_size: int, scale: float,
                 out: str | None) -> str | None:
    node = e.node
    mode = _text(get_attribute(node, "mode"), "nearest")
    transform = _text(get_attribute(node, "coordinate_transformation_mode"), "half_pixel")
    if e.node.op_type == "Upsample":
        transform = "asymmetric"
    coords = _source_coordinates(transform, out_size, in_size, scale)
    if mode == "nearest":
        rounding = _text(get_attribute(node, "nearest_mode"), "round_prefer_floor")
        index = _nearest(coords, "floor" if e.node.op_type == "Upsample" else rounding, in_size)
        return e.op("Gather", [x, e.tensor(index, "index")], out, axis=axis)
    if mode != "linear":
        return None  # cubic: no exact gather form
    coords = np.clip(coords, 0, in_size - 1)
    low = np.floor(coords).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    weight_shape = [1] * rank
    weight_shape[axis] = out_size
    frac = (coords - low).astype(np.float32).reshape(weight_shape)
    lo = e.op("Gather", [x, e.tensor(low, "low")], axis=axis)
    hi = e.op("Gather", [x, e.tensor(high, "high")], axis=axis)
    return e.op("Add", [e.op("Mul", [lo, e.tensor(1 - frac, "w_low")]),
                        e.op("Mul", [hi, e.tensor(frac, "w_high")])], out)


def _resize(e) -> bool:
    node = e.node
    shape = e.static_shape(node.input[0])
    out_shape = e.static_shape(node.output[0])
    if shape is None or out_shape is None or get_attribute(node, "antialias", 0):
        return False
    if node.op_type == "Upsample":
        scales = e.constant_input(1)
        scales = get_attribute(node, "scales") if scales is None else scales
    else:
        scales = e.constant_input(2)
    if _text(get_attribute(node, "coordinate_transformation_mode"), "") == "tf_crop_and_resize":
        return False
    if scales is None or np.size(scales) != len(shape):
        scales = np.array(out_shape, np.float64) / np.array(shape, np.float64)
    scales = np.asarray(scales, np.float64).reshape(-1)
    changed = [a for a in range(len(shape)) if shape[a] != out_shape[a]]
    if not changed:
        e.op("Identity", [node.input[0]], node.output[0])
        return True
    current = node.input[0]
    for n, axis in enumerate(changed):
        out = node.output[0] if n == len(changed) - 1 else None
        current = _resize_axis(e, current, axis, len(shape), shape[axis], out_shape[axis],
                               float(scales[axis]), out)
        if current is None:
            return False
    return True


def _instance_norm(e) -> bool:
    shape = e.static_shape(e.node.input[0])
    if shape is None:
        return False
    x, scale, bias = e.node.input[:3]
    spatial = list(range(2, len(shape)))
    eps = get_attribute(e.node, "epsilon", 1e-5)
    centred = e.op("Sub", [x, _reduce(e, "ReduceMean", x, spatial, 1)])
    variance = _reduce(e, "ReduceMean", e.op("Mul", [centred, centred]), spatial, 1)
    normed = e.op("Div", [centred, e.op("Sqrt", [e.op("Add", [variance, e.const(eps, "eps")])])])
    per_channel = e.tensor(np.array([shape[1], *[1] * len(spatial)], np.int64), "channel_shape")
    scaled = e.op("Mul", [normed, e.op("Reshape", [scale, per_channel])])
    e.op("Add", [scaled, e.op("Reshape", [bias, per_channel])], e.node.output[0])
    return True


def _thresholded_relu(e) -> bool:
    x, alpha = e.node.input[0], get_attribute(e.node, "alpha", 1.0)
    above = e.op("Greater", [x, e.const(alpha, "alpha")])
    e.op("Where", [above, x, e.const(0.0, "zero")], e.node.output[0])
    return True


def _dropout(e) -> bool:
    # Inference-mode Dropout is the identity; with a used mask output it stays.
    if len(e.node.output) > 1 and e.node.output[1] in e.consumed:
        return False
    e.op("Identity", [e.node.input[0]], e.node.output[0])
    return True


def _zero_insert(e, x: str, shape: tuple[int, ...], strides: list[int]) -> str:
    """x[N, C, H, W] with s-1 zeros between neighbours: ConvTranspose's input upsampling."""
    n, c, h, w = shape
    s0, s1 = strides
    split = e.op("Reshape", [x, e.tensor(np.array([n, c, h, 1, w, 1], np.int64), "split")])
    zeros = e.op("Pad", [split, e.tensor(np.array([0] * 9 + [s0 - 1, 0, s1 - 1], np.int64),
                                         "zeros")])
    merged = e.op("Reshape", [zeros, e.tensor(np.array([n, c, h * s0, w * s1], np.int64),
                                              "merged")])
    ends = np.array([(h - 1) * s0 + 1, (w - 1) * s1 + 1], np.int64)
    return e.op("Slice", [merged, e.tensor(np.zeros(2, np.int64), "starts"),
                          e.tensor(ends, "ends"), e.tensor(np.array([2, 3], np.int64), "axes")])


def _conv_transpose(e) -> bool:
    # ConvTranspose = Conv over the zero-upsampled input with the kernel flipped and its in/out
    # axes swapped per group; the weight stays the trainable initializer it was.
    node = e.node
    x, weight = node.input[0], node.input[1]
    shape, kernel = e.static_shape(x), e.static_shape(weight)
    auto_pad = _text(get_attribute(node, "auto_pad"), "NOTSET")
    if shape is None or kernel is None or len(shape) != 4 or auto_pad != "NOTSET" \
            or get_attribute(node, "output_shape") is not None:
        return False
    group = int(get_attribute(node, "group", 1))
    strides = list(get_attribute(node, "strides", [1, 1]))
    dilations = list(get_attribute(node, "dilations", [1, 1]))
    pads = list(get_attribute(node, "pads", [0, 0, 0, 0]))
    extra = list(get_attribute(node, "output_padding", [0, 0]))
    upsampled = _zero_insert(e, x, shape, strides) if strides != [1, 1] else x
    cin, cout_per_group, kh, kw = kernel
    rows = e.op("Gather", [weight, e.tensor(np.arange(kh)[::-1].copy(), "rev_h")], axis=2)
    flipped = e.op("Gather", [rows, e.tensor(np.arange(kw)[::-1].copy(), "rev_w")], axis=3)
    grouped = e.op("Reshape", [flipped, e.tensor(np.array(
        [group, cin // group, cout_per_group, kh, kw], np.int64), "grouped")])
    swapped = e.op("Transpose", [grouped], perm=[0, 2, 1, 3, 4])
    conv_weight = e.op("Reshape", [swapped, e.tensor(np.array(
        [group * cout_per_group, cin // group, kh, kw], np.int64), "conv_weight")])
    begin = [dilations[i] * (kernel[2 + i] - 1) - pads[i] for i in range(2)]
    end = [dilations[i] * (kernel[2 + i] - 1) - pads[2 + i] + extra[i] for i in range(2)]
    inputs = [upsampled, conv_weight] + ([node.input[2]] if len(node.input) > 2
                                         and node.input[2] else [])
    crop = [max(-v, 0) for v in begin + end]
    out = None if any(crop) else node.output[0]
    y = e.op("Conv", inputs, out, group=group, dilations=dilations,
             pads=[max(v, 0) for v in begin + end])
    if any(crop):
        sizes = [(shape[2 + i] - 1) * strides[i] + 1 + max(begin[i], 0) + max(end[i], 0)
                 - dilations[i] * (kernel[2 + i] - 1) for i in range(2)]
        e.op("Slice", [y, e.tensor(np.array(crop[:2], np.int64), "crop_starts"),
                       e.tensor(np.array([sizes[i] - crop[2 + i] for i in range(2)], np.int64),
                                "crop_ends"),
                       e.tensor(np.array([2, 3], np.int64), "crop_axes")], node.output[0])
    return True


SHAPED: dict[str, Callable] = {
    "ConvTranspose": _conv_transpose,
    "GlobalMaxPool": _global_max_pool,
    "ReduceMax": _reduce_max,
    "ReduceSumSquare": _reduce_sum_square,
    "LRN": _lrn,
    "Pad": _pad,
    "Resize": _resize,
    "Upsample": _resize,
    "InstanceNormalization": _instance_norm,
    "ThresholdedRelu": _thresholded_relu,
    "Dropout": _dropout,
}
