"""Where data files come from: local copies first, then a verified download.

Lookup order for a data set ``name`` (first directory holding every file wins):

1. ``$TRICKBAG_DATA/<name>`` and ``$TRICKBAG_DATA``,
2. ``~/.cache/trickbag/<name>``,
3. ``/usr/share/datasets/<name>`` (Debian's ``dataset-<name>`` packages, ``SYSTEM_DATASETS``).

Otherwise the files are downloaded into ``~/.cache/trickbag/<name>`` from the official
source and checked against their published MD5 before use (written to a temporary
name, renamed when verified). With no network the error says how to get the files.

An explicit ``data_dir`` (``--data-dir``, recipe key ``data.data_dir``) replaces that
search: ``data_dir`` and ``data_dir/<name>`` are the only places looked at, and if neither
holds every file it is an error, with no fallback and no download. A folder the user
named on purpose that lacks the data is a typo or a wrong mount; quietly training on a
copy found elsewhere (or fetched from the network) would hide that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from trickbag.data.idx import DataFormatError

__all__ = [
    "find_files", "cache_dir", "candidate_dirs", "download", "md5sum", "DataUnavailableError", "SYSTEM_DATASETS",
]

# Debian's dataset-<name> packages install here; a module constant so tests can point it elsewhere.
SYSTEM_DATASETS = Path("/usr/share/datasets")


class DataUnavailableError(FileNotFoundError):
    """No local copy and no download possible; the message says how to get the data."""


def cache_dir(name: str) -> Path:
    """``~/.cache/trickbag/<name>``: where downloads go (and are looked for first after $TRICKBAG_DATA)."""
    return Path(os.path.expanduser("~")) / ".cache" / "trickbag" / name


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that may hold data set ``name``, in lookup order.

    ``[data_dir, data_dir/<name>]`` (when ``data_dir`` is non-empty), then
    ``$TRICKBAG_DATA/<name>``, ``$TRICKBAG_DATA``, ``~/.cache/trickbag/<name>``,
    ``SYSTEM_DATASETS/<name>``. ``find_files`` uses only the first two when ``data_dir``
    is given (see the module docstring for why); the rest are the search without it.
    """
    dirs = _explicit_dirs(name, data_dir) if data_dir else []
    env = os.environ.get("TRICKBAG_DATA")
    if env:
        dirs += [Path(env) / name, Path(env)]
    dirs += [cache_dir(name), SYSTEM_DATASETS / name]
    return dirs


def _explicit_dirs(name: str, data_dir: str | os.PathLike) -> list[Path]:
    # Both layouts are common: --data-dir pointing at the files, or at a parent of <name>/.
    return [Path(data_dir), Path(data_dir) / name]


def md5sum(path: Path) -> str:
    """Hex MD5 of the file at ``path``, read in 1 MiB chunks (the published checksums are MD5)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its MD5.

    The bytes go to a temporary ``<dest>.*.part`` file in ``dest``'s folder and are renamed
    to ``dest`` only when their MD5 matches, so an interrupted or corrupt download never
    leaves a file that a later lookup would take for a good copy. The ``.part`` file is
    removed on every failure.

    Args:
        url: any URL ``urllib`` opens (``https://``, ``file://``).
        dest: final path; its folder is created.
        md5: expected hex MD5 of the whole file.
        timeout: seconds to wait on the connection.

    Raises:
        DataFormatError: the MD5 does not match (``dest`` is not created).
        urllib.error.URLError, OSError: the download itself failed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            shutil.copyfileobj(response, out)
        got = md5sum(Path(tmp))
        if got != md5:
            raise DataFormatError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); the download is corrupt")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _missing(folder: Path, files: Sequence[str]) -> list[str]:
    return [f for f in files if not (folder / f).is_file()]


def _explicit_dir_error(name: str, files: Sequence[str], data_dir: str | os.PathLike) -> DataUnavailableError:
    """The error for a ``data_dir`` that lacks the data: it names the folder, what is missing, and the way out."""
    root = Path(data_dir)
    # Report the candidate that came closest (ties: data_dir itself), so a folder with three of
    # four files names the one that is missing rather than all four.
    closest = min(_explicit_dirs(name, root), key=lambda d: len(_missing(d, files)))
    where = f"looked in {root} and {root / name}"
    if not root.is_dir():
        where += f"; {root} does not exist" if not root.exists() else f"; {root} is not a folder"
    elif closest != root:
        where += f"; {closest} holds some of them"
    return DataUnavailableError(
        f"data_dir {root} does not hold {name}'s files {', '.join(_missing(closest, files))} ({where}); "
        f"point --data-dir (recipe key data.data_dir) at the folder that holds them, or leave it out to use the "
        f"usual places ($TRICKBAG_DATA, {cache_dir(name)}, {SYSTEM_DATASETS / name}, then a download)"
    )


def find_files(
    name: str,
    files: Sequence[str],
    data_dir: str | os.PathLike | None = None,
    *,
    urls: Mapping[str, str] | None = None,
    md5: Mapping[str, str] | None = None,
    download_ok: bool = True,
    how_to: str = "",
) -> dict[str, Path]:
    """Paths of ``files`` for data set ``name``: a local copy if any, else downloaded.

    All files come from one folder (the first of ``candidate_dirs`` holding every one), so a
    data set is never stitched together from two copies; the caller can report
    ``paths[f].parent`` as where the data came from.

    Args:
        name: data set name, also the sub-folder looked for (``fashion-mnist``).
        files: file names relative to that folder (may contain ``/``).
        data_dir: explicit folder (``--data-dir``). When given (non-empty), only ``data_dir``
            and ``data_dir/<name>`` are looked at, and nothing is downloaded.
        urls, md5: per file, where to download it and its expected hex MD5; both needed to download.
        download_ok: ``False`` forbids the download (offline runs, tests).
        how_to: appended to the "not found" error: how to get the data by hand.

    Raises:
        DataUnavailableError: ``data_dir`` lacks some file (the message names ``data_dir``, the
            folder and the missing files); or no copy anywhere and no download possible.
        DataFormatError: a downloaded file fails its MD5 check (nothing is kept for it).

    Example::

        find_files("fashion-mnist", ["t10k-labels-idx1-ubyte.gz"], "/data", download_ok=False)
    """
    dirs = _explicit_dirs(name, data_dir) if data_dir else candidate_dirs(name)
    for d in dirs:
        if not _missing(d, files):
            return {f: d / f for f in files}
    if data_dir:
        raise _explicit_dir_error(name, files, data_dir)
    searched = "\n  ".join(str(d) for d in dirs)
    if not (download_ok and urls and md5):
        raise DataUnavailableError(f"{name}: files {list(files)} not found in\n  {searched}\n{how_to}")
    target = cache_dir(name)
    try:
        return {f: download(urls[f], target / f, md5[f]) for f in files}
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DataUnavailableError(
            f"{name}: not found locally and the download failed ({exc}).\nSearched:\n  {searched}\n{how_to}"
        ) from None
