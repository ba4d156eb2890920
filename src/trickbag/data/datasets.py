"""Image classification data sets held in memory as uint8 tensors.

``load_dataset(name, data_dir=None, val_size=5000, seed=0)`` returns an ``ImageData``
with train / validation / test splits. The validation split is carved from the
training set with a seeded permutation (seed 001: decide lr drops and early stopping
on validation, report test once at the end); ``val_size=0`` trains on all of it.

* ``fashion-mnist``: IDX files (Zalando), 60k/10k, 1x28x28, 10 classes.
* ``cifar10`` / ``cifar100``: the official *binary* version (never the pickled Python
  version: unpickling a downloaded file can run code), 50k/10k, 3x32x32.
* ``synthetic``: small generated class-conditional images (offline tests, demos).

Each loader reports where its files were read from (``ImageData.source``, also in
``summary()`` and so in a run's ``summary.json``): with several places a data set may come
from (``--data-dir``, ``$TRICKBAG_DATA``, the cache, ``/usr/share/datasets``), a result
should say which copy it was trained on.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from trickbag._checks import check_nonnegative
from trickbag.data.idx import DataFormatError, read_idx
from trickbag.data.sources import find_files
from trickbag.registry import Registry

__all__ = ["ImageData", "Loaded", "DATASETS", "load_dataset", "FASHION_MNIST_CLASSES", "read_cifar_binary", "to_unit"]

# A loader returns ``Loaded`` (or, for loaders registered elsewhere, a plain six-tuple).
DATASETS: Registry[Callable[..., Loaded | tuple]] = Registry("dataset")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def to_unit(images: torch.Tensor, log1p: bool = False) -> torch.Tensor:
    """uint8 images -> floats in [0, 1], then ``log(1 + x)`` if ``log1p`` (seed 001)."""
    x = images.float().div_(255)
    return x.log1p_() if log1p else x


@dataclass(frozen=True)
class Loaded:
    """What a ``DATASETS`` loader returns: both splits, the classes, and where they came from.

    Iterating yields the six values loaders have always returned,
    ``(train_x, train_y, test_x, test_y, num_classes, classes)``, so code that unpacks a
    loader's result keeps working; ``source`` is a field rather than a seventh value for
    that reason.
    """

    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor  # (M, C, H, W) uint8
    test_y: torch.Tensor  # (M,) int64
    num_classes: int
    classes: tuple[str, ...] = ()
    source: str = ""  # folder the files were read from, or "generated"

    def __iter__(self) -> Iterator:
        return iter((self.train_x, self.train_y, self.test_x, self.test_y, self.num_classes, self.classes))


@dataclass
class ImageData:
    """Splits as uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``.

    ``source`` is the folder the files were read from (``"generated"`` for ``synthetic``,
    ``""`` when the loader did not say), so a result can name the copy it was trained on.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    classes: tuple[str, ...] = field(default=())
    source: str = ""  # folder the files were read from, "generated", or "" (unknown)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def channel_stats(self, log1p: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images as ``to_unit`` scales them
        (seed 001: standardize with training statistics)."""
        x = to_unit(self.train_x, log1p)
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))

    def to(self, device: torch.device | str) -> ImageData:
        """The same splits with every tensor on ``device`` (a new object; on the training
        device, batches are cut and augmented without a host-to-device copy per step)."""
        moved = {f: getattr(self, f).to(device) for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return replace(self, **moved)

    def summary(self) -> dict:
        """Sizes, shape, class count and ``source``: what a run records about its data."""
        return {"dataset": self.name, "train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y),
                "shape": list(self.shape), "classes": self.num_classes, "source": self.source}


# --- Fashion-MNIST -------------------------------------------------------------------

_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FMNIST_MD5 = {  # published by Zalando Research (github.com/zalandoresearch/fashion-mnist)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_FMNIST_HOW_TO = (
    "Get Fashion-MNIST by one of:\n"
    "  sudo apt-get install dataset-fashion-mnist      (Debian/Ubuntu: /usr/share/datasets/fashion-mnist)\n"
    f"  download the four files of {_FMNIST_URL} into ~/.cache/trickbag/fashion-mnist\n"
    "  or pass --data-dir / set TRICKBAG_DATA to a folder holding them."
)


def _folder_of(paths: dict[str, Path]) -> str:
    """The folder ``find_files`` took ``paths`` from: it returns one folder's files, never a mix."""
    name, path = next(iter(paths.items()))
    return str(path.parents[len(Path(name).parts) - 1])  # strip the name, which may hold "/"


@DATASETS.register("fashion-mnist", "fashion_mnist")
def _fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True) -> Loaded:
    paths = find_files(
        "fashion-mnist", list(_FMNIST_MD5), data_dir,
        urls={f: _FMNIST_URL + f for f in _FMNIST_MD5}, md5=_FMNIST_MD5, download_ok=download, how_to=_FMNIST_HOW_TO,
    )
    train_x = read_idx(paths["train-images-idx3-ubyte.gz"], ndim=3, count=60000, shape=(28, 28))
    train_y = read_idx(paths["train-labels-idx1-ubyte.gz"], ndim=1, count=60000)
    test_x = read_idx(paths["t10k-images-idx3-ubyte.gz"], ndim=3, count=10000, shape=(28, 28))
    test_y = read_idx(paths["t10k-labels-idx1-ubyte.gz"], ndim=1, count=10000)
    for path, y in ((paths["train-labels-idx1-ubyte.gz"], train_y), (paths["t10k-labels-idx1-ubyte.gz"], test_y)):
        if int(y.max()) > 9:
            raise DataFormatError(f"{path}: label {int(y.max())} is out of range 0..9")
    return Loaded(train_x.unsqueeze(1), train_y.long(), test_x.unsqueeze(1), test_y.long(), 10, FASHION_MNIST_CLASSES,
                  source=_folder_of(paths))


# --- CIFAR (binary version) ----------------------------------------------------------

_CIFAR = {
    "cifar10": {
        "archive": "cifar-10-binary.tar.gz",
        "md5": "c32a1d4ab5d03f1284b67883e8d87530",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "train": [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
        "test": ["cifar-10-batches-bin/test_batch.bin"],
        "label_bytes": 1,
        "classes": 10,
    },
    "cifar100": {
        "archive": "cifar-100-binary.tar.gz",
        "md5": "03b5dce01913d631647c71ecec9e9cb8",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "train": ["cifar-100-binary/train.bin"],
        "test": ["cifar-100-binary/test.bin"],
        "label_bytes": 2,  # coarse label, fine label: we use the fine one
        "classes": 100,
    },
}


def read_cifar_binary(data: bytes, label_bytes: int, source: str = "<bytes>") -> tuple[torch.Tensor, torch.Tensor]:
    """Parse CIFAR binary records: ``label_bytes`` label byte(s) then 3x32x32 uint8 pixels."""
    record = label_bytes + 3072
    if len(data) == 0 or len(data) % record:
        raise DataFormatError(f"{source}: {len(data)} bytes is not a whole number of {record}-byte CIFAR records")
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, record)
    labels = raw[:, label_bytes - 1].long()
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32).clone(), labels


def _cifar(name: str, data_dir: str | os.PathLike | None, download: bool) -> Loaded:
    spec = _CIFAR[name]
    how_to = f"Get {name} by downloading {spec['url']} (binary version) into ~/.cache/trickbag/{name}, or pass --data-dir."
    paths = find_files(name, [spec["archive"]], data_dir, urls={spec["archive"]: spec["url"]},
                       md5={spec["archive"]: spec["md5"]}, download_ok=download, how_to=how_to)
    archive = paths[spec["archive"]]
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}

            def read(member: str) -> bytes:
                if member not in members:
                    raise DataFormatError(f"{archive}: missing member {member}")
                return tar.extractfile(members[member]).read()  # type: ignore[union-attr]

            parts = {split: [read_cifar_binary(read(m), spec["label_bytes"], f"{archive}:{m}") for m in spec[split]]
                     for split in ("train", "test")}
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataFormatError(f"{archive}: not a readable .tar.gz ({exc})") from None
    cat = {s: (torch.cat([p[0] for p in v]), torch.cat([p[1] for p in v])) for s, v in parts.items()}
    if int(cat["train"][1].max()) >= spec["classes"]:
        raise DataFormatError(f"{archive}: label out of range for {name}")
    return Loaded(*cat["train"], *cat["test"], spec["classes"], (), source=_folder_of(paths))


DATASETS.register("cifar10")(lambda data_dir=None, download=True: _cifar("cifar10", data_dir, download))
DATASETS.register("cifar100")(lambda data_dir=None, download=True: _cifar("cifar100", data_dir, download))


@DATASETS.register("synthetic")
def _synthetic(data_dir=None, download=True, n_train: int = 2000, n_test: int = 500, size: int = 28, channels: int = 1, classes: int = 10) -> Loaded:
    """Class-conditional images: each class is a fixed random template plus noise (learnable, offline)."""
    g = torch.Generator().manual_seed(1234)
    templates = torch.rand(classes, channels, size, size, generator=g)

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        x = templates[y] * 0.6 + torch.rand(n, channels, size, size, generator=g) * 0.4
        return (x * 255).to(torch.uint8), y

    return Loaded(*make(n_train), *make(n_test), classes, tuple(str(i) for i in range(classes)), source="generated")


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, val_size: int = 5000, seed: int = 0, download: bool = True
) -> ImageData:
    """Load ``name`` and carve a seeded validation split of ``val_size`` from train.

    ``data_dir`` (``--data-dir``) is the only place looked at when given: a folder that lacks
    the files raises ``DataUnavailableError`` naming it (no fallback, no download).
    """
    loaded = DATASETS.get(name)(data_dir=data_dir, download=download)
    # Loaders registered outside this module may still return a plain six-tuple: source unknown.
    source = loaded.source if isinstance(loaded, Loaded) else ""
    train_x, train_y, test_x, test_y, num_classes, classes = loaded
    val_size = int(check_nonnegative("val_size", val_size))
    if val_size >= len(train_y):
        raise ValueError(f"val_size must be < the {len(train_y)} training examples, got {val_size}")
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    return ImageData(name, train_x[train], train_y[train], train_x[val], train_y[val], test_x, test_y, num_classes, classes,
                     source=source)


