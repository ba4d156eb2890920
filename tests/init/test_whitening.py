"""Patch whitening (airbench's first layer): the second moment against numpy's sliding windows,
the filters against the definition of whitening (responses with identity covariance, eigenvalues
from numpy), the model-wide init through hooks, and the frozen layer in a recipe's optimizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trickbag.init import init_patch_whitening, patch_second_moment, patch_whitening_filters
from trickbag.models import PatchWhiteningConv, vgg7


def correlated_images(n: int = 40, channels: int = 1, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Random images whose neighbouring pixels correlate (a box blur of noise plus a per-image
    offset), so the patch second moment is far from the identity."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, channels, size + 2, size + 2, generator=g, dtype=torch.float64)
    blurred = F.avg_pool2d(noise, 3, stride=1)
    return blurred + 0.5 * torch.randn(n, channels, 1, 1, generator=g, dtype=torch.float64)


def numpy_patches(images: np.ndarray, k: int) -> np.ndarray:
    """Every k x k patch, flattened (channel, row, column): rows of the returned matrix."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(2, 3))  # n, c, h', w', k, k
    n, c, hh, ww = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * hh * ww, c * k * k)


@pytest.mark.parametrize("channels,k", [(1, 3), (2, 2), (3, 1)])
def test_patch_second_moment_matches_numpy_sliding_windows(channels, k):
    images = correlated_images(n=7, channels=channels, size=9)
    p = numpy_patches(images.numpy(), k)
    np.testing.assert_allclose(patch_second_moment(images, k).numpy(), p.T @ p / len(p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels,k", [(1, 3), (1, 2), (2, 2)])
def test_the_filters_whiten_the_patches(channels, k):
    images = correlated_images(channels=channels)
    d = channels * k * k
    p = numpy_patches(images.numpy(), k)
    filters = patch_whitening_filters(images, k, eps=0.0)
    assert filters.shape == (2 * d, channels, k, k) and filters.dtype == torch.float32
    torch.testing.assert_close(filters[d:], -filters[:d])
    responses = p @ filters[:d].double().reshape(d, -1).numpy().T
    np.testing.assert_allclose(responses.T @ responses / len(p), np.eye(d), atol=2e-5)
    # with eps the variances are lam / (lam + eps), largest eigenvalue first (numpy's eigenvalues)
    eps = 0.05
    lam = np.sort(np.linalg.eigvalsh(p.T @ p / len(p)))[::-1]
    responses = p @ patch_whitening_filters(images, k, eps=eps)[:d].double().reshape(d, -1).numpy().T
    np.testing.assert_allclose(responses.T @ responses / len(p), np.diag(lam / (lam + eps)), atol=2e-5)


def test_bad_arguments_name_the_parameter():
    images = correlated_images()
    with pytest.raises(ValueError, match="eps must be >= 0"):
        patch_whitening_filters(images, 3, eps=-1.0)
    with pytest.raises(ValueError, match="kernel_size must be <= the image size 12"):
        patch_whitening_filters(images, 13)
    with pytest.raises(ValueError, match=r"images must be \(N, C, H, W\)"):
        patch_whitening_filters(images[0], 3)
    with pytest.raises(ValueError, match="eps must be > 0 for these images"):
        patch_whitening_filters(torch.ones(4, 1, 8, 8), 3, eps=0.0)  # every patch direction but one has no variance
    with pytest.raises(ValueError, match=r"whiten must be in \[0, 7\], got -1"):
        vgg7(whiten=-1)
    with pytest.raises(ValueError, match="whiten_eps must be >= 0"):
        vgg7(whiten=3, whiten_eps=-0.1)


@pytest.mark.parametrize("k", [2, 3])
def test_vgg7_with_whitening_replaces_the_first_conv_and_freezes_it(k):
    model = vgg7(width=4, whiten=k, pool_first=True)
    stem = model[0][0]
    assert isinstance(stem, PatchWhiteningConv) and stem.out_channels == 2 * k * k and not stem.weight.requires_grad
    assert stem.bias.requires_grad and not isinstance(model[0][1], nn.BatchNorm2d)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 7 and convs[1].in_channels == 2 * k * k and convs[1].out_channels == 8
    for size in (28, 16):
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_init_sets_every_whitening_layer_from_the_input_it_receives():
    torch.manual_seed(0)
    images = correlated_images(n=30, size=14).float()
    model = vgg7(width=4, whiten=3, pool_first=True)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model[0][0].bias.data.fill_(1.0)
    assert init_patch_whitening(model, images) == ["0.0"]
    assert model.training and torch.all(bn.running_mean == 0) and int(bn.num_batches_tracked) == 0
    torch.testing.assert_close(model[0][0].weight, patch_whitening_filters(images, 3))
    assert torch.all(model[0][0].bias == 0)
    # a whitening layer deeper in a net is measured on what reaches it, not on the images
    first = nn.Conv2d(1, 2, 3, padding=1)
    net = nn.Sequential(first, PatchWhiteningConv(2, 2, eps=1e-3))
    assert init_patch_whitening(net, images) == ["1"]
    with torch.no_grad():
        torch.testing.assert_close(net[1].weight, patch_whitening_filters(first(images), 2, eps=1e-3))
    with pytest.raises(ValueError, match=r"never reached a PatchWhiteningConv \(unused\)"):
        init_patch_whitening(SkipsItsLayer(), images)


class SkipsItsLayer(nn.Module):
    """Holds a whitening layer that its forward pass never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = PatchWhiteningConv(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_a_recipe_whitens_from_its_training_images_and_trains_only_the_bias(small_data):
    from trickbag.recipes import build, load
    from trickbag.recipes.parts import WHITENING_IMAGES, training_images_as_seen

    recipe = load("fashion-mnist", ["model.params={width: 4, pool_first: true, whiten: 2}", "train.device=cpu"])
    parts = build(recipe, data=small_data)
    stem = parts.model[0][0]
    seen = training_images_as_seen(recipe, small_data, WHITENING_IMAGES)
    assert seen.shape[0] == min(WHITENING_IMAGES, len(small_data.train_x))
    assert abs(float(seen.mean())) < 0.2 and abs(float(seen.std()) - 1) < 0.2  # standardized, as the net sees them
    torch.testing.assert_close(stem.weight, patch_whitening_filters(seen, 2).to(stem.weight.dtype))
    grouped = [p for g in parts.optimizer.param_groups for p in g["params"]]
    assert not any(p is stem.weight for p in grouped) and any(p is stem.bias for p in grouped)
    assert sum(1 for g in parts.optimizer.param_groups if g["muon"] for _ in g["params"]) == 6  # the six learned filters
    weight, bias = stem.weight.detach().clone(), stem.bias.detach().clone()
    for group in parts.optimizer.param_groups:
        group["lr"] = 0.1  # the trainer writes the schedule's lr; step 0 of a warmup is 0
    x, y = seen[:32].to(memory_format=torch.channels_last), small_data.train_y[:32]
    F.cross_entropy(parts.model(x), y).backward()
    parts.optimizer.step()
    assert torch.equal(stem.weight, weight) and not torch.equal(stem.bias, bias)
