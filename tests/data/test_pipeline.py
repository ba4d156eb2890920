"""InputPipeline's less travelled paths: the PCA lighting basis built from the data, no
standardization, and the errors a caller can meet (what coverage showed untested)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trickbag.data.augment import Augment, build_augment, pca_basis
from trickbag.data.datasets import ImageData
from trickbag.data.pipeline import InputPipeline


def rgb_data(n_train: int = 200, n_test: int = 50, size: int = 6, seed: int = 0) -> ImageData:
    """RGB uint8 images whose channels are correlated (a shared brightness plus noise), so the
    PCA basis has one dominant direction; the test split is drawn differently on purpose."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 200, (n_train, 1, size, size), generator=g)
    train = (base + torch.randint(0, 56, (n_train, 3, size, size), generator=g)).to(torch.uint8)
    test = torch.randint(0, 256, (n_test, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.zeros(n_train, dtype=torch.long)
    return ImageData("rgb", train, labels, train[:0], labels[:0], test, torch.zeros(n_test, dtype=torch.long), 10)


def numpy_basis(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The per-pixel channel covariance's eigen-decomposition, written out in numpy."""
    x = images.numpy().astype(np.float64) / 255
    pixels = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
    centred = pixels - pixels.mean(1, keepdims=True)
    cov = centred @ centred.T / (pixels.shape[1] - 1)
    return np.linalg.eigh(cov)


def test_the_pipeline_takes_the_pca_lighting_basis_from_the_training_split():
    data = rgb_data()
    pipe = InputPipeline.for_data(data, torch.device("cpu"), augment=[{"name": "pca_lighting", "alphastd": 0.1}])
    (name, _, params), = pipe.augment.ops
    eigval, eigvec = numpy_basis(data.train_x)
    assert name == "pca_lighting"
    assert np.allclose(params["eigval"].numpy(), eigval, rtol=1e-4, atol=1e-7)
    # eigenvectors are defined up to sign: compare |V^T V'|, which is the identity when they agree
    assert np.allclose(np.abs(eigvec.T @ params["eigvec"].numpy().astype(np.float64)), np.eye(3), atol=1e-4)
    test_eigval, _ = numpy_basis(data.test_x)
    assert not np.allclose(test_eigval, eigval, rtol=0.05)  # the test split would have given another basis

    # training adds one colour shift per image (in [0, 1] units, before standardizing); evaluation adds none
    x = data.train_x[:32]
    evaluated = pipe(x)
    trained = pipe(x, train=True, generator=torch.Generator().manual_seed(1))
    unit = x.float() / 255
    assert torch.allclose(evaluated, (unit - pipe.mean) / pipe.std, atol=1e-6)
    shift = ((trained - evaluated) * pipe.std).flatten(2)
    assert shift.abs().amax() > 1e-4
    assert torch.allclose(shift, shift[:, :, :1].expand_as(shift), atol=1e-5)


def test_pca_basis_subsamples_pixels_beyond_max_pixels_and_stays_close():
    data = rgb_data(n_train=400, size=8)
    full_val, _ = numpy_basis(data.train_x)
    pixels = 400 * 8 * 8
    exact_val, _ = pca_basis(data.train_x, max_pixels=pixels)  # no subsampling: the exact figures
    sub_val, sub_vec = pca_basis(data.train_x, max_pixels=pixels // 8)
    assert np.allclose(exact_val.numpy(), full_val, rtol=1e-4, atol=1e-7)
    assert not torch.equal(sub_val, exact_val)  # a subset was used
    assert np.allclose(sub_val.numpy(), full_val, rtol=0.15, atol=2e-4)  # ... and it estimates the same basis
    assert torch.allclose(sub_vec.T @ sub_vec, torch.eye(3), atol=1e-5)


def test_without_standardizing_the_pipeline_only_scales_to_unit():
    data = rgb_data()
    pipe = InputPipeline.for_data(data, torch.device("cpu"), standardize=False)
    x = data.test_x[:8]
    assert torch.equal(pipe(x), x.float() / 255)
    assert torch.equal(pipe.black, torch.zeros(1, 3, 1, 1))


def test_training_inputs_without_a_generator_are_refused_by_name():
    data = rgb_data()
    pipe = InputPipeline.for_data(data, torch.device("cpu"), augment=[{"name": "flip"}])
    with pytest.raises(ValueError, match="generator=None"):
        pipe(data.train_x[:4], train=True)


def test_an_augment_spec_without_a_name_is_refused_and_the_pipeline_reads_back():
    with pytest.raises(ValueError, match=r"augment\[1\] needs a 'name'"):
        build_augment([{"name": "flip"}, {"pad": 2}])
    aug = Augment([("flip", {"p": 0.3}), ("pca_lighting", {"eigval": torch.ones(3), "alphastd": 0.1})])
    assert repr(aug) == "Augment(flip(p=0.3), pca_lighting(alphastd=0.1))"  # tensors are left out
