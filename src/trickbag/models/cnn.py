"""A small CNN family for 28x28 / 32x32 images (seed 003: BN, ReLU, 1x1 and depthwise
options, global average pooling instead of big fully connected layers).

``small_cnn(widths=(32, 64, 128), depth=1)``: a stem conv, then one stage per width:
``depth`` conv-BN-ReLU blocks, then 2x2 max pooling (except after the last stage),
then global pooling and a linear head. ``separable=True`` replaces 3x3 convs after the
stem with depthwise 3x3 + pointwise 1x1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trickbag._checks import check_choice, check_nonnegative, check_positive, check_range
from trickbag.models.registry import MODELS

__all__ = ["small_cnn", "conv_bn_act", "tf_tutorial_cnn", "vgg7", "PatchWhiteningConv", "SqueezeExcite"]


def conv_bn_act(cin: int, cout: int, kernel: int = 3, stride: int = 1, bn: bool = True, act: type = nn.ReLU, groups: int = 1) -> nn.Sequential:
    """conv (no bias when followed by BN) -> BN -> activation."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(_act_layer(act))
    return nn.Sequential(*layers)


def _act_layer(act: type) -> nn.Module:
    """An activation module, in place where the activation allows it."""
    return act(inplace=True) if act in (nn.ReLU, nn.SiLU) else act()


class PatchWhiteningConv(nn.Conv2d):
    """A ``k x k`` convolution with ``2 C k^2`` outputs whose weight is frozen (``requires_grad``
    false: no optimizer sees it) and set from data by ``trickbag.init.init_patch_whitening``
    (airbench's first layer); its bias trains. Padding ``(k - 1) // 2``: odd ``k`` keeps the
    image size, ``k = 2`` (airbench's) shrinks it by one. Until initialized, the weight is
    PyTorch's default random init, frozen: recipes initialize it at build time."""

    def __init__(self, in_channels: int, kernel_size: int = 3, eps: float = 5e-4) -> None:
        check_positive("whiten", kernel_size)
        check_nonnegative("whiten_eps", eps)
        super().__init__(in_channels, 2 * in_channels * kernel_size**2, kernel_size, padding=(kernel_size - 1) // 2, bias=True)
        self.eps = float(eps)
        self.weight.requires_grad_(False)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018, "Squeeze-and-Excitation Networks"): each
    channel of ``x`` is scaled by a gate computed from every channel's spatial mean,
    ``x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)``, with ``W1: C -> max(C // reduction, 4)``.
    It costs almost no multiply-adds (two small matrices per image) and lets the net weigh its
    features per image. ``W2`` and ``b2`` start at zero, so a fresh gate is 0.5 everywhere:
    the layer starts as its input scaled by one half, which the next layer's BN absorbs."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_positive("se", reduction)
        hidden = max(channels // reduction, 4)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)
        nn.init.zeros_(self.excite.weight)
        nn.init.zeros_(self.excite.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)  # keeps x's dtype (a bf16 mean casts the whole map)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(squeezed))))
        return x * gate.to(x.dtype)[:, :, None, None]


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def _activation(name: str) -> type:
    """The activation class for ``relu``, ``gelu`` or ``silu`` (a clear error otherwise)."""
    return _ACTIVATIONS[check_choice("activation", name, tuple(_ACTIVATIONS))]


@MODELS.register("small_cnn")
def small_cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    depth: int = 1,
    bn: bool = True,
    separable: bool = False,
    pool: str = "max",
    dropout: float = 0.0,
    activation: str = "relu",
    stem_pool: bool = False,
) -> nn.Sequential:
    """The small CNN family; see the module docstring.

    Args:
        in_channels, num_classes: input channels and classes.
        widths: channels of each stage (>= 1 stage); a 2x2 max-pool separates stages.
        depth: conv blocks per stage (>= 1).
        bn: batch normalization after each conv.
        separable: depthwise + pointwise convs instead of full 3x3 (after the stem).
        pool: global pooling, ``max`` or ``avg``.
        dropout: before the head, in [0, 1).
        activation: ``relu``, ``gelu`` or ``silu``.
        stem_pool: 2x2 max-pool right after the stem, so every stage runs at half
            resolution (about 4x fewer FLOPs per stage: the fast CPU setting).
    """
    widths = tuple(int(w) for w in widths)
    if not widths:
        raise ValueError("widths must name at least one stage")
    for w in widths:
        check_positive("widths", w)
    check_positive("depth", depth)
    check_choice("pool", pool, ("max", "avg"))
    check_range("dropout", dropout, 0.0, 1.0, high_open=True)
    act = _activation(activation)
    layers: list[nn.Module] = [conv_bn_act(in_channels, widths[0], bn=bn, act=act)]
    if stem_pool:
        layers.append(nn.MaxPool2d(2))
    cin = widths[0]
    for i, w in enumerate(widths):
        for _ in range(depth):
            if separable:
                layers += [conv_bn_act(cin, cin, groups=cin, bn=bn, act=act), conv_bn_act(cin, w, kernel=1, bn=bn, act=act)]
            else:
                layers.append(conv_bn_act(cin, w, bn=bn, act=act))
            cin = w
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(cin, num_classes))
    return nn.Sequential(*layers)


@MODELS.register("vgg7")
def vgg7(
    in_channels: int = 1,
    num_classes: int = 10,
    width: int = 16,
    activation: str = "relu",
    pool: str = "max",
    pool_first: bool = False,
    channels: Sequence[int] | None = None,
    whiten: int = 0,
    whiten_eps: float = 5e-4,
    se: int = 0,
    se_layers: int = 7,
) -> nn.Sequential:
    """Seven 3x3 conv-BN-activation layers at full resolution, VGG style: the right-sized
    net for 28x28 images (issue #10's reference net, a skilled user's choice).

    Channels, with 2x2 max-pools between the pairs (28 -> 14 -> 7 -> 3)::

        in -> W -> 2W | pool | 2W -> 4W | pool | 4W -> 8W | pool | 8W -> global pool -> linear

    (i.e. convs in->W, W->2W, 2W->2W, 2W->4W, 4W->4W, 4W->8W, 8W->8W). About 16M
    multiply-adds per 28x28 image at W = 16, 0.3M parameters.

    Args:
        in_channels, num_classes: input channels and classes.
        width: W, the first layer's channels (>= 1).
        activation: ``relu``, ``gelu`` (airbench's choice) or ``silu``.
        pool: the global pooling before the head, ``max`` or ``avg``.
        pool_first: conv -> max-pool -> BN -> activation in the three layers that end a
            stage (airbench's order): BN and the activation then run on a quarter of the
            pixels. Max-pool commutes with a monotone activation, and with BN where its
            scale is positive, so the net computes nearly the same function for less.
        channels: the seven convs' output channels, overriding ``width`` (default
            ``[W, 2W, 2W, 4W, 4W, 8W, 8W]``): e.g. more channels in the cheap 7x7 and 3x3
            layers than the doubling rule gives.
        whiten: ``k > 0`` replaces the first conv-BN-activation by a frozen ``k x k``
            patch-whitening conv with ``2 in k^2`` channels and its activation, no BN
            (airbench; ``trickbag.init.whitening``: recipes set its filters from the training
            images at build time); the first entry of ``channels`` / ``W`` is then unused.
            0 (default) keeps the learned first conv.
        whiten_eps: the whitening's ``eps`` (>= 0), added to each patch eigenvalue.
        se: ``r > 0`` ends every conv layer with a squeeze-and-excitation gate of reduction
            ``r`` (``SqueezeExcite``, after the activation); 0 (default) adds none.
        se_layers: how many of the seven conv layers, counted from the last, get the gate
            (1 to 7, default all; a whitening stem gets none): the late layers' maps are
            small, so their gates cost less time.
    """
    check_positive("width", width)
    check_range("whiten", whiten, 0, 7)
    check_choice("pool", pool, ("max", "avg"))
    check_nonnegative("se", se)
    check_range("se_layers", se_layers, 1, 7)
    act = _activation(activation)
    w = int(width)
    c = [w, 2 * w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w] if channels is None else [int(x) for x in channels]
    if len(c) != 7:
        raise ValueError(f"channels must list 7 output channels (one per conv), got {len(c)}")
    for x in c:
        check_positive("channels", x)
    plan = [(in_channels, c[0]), (c[0], c[1]), "pool", (c[1], c[2]), (c[2], c[3]), "pool", (c[3], c[4]), (c[4], c[5]), "pool",
            (c[5], c[6])]
    layers: list[nn.Module] = []
    conv_index = 0  # of the seven conv layers (a whitening stem stands for the first)
    if whiten:
        stem = PatchWhiteningConv(in_channels, whiten, whiten_eps)
        layers.append(nn.Sequential(stem, _act_layer(act)))
        plan[:2] = [(stem.out_channels, c[1])]
        conv_index = 1
    for step, following in zip(plan, plan[1:] + [None]):
        if step == "pool":
            if not pool_first:
                layers.append(nn.MaxPool2d(2))
        else:
            block = conv_bn_act(*step, act=act)
            if pool_first and following == "pool":
                conv, bn, activation = block
                block = nn.Sequential(conv, nn.MaxPool2d(2), bn, activation)
            if se and conv_index >= 7 - se_layers:
                block.append(SqueezeExcite(step[1], int(se)))
            layers.append(block)
            conv_index += 1
    layers += [nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[6], num_classes)]
    return nn.Sequential(*layers)


@MODELS.register("tf_tutorial_cnn")
def tf_tutorial_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Sequential:
    """The TensorFlow tutorial CNN (the plain baseline): conv5x5-32, pool, conv5x5-64, pool,
    fc1024, dropout 0.4, fc."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side * side, 1024), nn.ReLU(), nn.Dropout(0.4), nn.Linear(1024, num_classes),
    )
