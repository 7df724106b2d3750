"""MatMul of two run-time tensors: multi-head attention's QKᵀ and AV.

PyTorch exports attention as Reshape [B, T, H·D] → [B, T, H, D] (the reshape handler makes
each head one unit), Transpose to [B, H, T, D] (Kᵀ: [B, H, D, T]), MatMul QKᵀ → [B, H, T, T],
scale, Softmax over the keys, MatMul with V → [B, H, T, D], Transpose and Reshape back. Here
the head axis is a *batch* axis of the MatMul: head h of Q meets head h of K (and the scores
of head h meet head h of V), so those heads are one unit; the contracted axis (Q's and K's D
channels) is one set of channels on both sides. A removed head disappears from the product
exactly, which is what slicing it computes.
"""

from __future__ import annotations

import numpy as np

from onnxmorph.graph.handlers.base import Coupling, Fresh, Layout, NodeContext, register
from onnxmorph.graph.handlers.reshape import head_ties
from onnxmorph.graph.union_find import UnionFind

_ROLES_A = ("batch", "rows", "contracted")  # A: [..., M, K]
_ROLES_B = ("batch", "contracted", "cols")  # B: [..., K, N]


def activation_matmul(ctx: NodeContext) -> Coupling:
    a, b = ctx.in_layouts[0], ctx.in_layouts[1]
    sa, sb, out = ctx.in_shapes[0], ctx.in_shapes[1], ctx.out_shapes[0]
    if a is None or b is None or sa is None or sb is None or out is None:
        return ctx.boundary(f"MatMul '{ctx.name}' multiplies two run-time tensors")
    rank = len(out)
    if len(sa) != rank or len(sb) != rank or rank < 3:
        return ctx.boundary(f"MatMul '{ctx.name}' multiplies run-time tensors of other ranks")
    roles_a, roles_b = _roles(a, rank, _ROLES_A), _roles(b, rank, _ROLES_B)
    heads_a, heads_b = roles_a["batch"], roles_b["batch"]
    if len(heads_a) != 1 or heads_a != heads_b or sa[heads_a[0]] != sb[heads_b[0]]:
        return ctx.boundary(f"MatMul '{ctx.name}' multiplies run-time tensors without a "
                            "shared head axis")
    if bool(roles_a["contracted"]) != bool(roles_b["contracted"]):
        return ctx.boundary(f"MatMul '{ctx.name}' contracts channels of one operand only")
    head_axis = heads_a[0]
    ids_a, ids_b = _per_head(a, head_axis), _per_head(b, head_axis)
    # Every channel of head h in either operand is one unit with the others of head h.
    unify = [(np.repeat(ids_a[:, :1], ids_a.shape[1], axis=1), ids_a),
             (np.repeat(ids_b[:, :1], ids_b.shape[1], axis=1), ids_b),
             (ids_a[:, 0], ids_b[:, 0])]
    heads = ids_a[:, 0]
    axes = [head_axis]
    if roles_a["rows"]:
        axes.append(rank - 2)
    if roles_b["cols"]:
        axes.append(rank - 1)
    shape = [out[axis] for axis in axes]
    ids = np.broadcast_to(heads.reshape([-1] + [1] * (len(axes) - 1)), shape).copy()
    return Coupling(outputs=[Layout(tuple(axes), ids)], unify=unify)


def _roles(layout: Layout, rank: int, names: tuple[str, str, str]) -> dict[str, list[int]]:
    roles: dict[str, list[int]] = {name: [] for name in names}
    for axis in layout.axes:
        roles[names[0] if axis < rank - 2 else names[axis - rank + 3]].append(axis)
    return roles


def _per_head(layout: Layout, head_axis: int) -> np.ndarray:
    """The layout's ids as [H, channels of that head]."""
    position = layout.axes.index(head_axis)
    ids = np.moveaxis(layout.ids, position, 0)
    return ids.reshape(ids.shape[0], -1)


def reads_head_shape(ctx: NodeContext) -> bool:
    """A Shape of a tensor split into heads ([B, H, T, D], channels on two axes): exporters
    read it only to reshape that same tensor (torch.onnx's SDPA merges B·H to transpose K and
    splits it back with the H it reads), so a pruned head count read at run time stays right;
    `verify` checks the pruned model at two batch sizes either way."""
    layout = ctx.in_layouts[0]
    return ctx.node.op_type == "Shape" and layout is not None and len(layout.axes) >= 2


@register("Expand")
def expand(ctx: NodeContext) -> Coupling:
    """A broadcast to a bigger shape: channels stay where they are (aligned from the right).
    A constant expanded to the batch (ViT's class token) gets channels of its own on the last
    axis, pinned: onnxmorph does not slice a run-time broadcast of a constant."""
    layout, shape, out = ctx.in_layouts[0], ctx.in_shapes[0], ctx.out_shapes[0]
    if shape is None or not out:
        return ctx.boundary(f"Expand '{ctx.name}' has an unknown shape")
    if layout is None:
        token = ctx.const(0)
        if ctx.prune_embedding and token is not None and token.ndim == len(out) \
                and token.shape[-1] == out[-1] > 1:
            # A class token joins the embedding: its last axis is sliced with the channels,
            # the target's channel entry rewritten (rewrite/slice_ops.py).
            return Coupling(outputs=[Fresh(axis=len(out) - 1, count=out[-1])])
        reason = (f"Expand '{ctx.name}' broadcasts a constant (a class token) at run time "
                  "(--prune-embedding prunes it with the embedding)")
        return Coupling(outputs=[Fresh(axis=len(out) - 1, count=out[-1], pinned=reason)])
    shift = len(out) - len(shape)
    if any(shape[a] != out[a + shift] for a in layout.axes):
        return ctx.boundary(f"Expand '{ctx.name}' broadcasts along a channel axis")
    return ctx.passthrough(Layout(tuple(a + shift for a in layout.axes), layout.ids))


def tie_split_heads(units: UnionFind, groups: UnionFind, splits: list[np.ndarray]) -> None:
    """Make the keep mask of every head split rectangular, once all other ties are known.

    A feature axis split as [..., A, D] is either A heads of D channels (each head one unit)
    or nn.MultiheadAttention's [3, E] q/k/v rows (channel e of q, k and v one unit, heads
    cut later). The attention MatMuls already tied the right way: rows that are each one
    unit (heads) or columns equal across rows (q/k/v) need nothing more. Only a split that
    neither made rectangular gets head ties, so a 3-head model is not mistaken for a fused
    projection and a fused projection's q, k and v heads are not merged into one unit.
    """
    changed = True
    while changed:
        changed = False
        for ids in splits:
            roots = np.vectorize(units.find, otypes=[np.int64])(ids.reshape(-1, ids.shape[-1]))
            if (roots == roots[:, :1]).all() or (roots == roots[:1]).all():
                continue
            for a, b in head_ties(ids):
                units.union_arrays(a, b)
                groups.union_arrays(a, b)
            changed = True
