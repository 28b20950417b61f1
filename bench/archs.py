"""Full-size torch reference networks for the benchmarks and their export to ONNX.

Architectures as published, structured as torchvision structures them (same layers, same
parameter counts; torchvision itself is not used):
  ResNet-18 and ResNet-50: He, Zhang, Ren & Sun, "Deep Residual Learning for Image
  Recognition", CVPR 2016. ResNet-50's bottlenecks stride on their 3x3 conv, as torchvision's
  do (often called ResNet "v1.5"; the paper strides on the first 1x1 conv).
  VGG-16 (configuration D): Simonyan & Zisserman, "Very Deep Convolutional Networks for
  Large-Scale Image Recognition", ICLR 2015.
  DenseNet-121: Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional
  Networks", CVPR 2017 (DenseNet-BC: bottleneck layers and compression 0.5).

Every factory returns a randomly initialised module, seeded, in eval mode. Weights use He
initialisation so that activations keep their scale through 16-121 layers (with PyTorch's default
init the logits of VGG-16 shrink by orders of magnitude, which makes numerical comparisons of
logits meaningless). BatchNorm running statistics and affine parameters are randomised too, so
that folding them into the convolutions is real work and a wrong fold would show.

Every ReLU is its own ``nn.ReLU`` module and none is in-place: a forward hook on each ReLU then
sees each gate output exactly once, and no later in-place op overwrites a kept output.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from zoo import quiet_export  # noqa: E402  (the test zoo's exporter silencer)

# VGG configuration D: output channels of each 3x3 convolution, "M" for a 2x2 max-pool.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M")
VGG16_CONFIG += (512, 512, 512, "M")

# ---------------------------------------------------------------------------------------------
# Shared by ResNet and DenseNet


def imagenet_stem() -> nn.Sequential:
    """The ImageNet stem of ResNet and DenseNet: 7x7/2 conv to 64 channels (no bias), BN, ReLU,
    3x3/2 max-pool with padding 1. A 224x224 input leaves it at 56x56."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    )


# ---------------------------------------------------------------------------------------------
# ResNet-18 and ResNet-50


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """A residual block's shortcut: the identity, or a strided 1x1 conv-BN projection where the
    shape changes."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (identity, or a strided 1x1 conv-BN projection)."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = shortcut(cin, cout, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 conv-BN to ``width`` channels, 3x3 conv-BN (strided), 1x1 conv-BN to 4 x ``width``,
    plus a shortcut (identity, or a strided 1x1 conv-BN projection)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = shortcut(cin, cout, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu3(y + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for 3-channel images: ImageNet stem, four stages of ``depths`` blocks of widths 64,
    128, 256 and 512 (times the block's expansion at the output), each stage after the first
    starting with a stride-2 block; global average pool, flatten, FC."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: tuple[int, int, int, int],
        num_classes: int = 1000,
    ):
        super().__init__()
        self.stem = imagenet_stem()
        stages: list[nn.Module] = []
        cin = 64
        for i, (width, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(block(cin, width, stride))
                cin = width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet18(num_classes: int = 1000, seed: int = 0) -> ResNet:
    """A randomly initialised ResNet-18 (BasicBlocks [2, 2, 2, 2]) in eval mode; any input size
    of 32x32 or more works."""
    return _seeded(lambda: ResNet(BasicBlock, (2, 2, 2, 2), num_classes), seed)


def resnet50(num_classes: int = 1000, seed: int = 0) -> ResNet:
    """A randomly initialised ResNet-50 (Bottlenecks [3, 4, 6, 3], 25,557,032 parameters at
    K=1000) in eval mode; any input size of 32x32 or more works."""
    return _seeded(lambda: ResNet(Bottleneck, (3, 4, 6, 3), num_classes), seed)


# ---------------------------------------------------------------------------------------------
# VGG-16


def vgg16_features(batch_norm: bool = False) -> nn.Sequential:
    """The 13 conv layers of configuration D, each followed by ReLU (and BN before it, if asked)."""
    layers: list[nn.Module] = []
    cin = 3
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(cin, item, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU())
        cin = item
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG features, flatten, then a fully connected head given by its hidden widths.

    The original VGG takes 224x224 inputs, so the features end at 7x7x512 = 25088. No adaptive
    pooling is inserted before the head (torchvision adds one; at 224x224 it is the identity).
    For other input sizes, a multiple of 32, the first FC layer is sized to match instead.
    Dropout, as in the paper, sits after each hidden FC ReLU; in eval mode it does nothing.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        hidden: tuple[int, ...] = (4096, 4096),
        batch_norm: bool = False,
        input_size: int = 224,
        dropout: float = 0.5,
    ):
        super().__init__()
        if input_size % 32:
            raise ValueError(f"VGG input size must be a multiple of 32, got {input_size}")
        self.features = vgg16_features(batch_norm)
        widths = (512 * (input_size // 32) ** 2, *hidden)
        head: list[nn.Module] = [nn.Flatten(1)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            head += [nn.Linear(cin, cout), nn.ReLU()]
            if dropout:
                head.append(nn.Dropout(dropout))
        head.append(nn.Linear(widths[-1], num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def vgg16(
    num_classes: int = 1000, batch_norm: bool = False, input_size: int = 224, seed: int = 0
) -> VGG:
    """VGG-16 (configuration D), classifier 25088-4096-4096-K at 224x224; BN off by default."""
    return _seeded(lambda: VGG(num_classes, (4096, 4096), batch_norm, input_size), seed)


def vgg16_pathwise_head(
    num_classes: int = 10, batch_norm: bool = False, input_size: int = 224, seed: int = 0
) -> VGG:
    """VGG-16 features with the small 25088-256-64-10 head of the pathwise explanation paper."""
    return _seeded(lambda: VGG(num_classes, (256, 64), batch_norm, input_size, 0.0), seed)


def frozen_pathwise_vgg(input_size: int = 224, seed: int = 0) -> tuple[VGG, list[nn.ReLU]]:
    """The pathwise paper's VGG-16 with parameters frozen, and its ReLU modules in call order
    (the torch references of the pathway benchmarks hook them)."""
    module = vgg16_pathwise_head(num_classes=10, input_size=input_size, seed=seed)
    for p in module.parameters():
        p.requires_grad_(False)
    return module, [m for m in module.modules() if isinstance(m, nn.ReLU)]


# ---------------------------------------------------------------------------------------------
# DenseNet-121


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv to ``bn_size`` x ``growth`` channels, BN-ReLU-3x3 conv to ``growth``
    channels; the output is the input with those ``growth`` channels concatenated after it."""

    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        width = bn_size * growth
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.relu1(self.bn1(x)))
        y = self.conv2(self.relu2(self.bn2(y)))
        return torch.cat([x, y], 1)


def dense_transition(cin: int, cout: int) -> nn.Sequential:
    """Between dense blocks: BN, ReLU, 1x1 conv to ``cout`` channels, 2x2 average pool."""
    return nn.Sequential(
        nn.BatchNorm2d(cin),
        nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.AvgPool2d(2, 2),
    )


class DenseNet(nn.Module):
    """DenseNet-BC for 3-channel images: ImageNet stem, dense blocks of ``depths`` layers with
    transitions halving the channels between them, final BN and ReLU, global average pool,
    flatten, FC."""

    def __init__(
        self,
        depths: tuple[int, ...] = (6, 12, 24, 16),
        growth: int = 32,
        bn_size: int = 4,
        num_classes: int = 1000,
    ):
        super().__init__()
        self.stem = imagenet_stem()
        blocks: list[nn.Module] = []
        c = 64
        for i, depth in enumerate(depths):
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers.append(DenseLayer(c, growth, bn_size))
                c += growth
            blocks.append(nn.Sequential(*layers))
            if i < len(depths) - 1:
                blocks.append(dense_transition(c, c // 2))
                c //= 2
        blocks += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(self.stem(x))), 1))


def densenet121(num_classes: int = 1000, seed: int = 0) -> DenseNet:
    """A randomly initialised DenseNet-121 (dense blocks (6, 12, 24, 16), growth 32, bn_size 4,
    7,978,856 parameters at K=1000) in eval mode; any input size of 32x32 or more works."""
    return _seeded(lambda: DenseNet((6, 12, 24, 16), 32, 4, num_classes), seed)


# ---------------------------------------------------------------------------------------------
# Initialisation and export


def _seeded(build, seed: int) -> nn.Module:
    """Build under ``seed``, re-initialise (He weights, random BN statistics), set eval mode."""
    generator = torch.Generator().manual_seed(seed)
    module = build()
    for layer in module.modules():
        _init_layer(layer, generator)
    return module.eval()


@torch.no_grad()
def _init_layer(layer: nn.Module, generator: torch.Generator) -> None:
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        fan_in = layer.weight[0].numel()
        std = (2.0 / fan_in) ** 0.5
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.1)
    elif isinstance(layer, nn.BatchNorm2d):
        # Kept near the identity so the scale of activations stays sane over many layers.
        n = layer.num_features
        layer.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
        layer.running_var.copy_(0.5 + torch.rand(n, generator=generator))
        layer.weight.copy_(0.75 + 0.5 * torch.rand(n, generator=generator))
        layer.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def export_legacy(
    module: nn.Module,
    shape: tuple[int, ...],
    path: str | os.PathLike[str],
    opset: int = 13,
) -> None:
    """Export ``module`` with the TorchScript (legacy) exporter to one ONNX file.

    ``shape`` is one sample's shape, e.g. ``(3, 224, 224)``; the batch axis is dynamic ("N").
    Input and output are named "input" and "logits".
    """
    x = torch.zeros((1, *shape))
    with quiet_export():
        torch.onnx.export(
            module,
            (x,),
            os.fspath(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )


def export_dynamo(
    module: nn.Module,
    shape: tuple[int, ...],
    path: str | os.PathLike[str],
    opset: int = 18,
) -> None:
    """Export ``module`` with the dynamo (``torch.export``) exporter to one self-contained ONNX
    file, with the same interface as :func:`export_legacy`: the batch axis is dynamic ("N"),
    input and output are named "input" and "logits".

    The module is traced at batch 2, since ``torch.export`` turns a dimension of size 1 into a
    constant. (``tests/zoo.py`` exports dynamo files with a static batch on purpose, so its
    exporter is not reused here.)
    """
    x = torch.zeros((2, *shape))
    with quiet_export():
        torch.onnx.export(
            module,
            (x,),
            os.fspath(path),
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("N")},),
            external_data=False,
            verbose=False,
        )
