"""Atomic checkpoints: written to a temporary file in the same folder, flushed and
fsynced, then renamed over the target (and the folder fsynced), so a crash at any
moment leaves either the old file or the new one, never a torn one. Loaded with
``weights_only=True``: a checkpoint cannot run code."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_atomic", "load_checkpoint", "epoch_checkpoints", "latest_checkpoint", "prune"]

_EPOCH = re.compile(r"epoch_(\d+)\.pt$")


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def epoch_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """``epoch_NNNN.pt`` files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _EPOCH.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads (an unreadable newer one is skipped, not fatal)."""
    for path in reversed(epoch_checkpoints(folder) + [Path(folder) / "interrupt.pt"]):
        if path.is_file():
            try:
                return path, load_checkpoint(path)
            except Exception:  # noqa: BLE001 - a damaged file: fall back to an older one
                continue
    return None


def prune(folder: str | os.PathLike, keep: int) -> None:
    for path in epoch_checkpoints(folder)[:-keep]:
        path.unlink(missing_ok=True)
