"""Model zoo for the tests: one table of tiny torch ReLU networks, and how to export them to ONNX.

A new architecture is one row in ``ARCHITECTURES``. Every module is randomly initialised under a
seed, in eval mode, and returns ``(N, 10)`` logits. BatchNorm running statistics and affine
parameters are randomised too, so that a wrong BN fold changes the outputs visibly.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pathonnx.learn.export import quiet_export  # noqa: F401  (tests call zoo.quiet_export)

# --------------------------------------------------------------------------------------------
# Building blocks


def conv_bn(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1
) -> list[nn.Module]:
    """Conv (no bias, BN supplies it) followed by BN; 'same' padding for odd k."""
    pad = dilation * (k // 2)
    return [
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class Head(nn.Sequential):
    """Global average pooling, flatten, Linear to 10 logits."""

    def __init__(self, cin: int, classes: int = 10):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(cin, classes))


# --------------------------------------------------------------------------------------------
# ResNet


class BasicBlock(nn.Module):
    """Conv-BN-ReLU-Conv-BN plus shortcut (identity, or strided 1x1 projection), Add, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout, 3)
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*conv_bn(cin, cout, 1, stride))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 8), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.head = Head(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


# --------------------------------------------------------------------------------------------
# VGG with BatchNorm


class VGGBN(nn.Module):
    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in (8, 8, "M", 16, "M", 16, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [*conv_bn(cin, v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(16 * 4 * 4, 32),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(32, 10),
        )
        # A trailing Softmax, for testing that the loader strips it.
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(x))
        return torch.softmax(logits, 1) if self.softmax else logits


# --------------------------------------------------------------------------------------------
# DenseNet (pre-activation, bottleneck)


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1-BN-ReLU-Conv3x3; the output is concatenated onto the input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, 2 * growth, 1, bias=False),
            nn.BatchNorm2d(2 * growth),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The next layer's leading BN then reads a Concat, so it cannot fold into a conv.
        return torch.cat([x, self.body(x)], 1)


def transition(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.AvgPool2d(2),
    )


class DenseNet(nn.Module):
    def __init__(self, growth: int = 4) -> None:
        super().__init__()
        c = 8
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False)]
        for block in range(2):
            for _ in range(3):
                layers.append(DenseLayer(c, growth))
                c += growth
            if block == 0:
                layers.append(transition(c, c // 2))
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = Head(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------------
# MobileNetV2


class ClampReLU6(nn.Module):
    """ReLU6 written as torch.clamp."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, 6.0)


class MinMaxReLU6(nn.Module):
    """ReLU6 written by hand as min(max(x, 0), 6), so that Max/Min nodes appear in the export."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("zero", torch.zeros(()), persistent=False)
        self.register_buffer("six", torch.full((), 6.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(x, self.zero), self.six)


RELU6_FORMS: dict[str, Callable[[], nn.Module]] = {
    "relu6": lambda: nn.ReLU6(inplace=True),
    "clamp": ClampReLU6,
    "minmax": MinMaxReLU6,
    "hardtanh": lambda: nn.Hardtanh(0.0, 6.0),
}


class InvertedResidual(nn.Module):
    """1x1 expand (BN, ReLU6), 3x3 depthwise (BN, ReLU6), 1x1 linear projection (BN)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: str = "relu6"):
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            *conv_bn(cin, hidden, 1),
            RELU6_FORMS[act](),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden),
            RELU6_FORMS[act](),
            *conv_bn(hidden, cout, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(3, 8, 3, 2),
            nn.ReLU6(inplace=True),
            InvertedResidual(8, 8, 1, 2, act="relu6"),
            InvertedResidual(8, 16, 2, 3, act="clamp"),
            InvertedResidual(16, 16, 1, 3, act="minmax"),
            *conv_bn(16, 32, 1),
            RELU6_FORMS["hardtanh"](),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(0.2), nn.Linear(32, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------------
# Inception


def basic_conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn(cin, cout, k), nn.ReLU(inplace=True))


class InceptionBlock(nn.Module):
    """Four branches concatenated: 1x1; 1x1-3x3; 1x1-3x3-3x3; pool-1x1 (max or average pool)."""

    def __init__(self, cin: int, pool: str = "max"):
        super().__init__()
        self.b1 = basic_conv(cin, 8, 1)
        self.b3 = nn.Sequential(basic_conv(cin, 6, 1), basic_conv(6, 8, 3))
        self.b5 = nn.Sequential(basic_conv(cin, 4, 1), basic_conv(4, 6, 3), basic_conv(6, 6, 3))
        # count_include_pad=False makes the border divisor vary per position.
        pooling = (
            nn.MaxPool2d(3, 1, 1)
            if pool == "max"
            else nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        )
        self.bpool = nn.Sequential(pooling, basic_conv(cin, 6, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bpool(x)], 1)


class Inception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(basic_conv(3, 12, 3), nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(
            InceptionBlock(12, "max"), nn.MaxPool2d(3, 2, 1), InceptionBlock(28, "avg")
        )
        self.head = Head(28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# --------------------------------------------------------------------------------------------
# ShuffleNet (v1 units)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    # Written the usual way, from x's own shape, so the legacy export has Shape/Gather chains.
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Grouped 1x1, shuffle, depthwise 3x3, grouped 1x1; Add (stride 1) or Concat with AvgPool."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int = 2):
        super().__init__()
        self.stride = stride
        self.groups = groups
        branch_out = cout - cin if stride == 2 else cout
        mid = cout // 4
        self.compress = nn.Sequential(*conv_bn(cin, mid, 1, groups=groups), nn.ReLU(inplace=True))
        self.depthwise = nn.Sequential(*conv_bn(mid, mid, 3, stride, groups=mid))
        self.expand = nn.Sequential(*conv_bn(mid, branch_out, 1, groups=groups))
        self.pool = nn.AvgPool2d(3, 2, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.compress(x)
        y = channel_shuffle(y, self.groups)
        y = self.expand(self.depthwise(y))
        if self.stride == 2:
            return self.relu(torch.cat([self.pool(x), y], 1))
        return self.relu(x + y)


class ShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 16), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.units = nn.Sequential(ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1))
        self.head = Head(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(self.stem(x)))


# --------------------------------------------------------------------------------------------
# Small single-feature rows, for engine tests of one op each.


def three_convs(width: int, second: dict, third: dict) -> nn.Module:
    """A conv-BN stem, a conv-BN pair with ``second``'s options and a plain 3x3 conv with
    ``third``'s, each followed by ReLU, then the head."""
    return nn.Sequential(
        *conv_bn(3, 8),
        nn.ReLU(),
        *conv_bn(8, width, 3, **second),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, **third),
        nn.ReLU(),
        Head(width),
    )


def dilated() -> nn.Module:
    return three_convs(8, {"dilation": 2}, {"padding": 3, "dilation": 3})


def grouped() -> nn.Module:
    return three_convs(16, {"groups": 2}, {"padding": 1, "groups": 4})


def convtranspose() -> nn.Module:
    return nn.Sequential(
        *conv_bn(3, 8, 3, 2),
        nn.ReLU(),
        # stride 2 with output_padding=1 exactly undoes the stride-2 conv's downsampling.
        nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        *conv_bn(8, 8, 3, 2),
        nn.ReLU(),
        Head(8),
    )


def resize_nearest() -> nn.Module:
    return nn.Sequential(
        *conv_bn(3, 8, 3, 2),
        nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        *conv_bn(8, 8),
        nn.ReLU(),
        Head(8),
    )


def avgpool_pad() -> nn.Module:
    return nn.Sequential(
        *conv_bn(3, 8),
        nn.ReLU(),
        nn.AvgPool2d(3, 1, 1, count_include_pad=True),
        *conv_bn(8, 8),
        nn.ReLU(),
        nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        Head(8),
    )


def hardsigmoid() -> nn.Module:
    """MobileNetV3's hard sigmoid (exported as HardSigmoid, alpha 1/6, beta 1/2) as a gate,
    between ReLUs; the first convolution's weights are scaled so that its units reach both
    saturations (below -3 and above 3) as well as the slope between, and so do the last one's."""
    first, last = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
    with torch.no_grad():
        first.weight.mul_(8.0)
        last.weight.mul_(40.0)
    return nn.Sequential(
        first, nn.Hardsigmoid(), *conv_bn(8, 8), nn.ReLU(), last, nn.Hardsigmoid(), Head(8)
    )


def leaky_prelu() -> nn.Module:
    prelu = nn.PReLU(num_parameters=8)
    # Distinct per-channel slopes, so a broadcast error in the slope shows.
    with torch.no_grad():
        prelu.weight.uniform_(0.05, 0.4)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(8, 8, 3, padding=1),
        prelu,
        Head(8),
    )


class PadMaxPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*conv_bn(3, 8), nn.ReLU())
        self.conv2 = nn.Sequential(*conv_bn(8, 8))
        self.conv3 = nn.Sequential(*conv_bn(8, 8), nn.ReLU())
        self.zero_pad = nn.ZeroPad2d(1)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        # After a ReLU, zero padding is as neutral for the max as -inf padding.
        x = F.max_pool2d(self.zero_pad(x), 3, 2)
        x = self.conv2(x)
        # Pre-activation values can be negative here: only -inf padding is neutral.
        x = F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, 1)
        x = F.max_pool2d(self.conv3(x), 3, 2, padding=1)
        return self.head(x)


def ceil_pool() -> nn.Module:
    """Max-pools whose windows never overlap (transposed by MaxUnpool): one in ceil mode on an
    odd map, one with an uneven kernel, one padded."""
    return nn.Sequential(
        *conv_bn(3, 6),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),  # 15 -> 8, the last window half outside
        *conv_bn(6, 8),
        nn.ReLU(),
        nn.MaxPool2d((2, 3), (2, 3)),  # 8 -> 4 x 2 (the last column dropped)
        *conv_bn(8, 8),
        nn.ReLU(),
        nn.MaxPool2d(2, 2, padding=1),  # 4 x 2 -> 3 x 2
        nn.Flatten(1),
        nn.Linear(8 * 3 * 2, 10),
    )


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(1),
        nn.Linear(3 * 8 * 8, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )


# --------------------------------------------------------------------------------------------
# The table


def randomize_batchnorm(module: nn.Module, seed: int) -> None:
    """Give every BatchNorm random running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                c = bn.num_features
                bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                bn.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                bn.bias.copy_(torch.randn(c, generator=gen) * 0.2)


def seeded(build: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    """Turn a plain constructor into a factory(seed) returning a reproducible eval-mode module."""

    def factory(seed: int = 0) -> nn.Module:
        # fork_rng: building a model must not disturb the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = build()
        randomize_batchnorm(module, seed + 1)
        return module.eval()

    return factory


@dataclass(frozen=True)
class Arch:
    """One row: a name, factory(seed) -> eval-mode module, the input shape without batch."""

    name: str
    factory: Callable[[int], nn.Module]
    input_shape: tuple[int, ...]


_ROWS = [
    Arch("resnet", seeded(ResNet), (3, 32, 32)),
    Arch("vgg_bn", seeded(VGGBN), (3, 32, 32)),
    Arch("vgg_bn_softmax", seeded(lambda: VGGBN(softmax=True)), (3, 32, 32)),
    Arch("densenet", seeded(DenseNet), (3, 32, 32)),
    Arch("mobilenetv2", seeded(MobileNetV2), (3, 32, 32)),
    Arch("inception", seeded(Inception), (3, 32, 32)),
    Arch("shufflenet", seeded(ShuffleNet), (3, 32, 32)),
    Arch("dilated", seeded(dilated), (3, 16, 16)),
    Arch("grouped", seeded(grouped), (3, 16, 16)),
    Arch("convtranspose", seeded(convtranspose), (3, 16, 16)),
    Arch("resize_nearest", seeded(resize_nearest), (3, 16, 16)),
    Arch("avgpool_pad", seeded(avgpool_pad), (3, 16, 16)),
    Arch("leaky_prelu", seeded(leaky_prelu), (3, 16, 16)),
    Arch("hardsigmoid", seeded(hardsigmoid), (3, 16, 16)),
    Arch("pad_maxpool", seeded(PadMaxPool), (3, 16, 16)),
    Arch("ceil_pool", seeded(ceil_pool), (3, 15, 15)),
    Arch("mlp", seeded(mlp), (3, 8, 8)),
]

ARCHITECTURES: dict[str, Arch] = {arch.name: arch for arch in _ROWS}

MAIN_ARCHITECTURES = ("resnet", "vgg_bn", "densenet", "mobilenetv2", "inception", "shufflenet")

# Every main architecture exports with all three; no combination had to be left out.
ALL_EXPORTS: list[tuple[str, str, int]] = [
    (name, exporter, opset)
    for name in MAIN_ARCHITECTURES
    for exporter, opset in (("legacy", 13), ("legacy", 17), ("dynamo", 18))
]


# --------------------------------------------------------------------------------------------
# Export and reference outputs


def example_input(arch_name: str, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A standard-normal float32 input of shape (batch, *input_shape) for row ``arch_name``."""
    shape = (batch, *ARCHITECTURES[arch_name].input_shape)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def export_module(
    module: nn.Module,
    x: np.ndarray,
    path: str | os.PathLike[str],
    exporter: str = "legacy",
    opset: int = 13,
    dynamic_batch: bool = True,
) -> None:
    """Export ``module`` traced at ``x`` to ``path`` as one self-contained ONNX file."""
    args = (torch.from_numpy(x),)
    if exporter == "legacy":
        # The legacy exporter only writes external data past 2 GB; these files are tiny.
        dynamic_axes = {"input": {0: "N"}, "logits": {0: "N"}} if dynamic_batch else None
        torch.onnx.export(
            module,
            args,
            os.fspath(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
        )
    elif exporter == "dynamo":
        # Static batch on purpose: dynamo then hard-codes the batch size in Reshape shapes.
        torch.onnx.export(
            module,
            args,
            os.fspath(path),
            dynamo=True,
            opset_version=max(opset, 18),
            input_names=["input"],
            output_names=["logits"],
            external_data=False,
            verbose=False,
        )
    else:
        raise ValueError(f"unknown exporter {exporter!r}; use 'legacy' or 'dynamo'")


def export(
    arch_name: str,
    path: str | os.PathLike[str],
    exporter: str = "legacy",
    opset: int = 13,
    seed: int = 0,
    batch: int = 1,
    dynamic_batch: bool = True,
) -> tuple[nn.Module, np.ndarray]:
    """Build row ``arch_name`` under ``seed`` and export it; return the module and the input."""
    module = ARCHITECTURES[arch_name].factory(seed)
    x = example_input(arch_name, batch, seed)
    with quiet_export():
        export_module(module, x, path, exporter, opset, dynamic_batch)
    return module, x


def torch_logits(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """The module's output on ``x`` in float32."""
    with torch.no_grad():
        return module.eval()(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def torch_logits64(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """The module's output on ``x`` computed in float64 (on a copy; the module is unchanged)."""
    module64 = copy.deepcopy(module).double().eval()
    with torch.no_grad():
        return module64(torch.from_numpy(np.asarray(x, np.float64))).numpy()
