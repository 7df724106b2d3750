"""Export real models (torchvision, PaddlePaddle) to ONNX for the coverage benchmark and fixtures.

Run with the exporter environments, not the project's:
    /work/exporters-venv/bin/python benchmarks/make_exports.py torch  /work/exports
    /work/paddle-venv/bin/python    benchmarks/make_exports.py paddle /work/exports
    /work/exporters-venv/bin/python benchmarks/make_exports.py fixtures tests/data
Weights are random (no network); the graphs are exactly what the exporters write. Files are
re-stamped to IR version 8 so onnxruntime 1.19 (IR <= 10) loads them.
"""

from __future__ import annotations

import sys
from pathlib import Path

# (name, constructor kwargs, input sizes, opsets)
TORCH_MODELS = [
    ("resnet18", {}, (64, 224), (11, 13, 17)),
    ("mobilenet_v2", {}, (64, 224), (13,)),
    ("mobilenet_v3_small", {}, (64,), (13, 17)),
    ("shufflenet_v2_x0_5", {}, (64,), (11, 13, 17)),
    ("densenet121", {}, (64,), (13,)),
    ("efficientnet_b0", {}, (64,), (13, 17)),
    ("convnext_tiny", {}, (64,), (13, 17)),
    ("regnet_x_400mf", {}, (64,), (13,)),
    ("squeezenet1_0", {}, (64,), (11, 13)),
    ("googlenet", {"aux_logits": False, "init_weights": False}, (64,), (13,)),
]


def _restamp(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    model.ir_version = 8
    onnx.save(model, str(path))


def _torch_export(module, size: int, opset: int, path: Path, dynamic_batch: bool = True) -> None:
    import torch

    module.eval()
    example = torch.randn(1, 3, size, size)
    dynamic_axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(module, example, str(path), opset_version=opset, input_names=["input"],
                      output_names=["output"], dynamic_axes=dynamic_axes, dynamo=False)
    _restamp(path)


def export_torch(out: Path) -> list[str]:
    import torch
    import torchvision

    torch.manual_seed(0)
    lines = []
    for name, kwargs, sizes, opsets in TORCH_MODELS:
        for size in sizes:
            for opset in opsets:
                path = out / f"tv_{name}_{size}_op{opset}.onnx"
                try:
                    module = getattr(torchvision.models, name)(weights=None, **kwargs)
                    _torch_export(module, size, opset, path)
                    lines.append(f"{path.name}: torchvision {name}, input 1x3x{size}x{size} "
                                 f"(dynamic batch), opset {opset}, random weights")
                except Exception as exc:  # an exporter limitation is recorded, not fatal
                    lines.append(f"{path.name}: NOT EXPORTED ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:120]})")
                print(lines[-1], flush=True)
    return lines


def _paddle_cnn():
    import paddle
    from paddle import nn

    class SmallCNN(nn.Layer):
        def __init__(self, width: int = 16):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2D(3, width, 3, padding=1), nn.BatchNorm2D(width),
                                      nn.ReLU())
            self.block = nn.Sequential(nn.Conv2D(width, width, 3, padding=1, groups=width),
                                       nn.BatchNorm2D(width), nn.Hardswish(),
                                       nn.Conv2D(width, 2 * width, 1), nn.BatchNorm2D(2 * width),
                                       nn.ReLU())
            self.head = nn.Linear(2 * width, 10)

        def forward(self, x):
            y = self.block(self.stem(x))
            y = paddle.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1)
            return self.head(y)

    paddle.seed(0)
    return SmallCNN()


def export_paddle(out: Path) -> list[str]:
    import paddle

    lines = []
    for name in ("paddle_small_cnn",):
        model = _paddle_cnn()
        model.eval()
        spec = [paddle.static.InputSpec(shape=[-1, 3, -1, -1], dtype="float32", name="x")]
        prefix = out / name
        try:
            paddle.onnx.export(model, str(prefix), input_spec=spec, opset_version=13)
            _restamp(prefix.with_suffix(".onnx"))
            lines.append(f"{name}.onnx: PaddlePaddle small CNN via paddle2onnx, input "
                         f"Nx3xHxW (dynamic dims as dim_param), opset 13, seed 0")
        except Exception as exc:
            lines.append(f"{name}.onnx: NOT EXPORTED ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120]})")
        print(lines[-1], flush=True)
    return lines


def export_fixtures(out: Path) -> list[str]:
    """Tiny-width real torchvision exports committed as test fixtures (a few hundred KB)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    lines = []
    shuffle = torchvision.models.ShuffleNetV2([2, 2, 2], [8, 16, 24, 32, 64], num_classes=10)
    _torch_export(shuffle, 32, 13, out / "tv_shufflenet_tiny_op13.onnx")
    lines.append("tv_shufflenet_tiny_op13.onnx")

    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1,
                                               num_heads=2, hidden_dim=16, mlp_dim=32,
                                               num_classes=10)
    _torch_export(vit, 32, 14, out / "tv_vit_tiny_op14.onnx")
    lines.append("tv_vit_tiny_op14.onnx")
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    kind, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    lines = {"torch": export_torch, "paddle": export_paddle, "fixtures": export_fixtures}[kind](out)
    if kind != "fixtures":
        with open(out / "README.txt", "a") as readme:
            readme.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
