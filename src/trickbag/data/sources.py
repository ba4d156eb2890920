"""Where data files come from: local copies first, then a verified download.

Lookup order for a data set ``name`` (first directory holding every file wins):
1. ``data_dir`` passed by the caller (``--data-dir``),
2. ``$TRICKBAG_DATA/<name>`` and ``$TRICKBAG_DATA``,
3. ``~/.cache/trickbag/<name>``,
4. ``/usr/share/datasets/<name>`` (Debian's ``dataset-<name>`` packages).

Otherwise the files are downloaded into ``~/.cache/trickbag/<name>`` from the official
source and checked against their published MD5 before use (written to a temporary
name, renamed when verified). With no network the error says how to get the files.
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

__all__ = ["find_files", "cache_dir", "download", "md5sum", "DataUnavailableError"]


class DataUnavailableError(FileNotFoundError):
    """No local copy and no download possible; the message says how to get the data."""


def cache_dir(name: str) -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "trickbag" / name


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs: list[Path] = []
    if data_dir:
        dirs += [Path(data_dir), Path(data_dir) / name]
    env = os.environ.get("TRICKBAG_DATA")
    if env:
        dirs += [Path(env) / name, Path(env)]
    dirs += [cache_dir(name), Path("/usr/share/datasets") / name]
    return dirs


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its MD5."""
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
    """Paths of ``files`` for data set ``name``: a local copy if any, else downloaded."""
    for d in candidate_dirs(name, data_dir):
        paths = {f: d / f for f in files}
        if all(p.is_file() for p in paths.values()):
            return paths
    searched = "\n  ".join(str(d) for d in candidate_dirs(name, data_dir))
    if not (download_ok and urls and md5):
        raise DataUnavailableError(f"{name}: files {list(files)} not found in\n  {searched}\n{how_to}")
    target = cache_dir(name)
    try:
        return {f: download(urls[f], target / f, md5[f]) for f in files}
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DataUnavailableError(
            f"{name}: not found locally and the download failed ({exc}).\nSearched:\n  {searched}\n{how_to}"
        ) from None
