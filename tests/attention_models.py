"""Small transformer encoders built the way PyTorch exports them (for the attention tests).

Tokens [B, N, F] → patch projection → L pre-norm blocks of multi-head self-attention (separate
or fused QKV, Reshape [B, T, H, D], Transpose, QKᵀ, scale, Softmax, AV, Transpose, Reshape,
output projection) and an MLP (Linear → GELU → Linear) → mean over tokens → classifier.
LayerNormalization at opset 17, decomposed (ReduceMean, Sub, Pow, Sqrt, Div) at opset 14.
"""

from __future__ import annotations

import math

import numpy as np

from tests.onnx_builders import GraphBuilder


class EncoderBuilder(GraphBuilder):
    def __init__(self, opset: int, embed: int, heads: int, seed: int = 0,
                 shape_chain: bool = False) -> None:
        super().__init__(seed=seed, opset=opset)
        self.embed, self.heads, self.shape_chain = embed, heads, shape_chain

    def weight(self, shape, name=None):
        std = 1.0 / math.sqrt(shape[0]) if len(shape) == 2 else 0.1
        return self.const(self.rng.normal(0.0, std, size=tuple(shape)).astype(np.float32), name)

    def linear(self, x: str, n_in: int, n_out: int, name: str) -> str:
        y = self.node("MatMul", [x, self.weight([n_in, n_out])], name=name)
        return self.node("Add", [y, self.weight([n_out])], name=f"{name}_bias")

    def layer_norm(self, x: str, name: str) -> str:
        gamma = self.const(1.0 + 0.1 * self.rng.standard_normal(self.embed))
        beta = self.weight([self.embed])
        if self.opset >= 17:
            return self.node("LayerNormalization", [x, gamma, beta], name=name, axis=-1)
        mean = self.node("ReduceMean", [x], name=f"{name}_mean", axes=[-1])
        centred = self.node("Sub", [x, mean], name=f"{name}_sub")
        var = self.node("ReduceMean", [self.node("Pow", [centred, self.const(2.0)])],
                        axes=[-1])
        std = self.node("Sqrt", [self.node("Add", [var, self.const(1e-5)])])
        normed = self.node("Div", [centred, std])
        return self.node("Add", [self.node("Mul", [normed, gamma]), beta], name=name)

    def head_target(self, x: str, inner: list[int]) -> str:
        """A Reshape target [B, T, *inner]: constant, or computed from Shape(x) like
        `x.size()[:-1] + (H, D)` in a Hugging Face export."""
        if not self.shape_chain:
            return self.ints([0, 0, *inner])
        leading = self.node("Slice", [self.node("Shape", [x]), self.ints([0]), self.ints([2])])
        return self.node("Concat", [leading, self.ints(inner)], axis=0)

    def heads_of(self, x: str, name: str) -> str:
        """[B, T, E] → [B, H, T, D] (PyTorch's view + transpose)."""
        d = self.embed // self.heads
        split = self.node("Reshape", [x, self.head_target(x, [self.heads, d])],
                          name=f"{name}_split")
        return self.node("Transpose", [split], name=f"{name}_heads", perm=[0, 2, 1, 3])

    def attention(self, x: str, name: str, qkv: str) -> str:
        """qkv: "separate" projections, or one fused projection cut by "split", "slice" or
        "gather" (timm: reshape [B, T, 3, H, D], permute, q = qkv[0])."""
        e, d = self.embed, self.embed // self.heads
        if qkv == "separate":
            q, k, v = (self.heads_of(self.linear(x, e, e, f"{name}_{p}"), f"{name}_{p}")
                       for p in "qkv")
        elif qkv == "gather":
            fused = self.linear(x, e, 3 * e, f"{name}_qkv")
            five = self.node("Reshape", [fused, self.head_target(fused, [3, self.heads, d])])
            stacked = self.node("Transpose", [five], perm=[2, 0, 3, 1, 4])
            q, k, v = (self.node("Gather", [stacked, self.ints(i)], axis=0) for i in range(3))
        else:
            fused = self.linear(x, e, 3 * e, f"{name}_qkv")
            if qkv == "split":
                parts = self.node("Split", [fused, self.ints([e, e, e])], outputs=3,
                                  name=f"{name}_split_qkv", axis=-1)
            else:
                parts = [self.node("Slice", [fused, self.ints([i * e]), self.ints([i * e + e]),
                                             self.ints([2])]) for i in range(3)]
            q, k, v = (self.heads_of(t, f"{name}_{p}") for t, p in zip(parts, "qkv"))
        k_t = self.node("Transpose", [k], name=f"{name}_kt", perm=[0, 1, 3, 2])
        scores = self.node("MatMul", [q, k_t], name=f"{name}_qk")
        scaled = self.node("Mul", [scores, self.const(1.0 / math.sqrt(d))])
        attn = self.node("Softmax", [scaled], name=f"{name}_softmax", axis=-1)
        context = self.node("MatMul", [attn, v], name=f"{name}_av")
        merged = self.node("Transpose", [context], perm=[0, 2, 1, 3])
        tokens = self.node("Reshape", [merged, self.head_target(merged, [e])],
                           name=f"{name}_merge")
        return self.linear(tokens, e, e, f"{name}_out")

    def mlp(self, x: str, hidden: int, name: str) -> str:
        h = self.linear(x, self.embed, hidden, f"{name}_fc1")
        erf = self.node("Erf", [self.node("Div", [h, self.const(math.sqrt(2.0))])])
        gelu = self.node("Mul", [self.node("Mul", [h, self.const(0.5)]),
                                 self.node("Add", [erf, self.const(1.0)])])
        return self.linear(gelu, hidden, self.embed, f"{name}_fc2")


# Data for encoder_model() at its defaults (6 tokens × 5 features, 3 classes), as a loader file.
ENCODER_LOADER = """
import numpy as np
rng = np.random.default_rng(0)
X = rng.standard_normal((256, 6, 5)).astype(np.float32)
Y = (X.sum(axis=(1, 2)) > 0).astype(np.int64) + (X[:, 0, 0] > 0).astype(np.int64)
def train_batches():
    for i in range(0, 256, 32):
        yield X[i:i + 32], Y[i:i + 32]
def eval_batches():
    yield X[:64], Y[:64]
"""


def encoder_model(opset: int = 17, qkv: str = "separate", layers: int = 2, tokens: int = 6,
                  features: int = 5, embed: int = 16, heads: int = 4, hidden: int = 24,
                  classes: int = 3, seed: int = 0, shape_chain: bool = False,
                  cls_token: bool = False):
    b = EncoderBuilder(opset, embed, heads, seed, shape_chain)
    x = b.input("x", ["batch", tokens, features])
    h = b.linear(x, features, embed, "embed")
    if cls_token:  # torchvision: class_token.expand(n, -1, -1), concatenated to the tokens
        batch = b.node("Slice", [b.node("Shape", [x]), b.ints([0]), b.ints([1])])
        cls_shape = b.node("Concat", [batch, b.ints([1, embed])], axis=0)
        cls = b.node("Expand", [b.weight([1, 1, embed]), cls_shape], name="cls_expand")
        h = b.node("Concat", [cls, h], axis=1, name="with_cls")
        tokens += 1
    h = b.node("Add", [h, b.weight([1, tokens, embed])], name="pos_embed")
    for i in range(layers):
        h = b.node("Add", [h, b.attention(b.layer_norm(h, f"ln{i}a"), f"attn{i}", qkv)],
                   name=f"res{i}a")
        h = b.node("Add", [h, b.mlp(b.layer_norm(h, f"ln{i}b"), hidden, f"mlp{i}")],
                   name=f"res{i}b")
    pooled = b.node("ReduceMean", [b.layer_norm(h, "ln_final")], axes=[1], keepdims=0)
    return b.model([b.linear(pooled, embed, classes, "classifier")])


def independent_macs(layers: int = 2, tokens: int = 6, features: int = 5, embed: int = 16,
                     heads: int = 4, hidden: int = 24, classes: int = 3,
                     alive_heads=None, alive_hidden=None, cls_token: bool = False) -> int:
    """Multiply-adds at batch 1 counted from the architecture, per layer's kept heads/units."""
    d = embed // heads
    total = tokens * features * embed + embed * classes
    tokens += int(cls_token)
    for i in range(layers):
        h = heads if alive_heads is None else alive_heads[i]
        m = hidden if alive_hidden is None else alive_hidden[i]
        total += tokens * embed * 3 * h * d  # Q, K, V projections
        total += 2 * h * tokens * tokens * d  # QKᵀ and AV
        total += tokens * h * d * embed  # output projection
        total += 2 * tokens * embed * m  # MLP
    return total
