"""Data: Fashion-MNIST and CIFAR (binary) in memory, local copies first, verified
downloads; preprocessing; batched tensor augmentations."""

from trickbag.data.augment import (
           AUGMENTS,
           Augment,
           build_augment,
           pad_crop,
           pca_basis,
           pca_lighting,
           random_flip,
)
from trickbag.data.datasets import DATASETS, ImageData, load_dataset
from trickbag.data.idx import DataFormatError, read_idx
from trickbag.data.sources import DataUnavailableError

__all__ = ["AUGMENTS", "Augment", "build_augment", "pad_crop", "pca_basis", "pca_lighting", "random_flip", "DATASETS",
           "ImageData", "load_dataset", "DataFormatError", "read_idx", "DataUnavailableError"]
