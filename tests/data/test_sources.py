"""Where data files come from (trickbag.data.sources) and how ``ImageData.source`` reports it.

Downloads run over ``file://`` URLs (urllib opens them), so the whole download path runs
offline. Every test that may reach the usual places isolates them: ``HOME`` (hence
``~/.cache/trickbag``), ``$TRICKBAG_DATA`` and ``sources.SYSTEM_DATASETS`` point into
``tmp_path``. Checksums are computed here with ``hashlib``, labels are decoded here with
``gzip`` + ``numpy``: independent of the code under test.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import struct
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from trickbag.data import DataFormatError, DataUnavailableError, ImageData, load_dataset
from trickbag.data import sources
from trickbag.data.datasets import DATASETS
from trickbag.data.sources import download, find_files

FMNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz"]
REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")  # the real path, read before any test patches it
HAVE_FMNIST = all((REAL_FMNIST / f).is_file() for f in FMNIST_FILES)


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def places(tmp_path, monkeypatch) -> dict[str, Path]:
    """Point every usual place into tmp_path (none exists yet) so the real ones are never read."""
    home, env, system = tmp_path / "home", tmp_path / "env", tmp_path / "system"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TRICKBAG_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DATASETS", system)
    return {"home": home, "env": env, "system": system, "cache": home / ".cache" / "trickbag"}


@pytest.fixture
def served(tmp_path) -> dict[str, bytes]:
    """Two small files in tmp_path/served, the 'server' behind the file:// URLs."""
    folder = tmp_path / "served"
    folder.mkdir()
    content = {"a.bin": b"alpha" * 300, "b.bin": bytes(range(256)) * 7}
    for name, data in content.items():
        (folder / name).write_bytes(data)
    return content


def urls_for(tmp_path: Path, names) -> dict[str, str]:
    return {f: (tmp_path / "served" / f).as_uri() for f in names}


def no_network(monkeypatch) -> None:
    """Make any download attempt fail the test loudly (find_files only catches URLError/OSError)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected download of {args[0] if args else kwargs}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# --- download ------------------------------------------------------------------------


def test_download_over_a_file_url_writes_the_same_bytes(tmp_path, served):
    dest = tmp_path / "out" / "nested" / "a.bin"  # folders are created
    got = download((tmp_path / "served" / "a.bin").as_uri(), dest, md5_of(served["a.bin"]))
    assert got == dest and dest.read_bytes() == served["a.bin"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.bin"]  # no .part left beside it


def test_download_with_a_wrong_md5_creates_nothing(tmp_path, served):
    dest = tmp_path / "out" / "a.bin"
    wrong = md5_of(b"something else")
    with pytest.raises(DataFormatError) as err:
        download((tmp_path / "served" / "a.bin").as_uri(), dest, wrong)
    message = str(err.value)
    assert "checksum mismatch" in message and wrong in message and md5_of(served["a.bin"]) in message
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # in particular no *.part


# --- find_files: download into the cache, then reuse it --------------------------------


def test_find_files_downloads_into_the_cache_and_reuses_it(tmp_path, places, served):
    names = list(served)
    md5 = {f: md5_of(served[f]) for f in names}
    first = find_files("toy", names, urls=urls_for(tmp_path, names), md5=md5)
    assert first == {f: places["cache"] / "toy" / f for f in names}
    assert {f: p.read_bytes() for f, p in first.items()} == served

    for f in names:  # the 'server' goes away: a second download would fail
        (tmp_path / "served" / f).unlink()
    second = find_files("toy", names, urls=urls_for(tmp_path, names), md5=md5)
    assert second == first and {f: p.read_bytes() for f, p in second.items()} == served


def test_find_files_with_a_wrong_md5_keeps_nothing_in_the_cache(tmp_path, places, served):
    with pytest.raises(DataFormatError, match="checksum mismatch"):
        find_files("toy", ["a.bin"], urls=urls_for(tmp_path, ["a.bin"]), md5={"a.bin": "0" * 32})
    cache = places["cache"] / "toy"
    assert not cache.exists() or [p for p in cache.rglob("*") if p.is_file()] == []
    with pytest.raises(DataUnavailableError, match="not found in"):  # nothing a later lookup could pick up
        find_files("toy", ["a.bin"], download_ok=False)


# --- an explicit data_dir is the whole search ----------------------------------------


@pytest.mark.parametrize("state", ["missing", "empty", "partial"])
def test_explicit_data_dir_without_the_files_is_an_error_with_no_fallback(tmp_path, monkeypatch, places, served, state):
    names = list(served)
    # The usual places all hold good copies, and the download would work: none may be used.
    for folder in (places["env"], places["cache"] / "toy", places["system"] / "toy"):
        folder.mkdir(parents=True)
        for f in names:
            (folder / f).write_bytes(served[f])
    monkeypatch.setenv("TRICKBAG_DATA", str(places["env"]))
    urls, md5 = urls_for(tmp_path, names), {f: md5_of(served[f]) for f in names}
    assert find_files("toy", names, urls=urls, md5=md5)["a.bin"] == places["env"] / "a.bin"  # control: the fallback works

    data_dir = tmp_path / "explicit"
    if state != "missing":
        data_dir.mkdir()
    if state == "partial":  # the nested layout, one file short
        (data_dir / "toy").mkdir()
        (data_dir / "toy" / "a.bin").write_bytes(served["a.bin"])
    no_network(monkeypatch)
    with pytest.raises(DataUnavailableError) as err:
        find_files("toy", names, data_dir, urls=urls, md5=md5)
    message = str(err.value)
    assert message.startswith(f"data_dir {data_dir} does not hold toy's files ")
    assert "--data-dir" in message and "b.bin" in message
    assert ("a.bin" in message) == (state != "partial")  # only what is missing is named
    if state == "missing":
        assert f"{data_dir} does not exist" in message
    assert str(places["env"] / "a.bin") not in message


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_explicit_data_dir_holding_the_files_is_used(tmp_path, monkeypatch, places, served, nested):
    names = list(served)
    places["env"].mkdir()
    for f in names:  # a different copy in $TRICKBAG_DATA must lose to the explicit folder
        (places["env"] / f).write_bytes(b"the other copy")
    monkeypatch.setenv("TRICKBAG_DATA", str(places["env"]))
    data_dir = tmp_path / "explicit"
    holder = data_dir / "toy" if nested else data_dir
    holder.mkdir(parents=True)
    for f in names:
        (holder / f).write_bytes(served[f])
    no_network(monkeypatch)
    paths = find_files("toy", names, data_dir, urls=urls_for(tmp_path, names), md5={f: "0" * 32 for f in names})
    assert paths == {f: holder / f for f in names}
    assert {f: p.read_bytes() for f, p in paths.items()} == served


# --- load_dataset reports its source -------------------------------------------------


def _write_idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), compresslevel=1))


def _fashion_mnist_folder(folder: Path) -> str:
    """Fill ``folder`` with Fashion-MNIST's four files; returns how.

    Symlinks to the real files when /usr/share/datasets/fashion-mnist holds them. Otherwise it
    writes generated IDX files of the right counts and shapes (60000/10000 x 28x28, labels
    i % 10) instead of skipping: the loader checks the counts, and all-zero images gzip to a
    few tens of KiB, so the test still runs everywhere.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if HAVE_FMNIST:
        for f in FMNIST_FILES:
            (folder / f).symlink_to(REAL_FMNIST / f)
        return "real files (symlinked)"
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        _write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        _write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return "generated files (Fashion-MNIST is not installed)"


def test_load_fashion_mnist_from_data_dir_reports_that_folder(tmp_path, monkeypatch, places):
    """Real Fashion-MNIST when installed, else generated IDX files of the same shape (see
    ``_fashion_mnist_folder``); either way the data must come from ``data_dir`` and say so."""
    folder = tmp_path / "my-fmnist"
    how = _fashion_mnist_folder(folder)
    print(f"fashion-mnist test data: {how}")
    no_network(monkeypatch)
    data = load_dataset("fashion-mnist", data_dir=folder, val_size=1000, seed=0)
    assert data.source == str(folder) and data.summary()["source"] == str(folder)
    # The test labels are the file's, decoded here without read_idx: 8-byte header, then one byte each.
    raw = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert data.test_y.tolist() == np.frombuffer(raw, np.uint8, offset=8).tolist()
    assert len(data.train_y) + len(data.val_y) == 60000


def test_load_fashion_mnist_with_an_empty_data_dir_does_not_fall_back(tmp_path, monkeypatch):
    """The reported defect: the real /usr/share/datasets copy (when installed) is not used instead."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRICKBAG_DATA", raising=False)
    if not HAVE_FMNIST:  # the fallback must still have something to find, or the test proves nothing
        _fashion_mnist_folder(tmp_path / "system" / "fashion-mnist")
        monkeypatch.setattr(sources, "SYSTEM_DATASETS", tmp_path / "system")
    assert find_files("fashion-mnist", FMNIST_FILES, download_ok=False)  # control: found without data_dir
    empty = tmp_path / "empty"
    empty.mkdir()
    no_network(monkeypatch)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("fashion-mnist", data_dir=empty)
    message = str(err.value)
    assert f"data_dir {empty} does not hold fashion-mnist's files" in message and "--data-dir" in message
    assert all(f in message for f in FMNIST_FILES)


def _cifar10_archive(folder: Path, per_batch: int = 3) -> None:
    folder.mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            records = b"".join(bytes([j]) + bytes(3072) for j in range(per_batch))
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(records)
            tar.addfile(info, io.BytesIO(records))
    (folder / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())


def test_cifar_reports_its_folder_and_an_explicit_data_dir_without_it_is_an_error(tmp_path, monkeypatch, places):
    _cifar10_archive(places["cache"] / "cifar10")  # a copy in the usual place must not rescue a bad data_dir
    _cifar10_archive(tmp_path / "mine" / "cifar10")
    no_network(monkeypatch)
    data = load_dataset("cifar10", data_dir=tmp_path / "mine", val_size=3)
    assert data.source == str(tmp_path / "mine" / "cifar10") and len(data.train_y) == 12
    assert load_dataset("cifar10", val_size=3).source == str(places["cache"] / "cifar10")
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "elsewhere", val_size=3)
    assert f"data_dir {tmp_path / 'elsewhere'} does not hold cifar10's files cifar-10-binary.tar.gz" in str(err.value)


def test_synthetic_source_and_replace_keep_the_field():
    data = load_dataset("synthetic", val_size=100)
    assert data.source == "generated" and data.summary()["source"] == "generated"
    smaller = dataclasses.replace(data, train_x=data.train_x[:10], train_y=data.train_y[:10])
    assert smaller.source == "generated" and smaller.summary()["train"] == 10
    assert dataclasses.replace(data, source="/elsewhere").summary()["source"] == "/elsewhere"


def test_a_loader_returning_a_plain_tuple_still_loads_with_an_unknown_source(monkeypatch):
    x, y = torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.arange(8) % 2
    monkeypatch.setitem(DATASETS._items, "plain-tuple", lambda data_dir=None, download=True: (x, y, x, y, 2, ()))
    data = load_dataset("plain-tuple", val_size=2)
    assert isinstance(data, ImageData) and data.source == "" and data.summary()["source"] == ""
    assert len(data.train_y) == 6
