"""Train and export the seeds: two CNNs (``resnet_seed.onnx``, ``mobilenet_seed.onnx``) and a
tiny ViT (``vit_seed.onnx``, architecture in ``build_vit.py``).

Dev-time only, and the only sample script that needs PyTorch (CPU build; not a dependency of
onnxmorph). The exported ONNX files are committed; users never run this. Rebuild with::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 onnx==1.16.2 numpy
    /tmp/torchvenv/bin/python samples/build_seeds.py          # all three seeds
    /tmp/torchvenv/bin/python samples/build_seeds.py vit      # only vit_seed.onnx

Both networks train on the bundled Fashion-MNIST subset via ``loader.py`` (so training sees
exactly the normalisation users' pruning runs see), with fixed seeds, in a few minutes on
two CPU cores. Export keeps BatchNormalization as separate inference-mode nodes (no Conv+BN
folding) so the seeds exercise onnxmorph's BN handling.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import onnx
import torch
from onnx import numpy_helper
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0


def load_loader() -> ModuleType:
    # The loader is a plain file (users pass it by path), so import it the same way.
    spec = importlib.util.spec_from_file_location("samples_loader", HERE / "loader.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- ResNet


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    # bias=False: the following BN has its own shift, as in the reference architectures.
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, ReLU after the residual Add."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), nn.ReLU(), conv_bn(cout, cout, 3))
        # 1x1 projection only where the shape changes; identity otherwise.
        self.shortcut = (
            conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetSeed(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(1, widths[0], 3), nn.ReLU())
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            # Stride 2 at the start of every stage but the first: 28 -> 14 -> 7.
            blocks += [BasicBlock(cin, w, 2 if i > 0 else 1), BasicBlock(w, w, 1)]
            cin = w
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)  # exports as GlobalAveragePool
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


# ------------------------------------------------------------------------ MobileNet


class SqueezeExcite(nn.Module):
    """GAP -> 1x1 reduce -> ReLU -> 1x1 expand -> HardSigmoid -> Mul (MobileNetV3 style)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    """1x1 expand-BN-act, 3x3 depthwise-BN-act, [SE], 1x1 project-BN, Add if shapes match."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        act: Callable[[], nn.Module],
        expansion: int = 4,
        se: bool = False,
    ) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [
            conv_bn(cin, hidden, 1),
            act(),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            act(),
        ]
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn(hidden, cout, 1))  # linear bottleneck: no activation
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MobileNetSeed(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(1, 16, 3), nn.ReLU6())
        # Mix of ReLU6 and HardSwish, with SE in the last stage, so the seed covers the op
        # patterns of MobileNetV2 and V3. Strides take 28x28 -> 14x14 -> 7x7.
        self.blocks = nn.Sequential(
            InvertedResidual(16, 24, 2, nn.ReLU6),
            InvertedResidual(24, 24, 1, nn.Hardswish),
            InvertedResidual(24, 32, 2, nn.Hardswish, se=True),
            InvertedResidual(32, 32, 1, nn.Hardswish, se=True),
        )
        self.head = nn.Sequential(conv_bn(32, 64, 1), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(x, 1))


# ------------------------------------------------------------------ training / export


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip: cheap, label-preserving for clothing, curbs overfitting."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x


@torch.no_grad()
def evaluate(model: nn.Module, loader: ModuleType) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader.eval_batches():
        pred = model(torch.from_numpy(x)).argmax(1)
        correct += int((pred == torch.from_numpy(y)).sum())
        total += len(y)
    return correct / total


def train(model: nn.Module, loader: ModuleType, epochs: int, lr: float) -> float:
    steps = epochs * (len(loader.load_arrays()["y_train"]) // loader.BATCH_SIZE)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    # One-cycle schedule: converges well within a handful of epochs.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(SEED)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(epochs):
        model.train()
        t0 = time.time()
        for x, y in loader.train_batches():
            loss = loss_fn(model(augment(torch.from_numpy(x), gen)), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, loader)
        print(
            f"  epoch {epoch + 1}/{epochs}  loss {loss.item():.3f}  test acc {acc:.4f}"
            f"  ({time.time() - t0:.1f}s)"
        )
    return acc


def constants_to_initializers(model: onnx.ModelProto) -> None:
    """Move tensor-valued Constant nodes into graph initializers.

    The TorchScript exporter emits e.g. the Clip bounds of ReLU6 as Constant nodes; having
    every constant tensor as an initializer gives the pruner a single place to look.
    """
    graph = model.graph
    keep = []
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and list(attrs) == ["value"]:
            tensor = numpy_helper.to_array(attrs["value"].t)
            graph.initializer.append(numpy_helper.from_array(tensor, node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def untie_identity_initializers(model: onnx.ModelProto) -> None:
    """Replace ``Identity(initializer)`` nodes with a private copy of that initializer.

    The exporter deduplicates bit-identical tensors and re-exposes them through Identity
    nodes. In the ResNet the BN shifts of a projection shortcut and of the residual branch
    it is added to get identical gradients, so they stay equal and are merged. A pruner must
    be able to slice each layer's parameters independently, so give each its own copy.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            tensor = numpy_helper.to_array(inits[node.input[0]]).copy()
            graph.initializer.append(numpy_helper.from_array(tensor, node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 28, 28),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=17,
        # No constant folding: in EVAL mode it also fuses BN into the preceding Conv.
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.EVAL,
        dynamo=False,  # legacy TorchScript exporter: plain ONNX ops, no function wrappers
        external_data=False,
    )
    m = onnx.load(str(path))
    # onnxruntime 1.19 / onnx 1.16 read IR <= 10; opset 17 only needs IR 8.
    m.ir_version = min(m.ir_version, 8)
    constants_to_initializers(m)
    untie_identity_initializers(m)
    init_names = {i.name for i in m.graph.initializer}
    kept_inputs = [i for i in m.graph.input if i.name not in init_names]
    del m.graph.input[:]
    m.graph.input.extend(kept_inputs)
    del m.metadata_props[:]
    m.doc_string = ""
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"  wrote {path.name}: {path.stat().st_size / 1e3:.0f} kB, ops {ops}")


def vit_seed() -> None:
    """Train and export ``vit_seed.onnx`` (architecture in build_vit.py)."""
    build_all(["vit"])


def build_all(which: list[str]) -> None:
    # We want the legacy exporter on purpose (see export()); silence its deprecation notice.
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
    sys.path.insert(0, str(HERE))
    from build_vit import vit_spec

    loader = load_loader()
    specs: list[tuple[str, Callable[[], nn.Module], int, float]] = [
        ("resnet_seed.onnx", ResNetSeed, 8, 3e-3),
        ("mobilenet_seed.onnx", MobileNetSeed, 10, 5e-3),
        vit_spec(),
    ]
    for name, build, epochs, lr in specs:
        if name.split("_")[0] not in which:
            continue
        # One thread for the ViT: its small matmuls ran 10x slower on two busy cores.
        torch.set_num_threads(1 if name == "vit_seed.onnx" else 2)
        torch.manual_seed(SEED)
        model = build()
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {n_params} parameters, {epochs} epochs")
        train(model, loader, epochs, lr)
        export(model, HERE / name)


def main() -> None:
    build_all(sys.argv[1:] or ["resnet", "mobilenet", "vit"])


if __name__ == "__main__":
    main()
