"""Small, fast training data: a slice of real Fashion-MNIST when it is installed,
otherwise generated class-conditional images (the test says which in its id)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trickbag.data import load_dataset

HAVE_FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


@pytest.fixture(scope="session")
def small_data():
    """~600 train / 200 val / 300 test images."""
    if HAVE_FMNIST:
        data = load_dataset("fashion-mnist", val_size=200, seed=0, download=False)
    else:
        data = load_dataset("synthetic", val_size=200, seed=0)
    data.train_x, data.train_y = data.train_x[:600], data.train_y[:600]
    data.test_x, data.test_y = data.test_x[:300], data.test_y[:300]
    return data
