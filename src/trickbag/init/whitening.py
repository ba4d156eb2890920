"""Patch-whitening initialization of a convolution (airbench: Jordan 2024, "94% on CIFAR-10 in
3.29 seconds on a single GPU", sec. 3.2; the idea is Coates & Ng's whitened patches, 2011).

A ``k x k`` convolution over ``c`` input channels sees patches ``p`` of ``d = c k^2`` values.
With ``S = E[p p^T] = V diag(lam) V^T`` (the patches' second moment over training images,
uncentered: the images are standardized, and the layer's trained bias absorbs any mean), the
filters are

    w_i = v_i / sqrt(lam_i + eps)   and   -w_i,      i = 1 .. d   (2d output channels)

so the first ``d`` responses have covariance ``diag(lam / (lam + eps))`` (the identity up to
``eps``): decorrelated, unit-variance features. The negated copy lets a ReLU or GELU after the
layer keep both signs. The layer's weight stays frozen (``PatchWhiteningConv``); its bias trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trickbag._checks import check_nonnegative, check_positive
from trickbag.hooks import forward_hooks
from trickbag.models.cnn import PatchWhiteningConv

__all__ = ["patch_second_moment", "patch_whitening_filters", "init_patch_whitening", "WHITENING_CHUNK"]

WHITENING_CHUNK = 512  # images per unfold: bounds the memory of the patch matrix


def patch_second_moment(images: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``E[p p^T]`` over every ``kernel_size x kernel_size`` patch inside ``images`` (N, C, H, W)
    (no padding: border patches are not made up), in float64, shape ``(C k^2, C k^2)`` with the
    patch flattened as ``(channel, row, column)``, the order of a conv weight's
    ``reshape(out, -1)``."""
    check_positive("kernel_size", kernel_size)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if min(images.shape[-2:]) < kernel_size:
        raise ValueError(f"kernel_size must be <= the image size {min(images.shape[-2:])}, got {kernel_size}")
    d = images.shape[1] * kernel_size**2
    total = torch.zeros(d, d, dtype=torch.float64)
    count = 0
    for chunk in images.split(WHITENING_CHUNK):
        patches = F.unfold(chunk.double(), kernel_size)  # (n, d, positions)
        total += torch.einsum("nip,njp->ij", patches, patches)
        count += patches.shape[0] * patches.shape[2]
    return total / count


def patch_whitening_filters(images: torch.Tensor, kernel_size: int, eps: float = 5e-4) -> torch.Tensor:
    """The ``2 d`` whitening filters for ``images`` (N, C, H, W), shape ``(2 d, C, k, k)`` with
    ``d = C k^2``: ``v_i / sqrt(lam_i + eps)`` for the eigenpairs of ``patch_second_moment``,
    largest eigenvalue first, then the same filters negated. ``eps`` (>= 0) keeps directions of
    near-zero variance from being blown up (airbench: 5e-4 on standardized CIFAR-10).

    Example::

        conv.weight.data.copy_(patch_whitening_filters(train_images[:5000], 3))
    """
    check_nonnegative("eps", eps)
    moment = patch_second_moment(images, kernel_size)
    eigenvalues, eigenvectors = torch.linalg.eigh(moment)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0.0), eigenvectors.flip(1)
    if eps == 0 and float(eigenvalues[-1]) <= 1e-12 * float(eigenvalues[0]):
        raise ValueError("eps must be > 0 for these images: some patch directions have zero variance")
    filters = (eigenvectors / torch.sqrt(eigenvalues + eps)).T  # row i: v_i / sqrt(lam_i + eps)
    filters = filters.reshape(-1, images.shape[1], kernel_size, kernel_size)
    return torch.cat([filters, -filters]).float()


class _Captured(Exception):
    """Raised by the hook to end the forward pass once the layer's input is in hand."""


def init_patch_whitening(model: nn.Module, images: torch.Tensor) -> list[str]:
    """Set the weight of every ``PatchWhiteningConv`` in ``model`` from the input it receives
    when ``images`` run through the model (for a first layer: the images themselves), in
    forward order, each with its own ``eps``; its bias is zeroed. Runs without gradients and
    in eval mode (BatchNorm statistics do not move). Returns the names of the layers set.

    Example::

        model = vgg7(whiten=3)
        init_patch_whitening(model, standardized_train_images[:5000])
    """
    names = {id(m): n for n, m in model.named_modules()}
    pending = [m for m in model.modules() if isinstance(m, PatchWhiteningConv)]
    done: list[str] = []
    was_training = model.training
    model.eval()
    try:
        while pending:
            captured: list[tuple[nn.Module, torch.Tensor]] = []

            def hook(module: nn.Module, inputs, _output) -> None:
                if module in pending:
                    captured.append((module, inputs[0].detach()))
                    raise _Captured

            with torch.no_grad(), forward_hooks(pending, hook):
                try:
                    model(images)
                except _Captured:
                    pass
            if not captured:
                raise ValueError("init_patch_whitening: the forward pass never reached a PatchWhiteningConv "
                                 f"({', '.join(names[id(m)] for m in pending)})")
            layer, inputs = captured[0]
            weight = patch_whitening_filters(inputs.float().cpu(), layer.kernel_size[0], layer.eps)
            with torch.no_grad():
                layer.weight.copy_(weight.to(layer.weight.dtype))
                if layer.bias is not None:
                    layer.bias.zero_()
            pending.remove(layer)
            done.append(names[id(layer)])
    finally:
        model.train(was_training)
    return done
