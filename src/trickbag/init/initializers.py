"""TensorFlow-1 initializers with TF-1 names and defaults, for torch tensors.

Each function fills a tensor in place and returns it: ``he_normal(conv.weight)``.
Randomness comes from an optional ``torch.Generator`` (never hidden global state
when one is given). Shapes follow torch's layout; fans are computed as TF does for
the equivalent TF shape:

* ``(out, in)`` (Linear): ``fan_in = in``, ``fan_out = out``;
* ``(out, in, *kernel)`` (Conv): ``fan_in = in * prod(kernel)``, ``fan_out = out * prod(kernel)``
  (TF: receptive field x channels for a ``[*kernel, in, out]`` kernel);
* 1-D: ``fan_in = fan_out = n``; 0-D: 1.

``truncated_normal`` has TF's semantics: values further than 2 stddev from the mean
are redrawn (torch's ``trunc_normal_`` takes *absolute* bounds ``a, b``; we pass
``mean +- 2 * stddev``, which gives exactly that distribution). ``variance_scaling``
with ``distribution="truncated_normal"`` divides the stddev by 0.87962566103423978,
the std of a standard normal truncated at +-2, so the variance is ``scale / n`` as
TF-1.13+ does. ``orthogonal`` is computed in float64 (tensorflow#22226).

Reference: tensorflow/python/ops/init_ops.py (TF 1.15).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

from trickbag._checks import (
    check_choice,
    check_nonnegative,
    check_number,
    check_positive,
)
from trickbag.registry import Registry

__all__ = [
    "INITIALIZERS",
    "compute_fans",
    "zeros",
    "ones",
    "constant",
    "random_normal",
    "truncated_normal",
    "random_uniform",
    "uniform_unit_scaling",
    "variance_scaling",
    "orthogonal",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "TRUNCATED_NORMAL_STD",
]

Initializer = Callable[..., torch.Tensor]
INITIALIZERS: Registry[Initializer] = Registry("initializer")

#: std of N(0, 1) truncated to [-2, 2]; TF's correction in variance_scaling.
TRUNCATED_NORMAL_STD = 0.87962566103423978


def compute_fans(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a torch-layout weight shape, as TF computes them."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    receptive = math.prod(shape[2:])
    return int(shape[1]) * receptive, int(shape[0]) * receptive


@INITIALIZERS.register("zeros")
@torch.no_grad()
def zeros(tensor: torch.Tensor) -> torch.Tensor:
    """All zeros (``tf.zeros_initializer``); for biases."""
    return tensor.zero_()


@INITIALIZERS.register("ones")
@torch.no_grad()
def ones(tensor: torch.Tensor) -> torch.Tensor:
    """All ones (``tf.ones_initializer``); for normalization scales."""
    return tensor.fill_(1.0)


@INITIALIZERS.register("constant")
@torch.no_grad()
def constant(tensor: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """Every element ``value`` (``tf.constant_initializer``)."""
    return tensor.fill_(check_number("value", value))


@INITIALIZERS.register("random_normal")
@torch.no_grad()
def random_normal(
    tensor: torch.Tensor, mean: float = 0.0, stddev: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``N(mean, stddev**2)`` (``tf.random_normal_initializer``; TF-1 default stddev 1.0)."""
    check_number("mean", mean)
    check_nonnegative("stddev", stddev)
    return tensor.normal_(mean, stddev, generator=generator)


@INITIALIZERS.register("truncated_normal")
@torch.no_grad()
def truncated_normal(
    tensor: torch.Tensor, mean: float = 0.0, stddev: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``N(mean, stddev**2)`` with draws beyond 2 stddev redrawn (``tf.truncated_normal_initializer``).

    The result's std is ``0.8796 * stddev`` (the std of the truncated distribution).
    """
    check_number("mean", mean)
    check_nonnegative("stddev", stddev)
    if stddev == 0:
        return tensor.fill_(mean)
    return torch.nn.init.trunc_normal_(
        tensor, mean, stddev, mean - 2.0 * stddev, mean + 2.0 * stddev, generator=generator
    )


@INITIALIZERS.register("random_uniform")
@torch.no_grad()
def random_uniform(
    tensor: torch.Tensor, minval: float = 0.0, maxval: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``U[minval, maxval)`` (``tf.random_uniform_initializer``; TF-1 defaults 0 and 1)."""
    check_number("minval", minval)
    check_number("maxval", maxval)
    if not maxval > minval:
        raise ValueError(f"maxval must be > minval ({minval}), got {maxval}")
    return tensor.uniform_(minval, maxval, generator=generator)


@INITIALIZERS.register("uniform_unit_scaling")
@torch.no_grad()
def uniform_unit_scaling(
    tensor: torch.Tensor, factor: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``U[-m, m]``, ``m = factor * sqrt(3 / fan_in)`` (``tf.uniform_unit_scaling_initializer``).

    Keeps the input variance for a linear layer (Sussillo & Abbott 2014); TF suggests
    ``factor`` 1.43 for ReLU and 1.15 for tanh.
    """
    check_positive("factor", factor)
    fan_in, _ = compute_fans(tensor.shape)
    bound = factor * math.sqrt(3.0 / fan_in)
    return tensor.uniform_(-bound, bound, generator=generator)


Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["truncated_normal", "untruncated_normal", "uniform", "normal"]


@INITIALIZERS.register("variance_scaling")
@torch.no_grad()
def variance_scaling(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: Mode = "fan_in",
    distribution: Distribution = "truncated_normal",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Variance ``scale / n`` with ``n`` = fan_in, fan_out or their mean (``tf.variance_scaling_initializer``).

    * ``truncated_normal`` (TF-1 default; ``normal`` is TF-1's old alias): std
      ``sqrt(scale / n) / 0.8796``, truncated at 2 std;
    * ``untruncated_normal``: std ``sqrt(scale / n)``;
    * ``uniform``: ``U[-l, l]``, ``l = sqrt(3 * scale / n)``.

    he (MSRA) is ``scale=2, fan_in``; glorot (Xavier) ``scale=1, fan_avg``; lecun ``scale=1, fan_in``.
    """
    check_positive("scale", scale)
    check_choice("mode", mode, ("fan_in", "fan_out", "fan_avg"))
    check_choice("distribution", distribution, ("truncated_normal", "untruncated_normal", "uniform", "normal"))
    fan_in, fan_out = compute_fans(tensor.shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, n)
    if distribution in ("truncated_normal", "normal"):
        return truncated_normal(tensor, 0.0, math.sqrt(variance) / TRUNCATED_NORMAL_STD, generator)
    if distribution == "untruncated_normal":
        return tensor.normal_(0.0, math.sqrt(variance), generator=generator)
    bound = math.sqrt(3.0 * variance)
    return tensor.uniform_(-bound, bound, generator=generator)


@INITIALIZERS.register("orthogonal")
@torch.no_grad()
def orthogonal(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """A (semi-)orthogonal matrix times ``gain`` (``tf.orthogonal_initializer``; Saxe et al. 2014).

    The tensor is viewed as ``(shape[0], prod(shape[1:]))``; rows (or columns, whichever
    are fewer) are orthonormal. QR of a Gaussian matrix in float64, signs fixed by
    ``diag(R)`` so the result is uniform over orthogonal matrices.
    """
    check_nonnegative("gain", gain)
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal needs a tensor with >= 2 dimensions, got shape {tuple(tensor.shape)}")
    rows, cols = tensor.shape[0], tensor.numel() // tensor.shape[0]
    flat = torch.empty(max(rows, cols), min(rows, cols), dtype=torch.float64)
    flat.normal_(0.0, 1.0, generator=generator)
    q, r = torch.linalg.qr(flat)
    q *= torch.sign(torch.diagonal(r))
    if rows < cols:
        q = q.T
    tensor.copy_((gain * q).reshape(tensor.shape))
    return tensor


def _scaled(scale: float, mode: Mode, distribution: Distribution, doc: str) -> Initializer:
    def init(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return variance_scaling(tensor, scale, mode, distribution, generator)

    init.__doc__ = doc + f" ``variance_scaling(scale={scale}, mode={mode!r}, distribution={distribution!r})``."
    return init


glorot_normal = _scaled(1.0, "fan_avg", "truncated_normal", "Glorot/Xavier normal (``tf.glorot_normal_initializer``):")
glorot_uniform = _scaled(1.0, "fan_avg", "uniform", "Glorot/Xavier uniform, limit sqrt(6 / (fan_in + fan_out)):")
he_normal = _scaled(2.0, "fan_in", "truncated_normal", "He/MSRA normal (He et al. 2015), for ReLU nets:")
he_uniform = _scaled(2.0, "fan_in", "uniform", "He/MSRA uniform, limit sqrt(6 / fan_in):")
lecun_normal = _scaled(1.0, "fan_in", "truncated_normal", "LeCun normal (for SELU):")
lecun_uniform = _scaled(1.0, "fan_in", "uniform", "LeCun uniform, limit sqrt(3 / fan_in):")
for _fn, _names in (
    (glorot_normal, ("glorot_normal", "xavier_normal", "xavier")),
    (glorot_uniform, ("glorot_uniform", "xavier_uniform")),
    (he_normal, ("he_normal", "msra", "msra_normal", "kaiming_normal")),
    (he_uniform, ("he_uniform", "msra_uniform", "kaiming_uniform")),
    (lecun_normal, ("lecun_normal",)),
    (lecun_uniform, ("lecun_uniform",)),
):
    _fn.__name__ = _fn.__qualname__ = _names[0]
    INITIALIZERS.register(*_names)(_fn)
