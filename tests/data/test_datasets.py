from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path

import pytest
import torch

from trickbag.data import DataFormatError, DataUnavailableError, load_dataset, read_idx
from trickbag.data.datasets import DATASETS, read_cifar_binary
from trickbag.data.sources import candidate_dirs, download, find_files

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FMNIST = (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file()


def write_idx(path: Path, array: torch.Tensor, magic: bytes | None = None, gz: bool = True, cut: int = 0) -> Path:
    dims = array.dim()
    header = (magic or bytes([0, 0, 8, dims])) + struct.pack(f">{dims}I", *array.shape)
    data = header + array.to(torch.uint8).numpy().tobytes()
    if cut:
        data = data[:-cut]
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_read_idx_round_trip(tmp_path):
    imgs = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    assert torch.equal(read_idx(write_idx(tmp_path / "a.gz", imgs), ndim=3, count=7, shape=(28, 28)), imgs)
    assert torch.equal(read_idx(write_idx(tmp_path / "b", imgs, gz=False), ndim=3), imgs)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: write_idx(p, torch.zeros(5, 28, 28), cut=100), "truncated"),
        (lambda p: write_idx(p, torch.zeros(5, 28, 28), magic=b"\x00\x00\x0d\x03"), "not a uint8 IDX file"),
        (lambda p: write_idx(p, torch.zeros(5)), "has 1 dimensions, expected 3"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5)), "truncated header"),
        (lambda p: p.write_bytes(b"\x1f\x8b" + b"garbage" * 10), "corrupt or truncated gzip"),
        (lambda p: write_idx(p, torch.zeros(5, 28, 28)), "has 5 items, expected 6"),
        (lambda p: write_idx(p, torch.zeros(6, 32, 28)), "items are 32x28, expected 28x28"),
    ],
)
def test_broken_files_name_the_file_and_the_problem(tmp_path, make, message):
    path = tmp_path / "broken-idx.gz"
    make(path)
    with pytest.raises(DataFormatError) as err:
        read_idx(path, ndim=3, count=6, shape=(28, 28))
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(DataFormatError, match="file not found"):
        read_idx(tmp_path / "nope.gz", ndim=1)


def test_lookup_order_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TRICKBAG_DATA", str(tmp_path / "env"))
    dirs = candidate_dirs("fashion-mnist", tmp_path / "explicit")
    assert dirs[:4] == [tmp_path / "explicit", tmp_path / "explicit" / "fashion-mnist", tmp_path / "env" / "fashion-mnist", tmp_path / "env"]
    assert dirs[-1] == Path("/usr/share/datasets/fashion-mnist")
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "f.bin").write_bytes(b"x")
    assert find_files("fashion-mnist", ["f.bin"], download_ok=False)["f.bin"] == tmp_path / "env" / "f.bin"


def test_download_verifies_the_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    src = tmp_path / "served.bin"
    src.write_bytes(b"payload" * 100)
    good = hashlib.md5(src.read_bytes()).hexdigest()
    out = download(src.as_uri(), tmp_path / "dl" / "x.bin", good)
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(DataFormatError, match="checksum mismatch"):
        download(src.as_uri(), tmp_path / "dl" / "y.bin", "0" * 32)
    assert not (tmp_path / "dl" / "y.bin").exists() and not list((tmp_path / "dl").glob("*.part"))


def test_no_network_says_how_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataUnavailableError) as err:
        find_files("nothing-here", ["a.gz"], urls={"a.gz": "http://127.0.0.1:9/a.gz"}, md5={"a.gz": "0" * 32},
                   how_to="Get it by magic.")
    assert "download failed" in str(err.value) and "Get it by magic." in str(err.value)


def make_cifar_archive(folder: Path, n_per_batch: int = 4) -> torch.Tensor:
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            recs = b""
            for j in range(n_per_batch):
                label = (len(labels) + j) % 10
                recs += bytes([label]) + bytes([label * 20]) * 3072
            labels += [(len(labels) + j) % 10 for j in range(n_per_batch)]
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(recs)
            tar.addfile(info, io.BytesIO(recs))
    (folder / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    return torch.tensor(labels)


def test_cifar10_binary_parser_on_a_written_archive(tmp_path):
    make_cifar_archive(tmp_path / "cifar10")
    tx, ty, sx, sy, k, _ = DATASETS.get("cifar10")(data_dir=tmp_path, download=False)
    assert tx.shape == (20, 3, 32, 32) and sx.shape == (4, 3, 32, 32) and k == 10
    assert torch.all(tx[:, 0, 0, 0] == ty * 20)  # pixels follow their own label byte


def test_cifar_record_errors():
    with pytest.raises(DataFormatError, match="not a whole number of 3073-byte CIFAR records"):
        read_cifar_binary(b"\x00" * 3000, 1, "x.bin")
    x, y = read_cifar_binary(bytes([3, 7]) + bytes(3072), 2)  # CIFAR-100: coarse, fine
    assert y.tolist() == [7]


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_with_a_seeded_validation_split():
    a = load_dataset("fashion-mnist", val_size=5000, seed=0, download=False)
    b = load_dataset("fashion-mnist", val_size=5000, seed=0, download=False)
    c = load_dataset("fashion-mnist", val_size=5000, seed=1, download=False)
    assert a.train_x.shape == (55000, 1, 28, 28) and a.val_x.shape == (5000, 1, 28, 28) and a.test_x.shape == (10000, 1, 28, 28)
    assert a.train_x.dtype == torch.uint8 and set(a.test_y.unique().tolist()) == set(range(10))
    assert torch.equal(a.val_y, b.val_y) and not torch.equal(a.val_y, c.val_y)
    counts = torch.bincount(a.test_y)
    assert torch.all(counts == 1000)  # the official test set is balanced
    mean, std = a.channel_stats()
    assert 0.27 < float(mean) < 0.30 and 0.34 < float(std) < 0.37


def test_val_size_validation():
    with pytest.raises(ValueError, match="val_size must be < the"):
        load_dataset("synthetic", val_size=10**6)
