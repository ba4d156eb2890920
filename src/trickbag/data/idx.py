"""Reader for the IDX format of (Fashion-)MNIST, gzip-compressed or raw.

Layout (LeCun's MNIST page): a 4-byte magic ``0x00 0x00 <dtype> <ndim>`` (dtype 0x08 is
uint8), then ``ndim`` big-endian uint32 sizes, then the data. Every way a file can be
wrong (not gzip, truncated, wrong magic, wrong size, wrong count) raises
``DataFormatError`` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["DataFormatError", "read_idx"]


class DataFormatError(ValueError):
    """A data file is missing, truncated, corrupt or of the wrong format."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataFormatError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return raw


def read_idx(path: str | os.PathLike, *, ndim: int, count: int | None = None, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Read a uint8 IDX file into a tensor, checking what the caller expects.

    Args:
        path: ``.gz`` or raw IDX file.
        ndim: expected number of dimensions (3 for images, 1 for labels).
        count: expected number of items (first dimension), if known.
        shape: expected item shape (e.g. ``(28, 28)``), if known.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(f"{path}: {len(data)} bytes is too short for an IDX header")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DataFormatError(f"{path}: not a uint8 IDX file (magic {data[:4].hex()}, expected 0000080{ndim})")
    if dims != ndim:
        raise DataFormatError(f"{path}: has {dims} dimensions, expected {ndim} (magic {data[:4].hex()})")
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataFormatError(f"{path}: truncated header")
    sizes = struct.unpack(f">{dims}I", data[4:header])
    expected = int(np.prod(sizes))
    if len(data) - header != expected:
        raise DataFormatError(
            f"{path}: header says {'x'.join(map(str, sizes))} = {expected} bytes of data, file has {len(data) - header}"
            + (" (truncated)" if len(data) - header < expected else "")
        )
    if count is not None and sizes[0] != count:
        raise DataFormatError(f"{path}: has {sizes[0]} items, expected {count}")
    if shape is not None and tuple(sizes[1:]) != tuple(shape):
        raise DataFormatError(f"{path}: items are {'x'.join(map(str, sizes[1:]))}, expected {'x'.join(map(str, shape))}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(sizes)
    return torch.from_numpy(array.copy())
