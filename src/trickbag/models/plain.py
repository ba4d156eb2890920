"""Plain (non-residual, no normalization) deep nets: the setting where initialization
decides whether the signal survives depth (Glorot & Bengio 2010; He et al. 2015)."""

from __future__ import annotations

from torch import nn

from trickbag._checks import check_choice, check_positive
from trickbag.models.registry import MODELS

__all__ = ["plain_mlp", "plain_cnn", "ACTIVATIONS"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "selu": nn.SELU, "linear": nn.Identity}


@MODELS.register("plain_mlp")
def plain_mlp(depth: int = 20, width: int = 256, in_features: int = 784, num_classes: int = 10, activation: str = "relu") -> nn.Sequential:
    """``depth`` linear layers of ``width`` units with ``activation`` between them (no BN).

    Input ``(B, in_features)`` or images ``(B, C, H, W)`` (flattened).
    """
    check_positive("depth", depth)
    check_positive("width", width)
    check_choice("activation", activation, tuple(ACTIVATIONS))
    layers: list[nn.Module] = [nn.Flatten()]
    features = in_features
    for _ in range(depth - 1):
        layers += [nn.Linear(features, width), ACTIVATIONS[activation]()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


@MODELS.register("plain_cnn")
def plain_cnn(depth: int = 20, width: int = 32, in_channels: int = 1, num_classes: int = 10, activation: str = "relu") -> nn.Sequential:
    """``depth - 1`` 3x3 convolutions of ``width`` channels (no BN), global average pooling, a linear head."""
    check_positive("depth", depth)
    check_positive("width", width)
    check_choice("activation", activation, tuple(ACTIVATIONS))
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(depth - 1):
        layers += [nn.Conv2d(channels, width, 3, padding=1), ACTIVATIONS[activation]()]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


