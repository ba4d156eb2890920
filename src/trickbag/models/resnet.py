"""ResNet with the Bag-of-Tricks tweaks (He et al. 2019, sec. 4, fig. 2).

* ``A``: the original: stride 2 in the first 1x1 of a bottleneck's path A; 7x7 stem.
* ``B``: stride 2 moved to the 3x3 conv of path A (no information thrown away by a
  strided 1x1).
* ``C``: B + the 7x7 stem replaced by three 3x3 convs (32, 32, 64).
* ``D``: C + the downsampling shortcut is 2x2 average pooling then a 1x1 conv.

Stems: ``imagenet`` (as above), ``cifar`` (one 3x3 conv: 32x32 input) and ``mnist``
(one 3x3 conv: 28x28 input), optionally followed by a 2x2 max-pool (``stem_pool``). Blocks have ``zero_init_last()`` so
``trickbag.init.zero_gamma`` zeroes their last BN gamma.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trickbag._checks import check_choice, check_positive
from trickbag.models.registry import MODELS

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet"]


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


def _shortcut(cin: int, cout: int, stride: int, variant: str) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    if variant == "D" and stride > 1:  # ResNet-D: avg-pool then 1x1, no strided 1x1
        return nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                             nn.Conv2d(cin, cout, 1, bias=False), _bn(cout))
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout))


class BasicBlock(nn.Module):
    """3x3 -> 3x3 with an identity or projection shortcut."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, variant: str = "D") -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn(cout)
        self.shortcut = _shortcut(cin, cout, stride, variant)
        self.act = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4); variant A strides the first 1x1, B/C/D the 3x3."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, variant: str = "D") -> None:
        super().__init__()
        cout = width * self.expansion
        s1, s2 = (stride, 1) if variant == "A" else (1, stride)
        self.conv1 = nn.Conv2d(cin, width, 1, s1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, s2, 1, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = _bn(cout)
        self.shortcut = _shortcut(cin, cout, stride, variant)
        self.act = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        return self.act(self.bn3(self.conv3(out)) + self.shortcut(x))


def _stem(in_channels: int, width: int, stem: str, variant: str, pool: bool = False) -> nn.Sequential:
    if stem in ("cifar", "mnist"):
        layers = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), _bn(width), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))
    if variant in ("C", "D"):  # three 3x3 convs replace the 7x7
        half = width // 2
        return nn.Sequential(
            nn.Conv2d(in_channels, half, 3, 2, 1, bias=False), _bn(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, 1, 1, bias=False), _bn(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, width, 3, 1, 1, bias=False), _bn(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
    return nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), _bn(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))


class ResNet(nn.Module):
    """Stem, stages of residual blocks (stride 2 at each stage after the first), global
    average pooling, dropout, linear head."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], widths: Sequence[int],
                 in_channels: int = 3, num_classes: int = 1000, stem: str = "imagenet", variant: str = "D",
                 stem_width: int = 64, dropout: float = 0.0, stem_pool: bool = False) -> None:
        super().__init__()
        self.stem = _stem(in_channels, stem_width, stem, variant, stem_pool)
        stages, cin = [], stem_width
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, w, 2 if (i > 0 and j == 0) else 1, variant))
                cin = w * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.stages(self.stem(x)))))


_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
           101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}


@MODELS.register("resnet")
def resnet(depth: int = 18, variant: str = "D", stem: str = "imagenet", in_channels: int = 3, num_classes: int = 1000,
           width: int = 64, layers: Sequence[int] | None = None, block: str | None = None, dropout: float = 0.0,
           stem_pool: bool = False) -> ResNet:
    """ResNet-``depth`` (18/34/50/101/152) with tweak ``variant`` A-D and a ``stem``.

    ``layers`` and ``block`` (``basic``/``bottleneck``) override the depth's layout for
    small custom nets (e.g. ``layers=(1, 1, 1), width=32, stem="mnist"`` for Fashion-MNIST).
    Widths double at each stage from ``width``. ``stem_pool`` adds a 2x2 max-pool after the
    small (cifar/mnist) stems: every stage then runs at half resolution (CPU-friendly).
    """
    check_choice("variant", variant, ("A", "B", "C", "D"))
    check_choice("stem", stem, ("imagenet", "cifar", "mnist"))
    check_positive("width", width)
    if layers is None:
        if depth not in _DEPTHS:
            raise ValueError(f"depth must be one of {sorted(_DEPTHS)}, got {depth} (or give layers=...)")
        block_cls, layers = _DEPTHS[depth]
    else:
        block_cls = BasicBlock
    if block is not None:
        block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[check_choice("block", block, ("basic", "bottleneck"))]
    widths = [width * 2**i for i in range(len(layers))]
    return ResNet(block_cls, layers, widths, in_channels, num_classes, stem, variant, stem_width=width, dropout=dropout,
                  stem_pool=stem_pool)
