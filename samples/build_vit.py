"""The ViT seed (``vit_seed.onnx``): a tiny Vision Transformer for 28x28 Fashion-MNIST.

Dev-time only, needs PyTorch (see ``build_seeds.py``, which calls ``vit_seed()``). Written in
plain torch the way torchvision's ``VisionTransformer`` is (torchvision is not installable
next to torch 2.13 here): a Conv patch embedding, a learned class token and positional
embedding, pre-norm encoder blocks with ``nn.MultiheadAttention`` (fused in-projection,
``batch_first``) and a GELU MLP, a final LayerNorm and a Linear head on the class token.
Exported at opset 17, so LayerNorm stays one ``LayerNormalization`` node.
"""

from __future__ import annotations

import torch
from torch import nn

# 28x28 / patch 7 = 16 patches + the class token = 17 tokens; 4 blocks of 4 heads (D = 16).
IMAGE, PATCH, LAYERS, HEADS, HIDDEN, MLP, CLASSES = 28, 7, 4, 4, 64, 192, 10
EPOCHS, LR = 30, 2e-3


class EncoderBlock(nn.Module):
    """x + MHA(LN(x)), then x + MLP(LN(x)), as torchvision's EncoderBlock (no dropout)."""

    def __init__(self, heads: int, hidden: int, mlp: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp), nn.GELU(), nn.Linear(mlp, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class ViTSeed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(1, HIDDEN, PATCH, PATCH)
        tokens = (IMAGE // PATCH) ** 2 + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, HIDDEN))
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens, HIDDEN) * 0.02)
        self.layers = nn.Sequential(*(EncoderBlock(HEADS, HIDDEN, MLP) for _ in range(LAYERS)))
        self.ln = nn.LayerNorm(HIDDEN, eps=1e-6)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, HIDDEN, -1).permute(0, 2, 1)  # [N, 16, E]
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        x = self.ln(self.layers(x))
        return self.head(x[:, 0])


def vit_spec() -> tuple[str, type[nn.Module], int, float]:
    """(file name, class, epochs, max lr) for build_seeds.main()."""
    return "vit_seed.onnx", ViTSeed, EPOCHS, LR
