"""Test configuration: Hypothesis runs derandomized under CI (same examples every run),
and explores freely on a developer's machine."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# Small, fast training data, shared by the trainer, doctor and CLI tests: a slice of real
# Fashion-MNIST when it is installed, otherwise generated class-conditional images.
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FMNIST = (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
#: recipe overrides that make a CLI run use generated data when Fashion-MNIST is not installed
DATA_ARGS = [] if HAVE_FMNIST else ["--set", "data.name=synthetic", "--set", "data.val_size=200"]
_NO_FMNIST = "Fashion-MNIST not installed: apt-get install dataset-fashion-mnist"


def pytest_report_header(config):
    """Say in the header which data the training tests run on, so a substitution is seen."""
    if HAVE_FMNIST:
        return f"trickbag test data: Fashion-MNIST ({FMNIST_DIR})"
    return f"trickbag test data: GENERATED ({_NO_FMNIST})"


@pytest.fixture(scope="session")
def small_data():
    """~600 train / 200 val / 300 test images."""
    from trickbag.data import load_dataset

    if HAVE_FMNIST:
        data = load_dataset("fashion-mnist", val_size=200, seed=0, download=False)
    else:
        warnings.warn(f"generated images substitute for Fashion-MNIST in the training tests: it is not installed in "
                      f"{FMNIST_DIR} (apt-get install dataset-fashion-mnist); accuracy bounds are the generated data's",
                      stacklevel=1)
        data = load_dataset("synthetic", val_size=200, seed=0)
    data.train_x, data.train_y = data.train_x[:600], data.train_y[:600]
    data.test_x, data.test_y = data.test_x[:300], data.test_y[:300]
    return data
