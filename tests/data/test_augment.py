from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trickbag.data import augment as A

try:
    import kornia  # noqa: F401

    KORNIA_WHY = ""
except ImportError as exc:  # pragma: no cover
    KORNIA_WHY = f"kornia is not installed ({exc}); install the 'aug' or 'dev' extra"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=64, c=1, h=28, w=28, seed=0):
    return torch.rand(n, c, h, w, generator=gen(seed))


def test_flip_mirrors_each_image_or_leaves_it():
    x = images(4000, h=8, w=8)
    y = A.random_flip(x, gen(1), p=0.3)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    same = (y == x).flatten(1).all(1)
    assert bool((flipped | same).all())
    n = len(x)
    assert abs(float(flipped.float().mean()) - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)


def test_pad_crop_is_a_translation_with_zero_fill():
    x = images(300, h=10, w=10) + 1.0  # strictly positive so the zero padding is visible
    y = A.pad_crop(x, gen(2), pad=2)
    padded = F.pad(x, (2, 2, 2, 2))
    seen = set()
    for i in range(len(x)):
        match = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(y[i], padded[i, :, dy : dy + 10, dx : dx + 10])]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) == 25  # every offset in [-2, 2]^2 occurs


def test_augmentations_are_reproducible_from_the_generator():
    x = images()
    for fn in (A.random_flip, A.pad_crop):
        assert torch.equal(fn(x, gen(5)), fn(x, gen(5)))
        assert not torch.equal(fn(x, gen(5)), fn(x, gen(6)))


def test_pca_lighting_adds_one_color_shift_per_image():
    x = images(500, c=3, h=4, w=4)
    eigval, eigvec = A.pca_basis((x * 255).to(torch.uint8))
    assert torch.allclose(eigvec.T @ eigvec, torch.eye(3), atol=1e-5)
    y = A.pca_lighting(x, gen(3), eigval=eigval, eigvec=eigvec, alphastd=0.1)
    shift = (y - x).flatten(2)
    assert torch.allclose(shift, shift[:, :, :1].expand_as(shift), atol=1e-6)  # same shift at every pixel
    # shift = V (alpha * lambda): project back to get alpha_j * lambda_j ~ N(0, (0.1 lambda_j)^2)
    coef = shift[:, :, 0] @ eigvec
    std = coef.std(0) / eigval.clamp_min(1e-12)
    n = len(x)
    assert torch.all((std - 0.1).abs() < 6 * 0.1 / math.sqrt(2 * n))
    with pytest.raises(ValueError, match="pca_lighting needs eigval and eigvec"):
        A.pca_lighting(x, gen(0))


@pytest.mark.skipif(bool(KORNIA_WHY), reason=KORNIA_WHY or "kornia present")
def test_kornia_ops_keep_shape_and_are_reproducible():
    x = images(16, c=3, h=32, w=32)
    for fn in (A.random_resized_crop, A.color_jitter, A.random_erasing):
        a, b = fn(x, gen(7)), fn(x, gen(7))
        assert a.shape == x.shape and torch.equal(a, b), fn.__name__
        assert not torch.equal(a, x)


@pytest.mark.skipif(bool(KORNIA_WHY), reason=KORNIA_WHY or "kornia present")
def test_brightness_jitter_stays_in_its_range():
    x = torch.full((200, 3, 8, 8), 0.5)
    y = A.color_jitter(x, gen(1), brightness=0.4, contrast=0.0, saturation=0.0)
    factor = y.mean(dim=(1, 2, 3)) / 0.5  # kornia's brightness is additive in [1 - v, 1 + v] - 1
    assert float(factor.min()) >= 0.2 - 1e-5 and float(factor.max()) <= 1.8 + 1e-5
    assert float(factor.std()) > 0.1


def test_build_augment_with_did_you_mean():
    aug = A.build_augment([{"name": "flip"}, {"name": "pad_crop", "pad": 1}])
    assert aug(images(), gen(0)).shape == (64, 1, 28, 28)
    with pytest.raises(KeyError, match="did you mean 'pad_crop'"):
        A.build_augment([{"name": "padcrop"}])
    with pytest.raises(ValueError, match="no parameter 'padding' \\(did you mean 'pad'\\?\\)"):
        A.build_augment([{"name": "pad_crop", "padding": 2}])


def flipped_mask(x, y):
    """Which images of ``y`` are the mirror of ``x`` (images chosen so no image equals its mirror)."""
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert bool((flipped | (y == x).flatten(1).all(1)).all())
    return flipped


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    n = 4000
    x = images(n, h=4, w=4)
    index = torch.arange(n)  # image i sits at position i of the training set
    masks = [flipped_mask(x, A.alternating_flip(x, gen(7), index=index, epoch=e)) for e in range(4)]
    # epoch 0: about half of the images, not a run of one value
    share = float(masks[0].float().mean())
    assert abs(share - 0.5) < 5 * math.sqrt(0.25 / n)
    # every later epoch mirrors exactly the images the one before did not
    for e in range(1, 4):
        assert torch.equal(masks[e], ~masks[e - 1])
    # an image's flip depends on its index, not on its place in the batch
    order = torch.randperm(n, generator=gen(4))
    again = flipped_mask(x[order], A.alternating_flip(x[order], gen(7), index=index[order], epoch=0))
    assert torch.equal(again, masks[0][order])
    # another seed picks another half (about half of the images agree)
    other = flipped_mask(x, A.alternating_flip(x, gen(8), index=index, epoch=0))
    agree = float((other == masks[0]).float().mean())
    assert abs(agree - 0.5) < 5 * math.sqrt(0.25 / n)


def test_alternating_flip_without_positions_is_a_random_flip():
    x = images(2000, h=4, w=4)
    y = A.alternating_flip(x, gen(9))
    assert torch.equal(y, A.random_flip(x, gen(9)))


def test_pipeline_passes_positions_to_the_ops_that_take_them():
    n = 512
    x = images(n, h=4, w=4)
    index = torch.arange(n)
    aug = A.build_augment([{"name": "alt_flip"}, {"name": "pad_crop", "pad": 0}])
    first = flipped_mask(x, aug(x, gen(1), index=index, epoch=0))
    second = flipped_mask(x, aug(x, gen(1), index=index, epoch=1))
    assert torch.equal(first, ~second)
    with pytest.raises(ValueError, match="no parameter 'p'"):
        A.build_augment([{"name": "alt_flip", "p": 0.5}])
